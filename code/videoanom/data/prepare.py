"""data_prep: read one location from a datastore and write the model-ready HDF5 file.

Broken clips are reported by name and skipped, so one bad upload never blocks a
location; a location left with no usable train clip fails with a clear message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from videoanom.data.dataset import UNKNOWN_LABEL, PreparedWriter
from videoanom.data.datastore import Datastore
from videoanom.data.frames import ClipReadError, read_frame_files, read_video, to_model_input
from videoanom.data.labels import ClipLabels, LabelFileError, parse_labels_csv, parse_ucsd_m
from videoanom.data.layout import Clip, LocationLayout, discover_layout

logger = logging.getLogger(__name__)

DATA_FILE = "data.h5"
MANIFEST_FILE = "manifest.json"


class DataPrepError(ValueError):
    """A location that cannot be prepared at all."""


@dataclass(frozen=True)
class PrepConfig:
    """How frames become model input, and how validation is split off."""

    height: int = 64
    width: int = 80
    channels: int = 1
    val_fraction: float = 0.2
    seed: int = 0
    min_clip_frames: int = 2


@dataclass
class Manifest:
    """Human-readable summary of a prepared location, written beside the HDF5 file."""

    location: str
    datastore: str
    fingerprint: str
    config: dict
    clips: dict[str, list[dict]] = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)
    ignored: list[dict] = field(default_factory=list)
    label_source: str | None = None
    has_labels: bool = False

    def frame_count(self, split: str) -> int:
        return sum(c["frames"] for c in self.clips.get(split, []))

    def clip_kind(self, clip: str) -> str:
        """The anomaly kind(s) of a test clip from labels.csv's optional ``kind`` column."""
        for entry in self.clips.get("test", []):
            if entry["clip"] == clip:
                return "+".join(entry.get("kinds", []))
        return ""


def prepare_location(
    datastore: Datastore, location: str, out_dir: Path, config: PrepConfig = PrepConfig()
) -> Manifest:
    """Prepare ``location`` into ``out_dir/data.h5`` and ``out_dir/manifest.json``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = datastore.list_files(location)
    layout = discover_layout(files)
    if not layout.train:
        raise DataPrepError(
            f"location {location!r}: no train clips found (expected train/<clip>/ frame "
            "folders or train/<clip>.avi|.mp4|.mov|.mkv video files)"
        )
    labels, label_source = _read_labels(datastore, location, layout)
    fingerprint = data_fingerprint(datastore, location, layout)
    manifest = Manifest(
        location=location,
        datastore=datastore.uri,
        fingerprint=fingerprint,
        config=asdict(config),
        ignored=[{"path": p, "reason": r} for p, r in layout.ignored],
        label_source=label_source,
        has_labels=label_source is not None,
    )
    frame_shape = (config.height, config.width, config.channels)
    attrs = {"location": location, "fingerprint": fingerprint, "has_labels": labels is not None}
    writer = PreparedWriter(out_dir / DATA_FILE, frame_shape, attrs)
    try:
        train_clips = _read_clips(datastore, location, layout.train, config, manifest)
        if not train_clips:
            reasons = "; ".join(f"{s['clip']}: {s['reason']}" for s in manifest.skipped)
            raise DataPrepError(f"location {location!r}: no usable train clip ({reasons})")
        train_part, val_part = split_train_val(train_clips, config.val_fraction, config.seed)
        for split, part in (("train", train_part), ("val", val_part)):
            for name, frames, numbers in part:
                _add(
                    writer, manifest, split, name, frames, numbers, np.zeros(len(numbers), np.int8)
                )
        for name, frames, numbers in _read_clips(
            datastore, location, layout.test, config, manifest
        ):
            clip_labels = _labels_for(name, len(numbers), labels)
            _add(writer, manifest, "test", name, frames, numbers, clip_labels)
            entry = (labels or {}).get(name)
            if entry is not None and entry.kinds:
                manifest.clips["test"][-1]["kinds"] = sorted(set(entry.kinds))
    finally:
        writer.close()
    (out_dir / MANIFEST_FILE).write_text(json.dumps(asdict(manifest), indent=2))
    logger.info(
        "prepared %s: %d train, %d val, %d test frames; %d clip(s) skipped; fingerprint %s",
        location,
        manifest.frame_count("train"),
        manifest.frame_count("val"),
        manifest.frame_count("test"),
        len(manifest.skipped),
        fingerprint[:12],
    )
    return manifest


def load_manifest(out_dir: Path) -> Manifest:
    """Read the manifest that :func:`prepare_location` wrote."""
    return Manifest(**json.loads((Path(out_dir) / MANIFEST_FILE).read_text()))


def data_fingerprint(datastore: Datastore, location: str, layout: LocationLayout) -> str:
    """sha256 over the path and content hash of every file data_prep uses."""
    digest = hashlib.sha256()
    for path in layout.files_used:
        digest.update(f"{path}\t{datastore.file_digest(location, path)}\n".encode())
    return digest.hexdigest()


ClipFrames = tuple[str, np.ndarray, np.ndarray]


def split_train_val(
    clips: list[ClipFrames], val_fraction: float, seed: int
) -> tuple[list[ClipFrames], list[ClipFrames]]:
    """Hold out whole clips for validation; a single clip is split in time instead.

    With one train clip there is no other way to validate, so its last part becomes the
    validation clip ``<name>@val``; frames are never on both sides.
    """
    if val_fraction <= 0:
        return clips, []
    if len(clips) == 1:
        name, frames, numbers = clips[0]
        cut = len(numbers) - max(1, round(len(numbers) * val_fraction))
        logger.warning(
            "only one train clip (%s): validating on its last %d frames", name, len(numbers) - cut
        )
        return [(name, frames[:cut], numbers[:cut])], [(f"{name}@val", frames[cut:], numbers[cut:])]
    n_val = min(len(clips) - 1, max(1, round(len(clips) * val_fraction)))
    chosen = set(random.Random(seed).sample(range(len(clips)), n_val))
    train = [c for i, c in enumerate(clips) if i not in chosen]
    val = [c for i, c in enumerate(clips) if i in chosen]
    return train, val


def _read_clips(
    datastore: Datastore,
    location: str,
    clips: list[Clip],
    config: PrepConfig,
    manifest: Manifest,
) -> list[ClipFrames]:
    result = []
    split = clips[0].split if clips else ""
    for clip in tqdm(clips, desc=f"{location} {split}", unit="clip", leave=False):
        try:
            frames = _decode(datastore, location, clip, config)
        except ClipReadError as error:
            logger.warning(
                "skipping %s clip %s (%s): %s", clip.split, clip.name, clip.source, error
            )
            manifest.skipped.append(
                {
                    "split": clip.split,
                    "clip": clip.name,
                    "source": clip.source,
                    "reason": str(error),
                }
            )
            continue
        numbers = np.arange(1, len(frames) + 1, dtype=np.int32)
        result.append((clip.name, frames, numbers))
    return result


def _decode(datastore: Datastore, location: str, clip: Clip, config: PrepConfig) -> np.ndarray:
    if clip.form == "video":
        raw = read_video(datastore.local_path(location, clip.files[0]))
    else:
        raw = read_frame_files([datastore.local_path(location, f) for f in clip.files])
    frames = [to_model_input(f, config.height, config.width, config.channels) for f in raw]
    if len(frames) < config.min_clip_frames:
        raise ClipReadError(
            f"only {len(frames)} frame(s); at least {config.min_clip_frames} needed"
        )
    return np.stack(frames)


def _read_labels(
    datastore: Datastore, location: str, layout: LocationLayout
) -> tuple[dict[str, ClipLabels] | None, str | None]:
    """Labels per test clip name from labels.csv (preferred) or UCSD's .m file."""
    if layout.labels_csv:
        if layout.ucsd_m:
            logger.warning(
                "both %s and %s found: using labels.csv", layout.labels_csv, layout.ucsd_m[0]
            )
        path = datastore.local_path(location, layout.labels_csv)
        source = f"{location}/{layout.labels_csv}"
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as error:
            raise LabelFileError(
                f"{source}: not UTF-8 text ({error.reason} at byte {error.start})"
            ) from None
        labels = parse_labels_csv(text, source=source)
        names = {c.name for c in layout.test}
        for unknown in sorted(set(labels) - names):
            logger.warning(
                "%s/%s names clip %r, which is not a test clip",
                location,
                layout.labels_csv,
                unknown,
            )
        return labels, layout.labels_csv
    if layout.ucsd_m:
        if len(layout.ucsd_m) > 1:
            logger.warning("several .m files in test/: using %s", layout.ucsd_m[0])
        source = layout.ucsd_m[0]
        text = datastore.local_path(location, source).read_text(errors="replace")
        entries = parse_ucsd_m(text, source=f"{location}/{source}")
        if len(entries) != len(layout.test):
            logger.warning(
                "%s/%s has %d entries for %d test clips: clips without an entry are unlabelled",
                location,
                source,
                len(entries),
                len(layout.test),
            )
        return {clip.name: entry for clip, entry in zip(layout.test, entries, strict=False)}, source
    return None, None


def _labels_for(name: str, n_frames: int, labels: dict[str, ClipLabels] | None) -> np.ndarray:
    if labels is None:
        return np.full(n_frames, UNKNOWN_LABEL, np.int8)
    entry = labels.get(name)
    if entry is None:
        return np.zeros(n_frames, np.int8)
    for _start, end in entry.intervals:
        if end > n_frames:
            logger.warning(
                "labels for clip %s go to frame %d but it has %d frames", name, end, n_frames
            )
    return np.asarray(entry.frame_mask(n_frames), np.int8)


def _add(
    writer: PreparedWriter,
    manifest: Manifest,
    split: str,
    name: str,
    frames: np.ndarray,
    numbers: np.ndarray,
    labels: np.ndarray,
) -> None:
    writer.add_clip(split, name, frames, numbers, labels)
    manifest.clips.setdefault(split, []).append(
        {"clip": name, "frames": len(numbers), "anomalous_frames": int((labels == 1).sum())}
    )


__all__ = ["DataPrepError", "LabelFileError", "Manifest", "PrepConfig", "prepare_location"]
