"""The release gate's evaluation frames: labelled test clips, scored by several detectors.

The clips and their labels are found exactly as ``data_prep`` finds them (the same layout
discovery and the same ``labels.csv`` / UCSD ``.m`` readers), either in the location's
datastore folder or in a local folder given with ``videoanom release --eval``. Every model
is scored on the same frames with :func:`videoanom.scoring.inference.score_frames`, the
scoring path of ``videoanom score`` and the HTTP service; clips stream through, so memory
stays bounded whatever their length.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from videoanom.data.datastore import Datastore, DatastoreError, FileInfo, open_datastore
from videoanom.data.frames import ClipReadError, read_frame_files, read_video
from videoanom.data.labels import ClipLabels
from videoanom.data.layout import Clip, discover_layout
from videoanom.data.prepare import _labels_for, _read_labels
from videoanom.scoring.inference import LocationModels, score_frames

logger = logging.getLogger(__name__)

EVAL_LOCATION = "eval"


class _EvalFolder(Datastore):
    """A local folder given with ``--eval``, seen as one location of a datastore.

    The folder is either laid out like a location (it holds ``test/`` or UCSD's ``Test/``)
    or is itself the test folder (clips plus ``labels.csv`` or a ``.m`` file); in the second
    case its files are presented under ``test/`` so the project's layout reader accepts them.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"evaluation folder {root} does not exist")
        has_test = any(p.is_dir() and p.name.lower() == "test" for p in self.root.iterdir())
        self.prefix = "" if has_test else "test/"
        self.uri = str(self.root)
        self.refused = {}

    def list_locations(self) -> list[str]:
        return [EVAL_LOCATION]

    def list_files(self, location: str) -> list[FileInfo]:
        files = []
        for dirpath, _dirnames, filenames in os.walk(self.root):
            for filename in filenames:
                full = Path(dirpath) / filename
                rel = full.relative_to(self.root).as_posix()
                stat = full.stat()
                files.append(FileInfo(self.prefix + rel, stat.st_size, str(stat.st_mtime_ns)))
        return sorted(files, key=lambda f: f.path)

    def local_path(self, location: str, path: str) -> Path:
        full = (self.root / path.removeprefix(self.prefix)).resolve()
        if self.root not in full.parents:
            raise DatastoreError(f"path {path!r} escapes the evaluation folder {self.root}")
        return full


@dataclass
class EvalSource:
    """Where the evaluation clips are, their labels, and how to read their frames."""

    datastore: Datastore
    location: str
    clips: list[Clip]
    labels: dict[str, ClipLabels] | None
    label_source: str | None
    description: str
    from_datastore: bool

    def frames(self, clip: Clip) -> Iterator[np.ndarray]:
        """The clip's frames as BGR images, in order (decoded lazily)."""
        if clip.form == "video":
            return read_video(self.datastore.local_path(self.location, clip.files[0]))
        return read_frame_files([self.datastore.local_path(self.location, f) for f in clip.files])

    def frame_labels(self, clip: Clip, n_frames: int) -> np.ndarray:
        """0/1 per frame (-1 everywhere when the source has no labels at all)."""
        return _labels_for(clip.name, n_frames, self.labels)


def open_evaluation(
    datastore_uri: str, location: str, eval_path: Path | None, cache_dir: Path | None = None
) -> EvalSource:
    """The labelled test clips of ``location`` in the datastore, or of ``eval_path``."""
    if eval_path is None:
        datastore = open_datastore(datastore_uri, cache_dir=cache_dir)
        name = location
        description = f"test clips of {location} in the datastore {datastore.uri}"
    else:
        datastore = _EvalFolder(Path(eval_path))
        name = EVAL_LOCATION
        description = f"test clips in {datastore.root}"
    layout = discover_layout(datastore.list_files(name))
    labels, label_source = _read_labels(datastore, name, layout)
    return EvalSource(
        datastore,
        name,
        layout.test,
        labels,
        label_source,
        description,
        from_datastore=eval_path is None,
    )


@dataclass
class Evaluation:
    """Per-frame labels and each model's scores on exactly the same frames."""

    labels: np.ndarray
    scores: list[np.ndarray]
    clips: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    # the first clip read and the first model's scores on it: the smoke test's known clip
    first_clip: Clip | None = None
    first_clip_scores: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        return len(self.labels)

    def missing_labels(self) -> str | None:
        """Why no AUC can be computed from these frames, or None if it can."""
        if not len(self.labels):
            return "no evaluation frames could be read"
        classes = set(np.unique(self.labels[self.labels >= 0]).tolist())
        if not classes:
            return "the evaluation clips have no labels (labels.csv or a UCSD .m file)"
        if classes != {0, 1}:
            kind = "anomalous" if classes == {1} else "normal"
            return f"every labelled evaluation frame is {kind}: an AUC needs both classes"
        return None

    def auc(self, index: int) -> float:
        """Frame-level ROC AUC of model ``index`` over every labelled frame."""
        known = self.labels >= 0
        return float(roc_auc_score(self.labels[known], self.scores[index][known]))


def score_evaluation(source: EvalSource, models: list[LocationModels]) -> Evaluation:
    """Score every evaluation clip with each model; unreadable clips are skipped for all."""
    labels: list[np.ndarray] = []
    scores: list[list[np.ndarray]] = [[] for _ in models]
    result = Evaluation(np.zeros(0, np.int8), [])
    if source.labels is None:  # nothing to gate on: do not spend time scoring
        return result
    for clip in tqdm(source.clips, desc="release gate", unit="clip", disable=len(source.clips) < 2):
        try:
            per_model = [score_frames(m, source.frames(clip), clip.name)[0] for m in models]
        except ClipReadError as error:
            logger.warning("skipping evaluation clip %s (%s): %s", clip.name, clip.source, error)
            result.skipped.append(clip.name)
            continue
        lengths = {len(s) for s in per_model}
        if len(lengths) != 1:
            raise RuntimeError(f"clip {clip.name}: the models scored different frame counts")
        for i, s in enumerate(per_model):
            scores[i].append(s)
        labels.append(source.frame_labels(clip, len(per_model[0])))
        result.clips.append(clip.name)
        if result.first_clip is None:
            result.first_clip, result.first_clip_scores = clip, per_model[0]
    if labels:
        result.labels = np.concatenate(labels).astype(int)
        result.scores = [np.concatenate(s) for s in scores]
    return result


def clip_as_video(source: EvalSource, clip: Clip, folder: Path, fps: float = 10.0) -> Path:
    """A video file of ``clip``: the file itself, or its frames encoded as MJPG ``.avi``."""
    if clip.form == "video":
        return source.datastore.local_path(source.location, clip.files[0])
    path = Path(folder) / f"{_safe_name(clip.name)}.avi"
    writer = None
    try:
        for frame in source.frames(clip):
            if writer is None:
                height, width = frame.shape[:2]
                writer = cv2.VideoWriter(
                    str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height)
                )
                if not writer.isOpened():
                    raise ClipReadError(f"cannot write {path} (OpenCV MJPG)")
            writer.write(frame)
    finally:
        if writer is not None:
            writer.release()
    return path


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".") or "clip"
