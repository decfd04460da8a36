"""The prepared data of one location: an HDF5 file with train, val and test groups.

Each group holds ``frames`` (N, H, W, C) uint8, and per frame ``clip`` (index into the
group's ``clips`` attribute), ``frame`` (1-based number in the source clip) and ``label``
(1 anomalous, 0 normal, -1 unknown). Frames are stored as uint8 to keep files small; the
model sees float32 in [0, 1].
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
UNKNOWN_LABEL = -1


@dataclass
class SplitData:
    """The frames of one split, in memory."""

    frames: np.ndarray
    clip: np.ndarray
    frame: np.ndarray
    label: np.ndarray
    clips: list[str]

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def clip_slices(self) -> list[tuple[str, slice]]:
        """(clip name, slice of rows) for each clip, in stored order."""
        result = []
        if len(self) == 0:
            return result
        boundaries = np.flatnonzero(np.diff(self.clip)) + 1
        starts = np.concatenate([[0], boundaries])
        ends = np.concatenate([boundaries, [len(self)]])
        for start, end in zip(starts, ends, strict=True):
            result.append((self.clips[int(self.clip[start])], slice(int(start), int(end))))
        return result


class PreparedWriter:
    """Appends clips to a prepared-data HDF5 file one clip at a time (bounded memory)."""

    def __init__(self, path: Path, frame_shape: tuple[int, int, int], attrs: dict) -> None:
        self.path = Path(path)
        self.frame_shape = frame_shape
        self._file = h5py.File(self.path, "w")
        self._file.attrs["format_version"] = FORMAT_VERSION
        for key, value in attrs.items():
            self._file.attrs[key] = value
        self._clips: dict[str, list[str]] = {}
        for split in SPLITS:
            group = self._file.create_group(split)
            group.create_dataset(
                "frames",
                shape=(0, *frame_shape),
                maxshape=(None, *frame_shape),
                dtype=np.uint8,
                chunks=(16, *frame_shape),
            )
            for name, dtype in (("clip", np.int32), ("frame", np.int32), ("label", np.int8)):
                group.create_dataset(
                    name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(1024,)
                )
            self._clips[split] = []

    def add_clip(
        self,
        split: str,
        name: str,
        frames: np.ndarray,
        frame_numbers: np.ndarray,
        labels: np.ndarray,
    ) -> None:
        group = self._file[split]
        index = len(self._clips[split])
        self._clips[split].append(name)
        n_old, n_new = group["frames"].shape[0], frames.shape[0]
        for key, values in (
            ("frames", frames),
            ("clip", np.full(n_new, index, np.int32)),
            ("frame", frame_numbers),
            ("label", labels),
        ):
            group[key].resize(n_old + n_new, axis=0)
            group[key][n_old:] = values

    def close(self) -> None:
        for split, names in self._clips.items():
            self._file[split].attrs["clips"] = json.dumps(names)
        self._file.close()


def read_attrs(path: Path) -> dict:
    """The file-level attributes (location, fingerprint, frame shape...)."""
    with h5py.File(path, "r") as handle:
        return {key: _plain(value) for key, value in handle.attrs.items()}


def load_split(path: Path, split: str) -> SplitData:
    """Load one split into memory."""
    with h5py.File(path, "r") as handle:
        group = handle[split]
        return SplitData(
            frames=group["frames"][...],
            clip=group["clip"][...],
            frame=group["frame"][...],
            label=group["label"][...],
            clips=json.loads(group.attrs.get("clips", "[]")),
        )


def window_starts(clip: np.ndarray, frame: np.ndarray, nt: int, stride: int = 1) -> np.ndarray:
    """Row indices where ``nt`` consecutive frames of one clip start, every ``stride`` rows."""
    n = clip.shape[0]
    if n < nt:
        return np.zeros(0, dtype=np.int64)
    starts = np.arange(0, n - nt + 1)
    same_clip = clip[starts] == clip[starts + nt - 1]
    consecutive = (frame[starts + nt - 1] - frame[starts]) == nt - 1
    valid = starts[same_clip & consecutive]
    if stride > 1 and valid.size:
        keep, next_allowed, last_clip = [], -1, -1
        for start in valid:
            if clip[start] != last_clip or start >= next_allowed:
                keep.append(start)
                next_allowed, last_clip = start + stride, clip[start]
        valid = np.asarray(keep, dtype=np.int64)
    return valid.astype(np.int64)


def _plain(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value
