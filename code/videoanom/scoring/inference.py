"""Scoring new video with a location's registered models (``videoanom score``).

The detector version decides which PredNet version is used (the one it was trained on),
so the two always match. Clips stream through in bounded memory: frames are decoded,
converted and fed to the PredNet window by window.
"""

from __future__ import annotations

import csv
import logging
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from videoanom.data.frames import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    ClipReadError,
    natural_key,
    read_frame_files,
    read_video,
    to_model_input,
)
from videoanom.names import classifier_model_name
from videoanom.registry import ModelNotFoundError

logger = logging.getLogger(__name__)

CSV_COLUMNS = ("clip", "frame", "anomaly_score", "is_anomaly")
CHAMPION = "champion"


@dataclass
class LocationModels:
    location: str
    prednet: Any
    detector: Any
    versions: dict[str, str]
    # how the detector version was chosen: "champion" (the alias), "latest" (no champion
    # yet) or "version" (asked for by number)
    selected: str = "latest"


@dataclass
class InputClip:
    name: str
    path: Path
    form: str  # "video" or "frames"

    def frames(self) -> Iterator[np.ndarray]:
        if self.form == "video":
            return read_video(self.path)
        files = sorted(
            (p for p in self.path.iterdir() if _is_image(p)), key=lambda p: natural_key(p.name)
        )
        return read_frame_files(files)


def _is_image(path: Path) -> bool:
    return (
        path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")
    )


def find_input_clips(path: Path) -> list[InputClip]:
    """A video file, a frame folder, or a folder of clips (videos and frame folders)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_file():
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            raise ValueError(f"{path}: not a video file ({', '.join(sorted(VIDEO_EXTENSIONS))})")
        return [InputClip(path.stem, path, "video")]
    if any(_is_image(p) for p in path.iterdir()):
        return [InputClip(path.name, path, "frames")]
    clips = []
    for entry in sorted(path.iterdir(), key=lambda p: natural_key(p.name)):
        if entry.is_file() and entry.suffix.lower() in VIDEO_EXTENSIONS:
            clips.append(InputClip(entry.stem, entry, "video"))
        elif entry.is_dir() and any(_is_image(p) for p in entry.iterdir()):
            clips.append(InputClip(entry.name, entry, "frames"))
        elif not entry.name.startswith("."):
            logger.warning("ignoring %s: not a video file or a folder of frames", entry)
    if not clips:
        raise ValueError(f"{path}: no video files or frame folders found")
    return clips


def load_location_models(location: str, version: int | None = None) -> LocationModels:
    """The location's detector and its PredNet: ``version`` of the detector if given, else
    the one under the alias ``champion``, else the latest."""
    import mlflow

    from videoanom.prednet import with_output_mode
    from videoanom.registry import latest_version, load_prednet, version_by_alias
    from videoanom.scoring.detector import Detector

    name = classifier_model_name(location)
    client = mlflow.MlflowClient()
    # An alias, or its version-tag stand-in on Azure ML's MLflow (see registry.set_alias).
    how = "version" if version is not None else CHAMPION
    chosen = version if version is not None else version_by_alias(name, CHAMPION)
    if chosen is not None:
        try:
            version = client.get_model_version(name, str(chosen))
        except mlflow.exceptions.MlflowException:
            raise ModelNotFoundError(f"no version {chosen} of registered model {name!r}") from None
    else:
        version = latest_version(name)
        how = "latest"
    if version is None:
        raise ModelNotFoundError(
            f"location {location!r} has no registered detector {name!r}: run "
            f"'videoanom run --location {location}' first"
        )
    if how == "latest":
        logger.info(
            "no %s alias for %s yet: using the latest version %s", CHAMPION, name, version.version
        )
    folder = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version.version}"))
    detector = Detector.load(folder)
    prednet_uri = version.tags["prednet"]
    prednet = with_output_mode(load_prednet(prednet_uri), "all")
    versions = {
        "classifier": f"{name}/{version.version}",
        "prednet": prednet_uri.removeprefix("models:/"),
    }
    return LocationModels(location, prednet, detector, versions, selected=how)


_DONE = object()


def prefetch(items: Iterable[Any], size: int = 256) -> Iterator[Any]:
    """Iterate ``items`` in a background thread, at most ``size`` ahead.

    Decoding and resizing frames then overlaps the PredNet's computation (TensorFlow
    releases the GIL), while memory stays bounded. Errors surface in the consumer.
    """
    buffer: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(_DONE)
        except BaseException as error:  # handed to the consumer, re-raised there
            buffer.put(error)

    thread = threading.Thread(target=produce, name="frame-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def score_clip(models: LocationModels, clip: InputClip) -> tuple[np.ndarray, np.ndarray]:
    """(anomaly_score, is_anomaly) per frame of one clip, in frame order."""
    return score_frames(models, clip.frames(), clip.name)


def score_frames(
    models: LocationModels, frames: Iterable[np.ndarray], name: str = "clip"
) -> tuple[np.ndarray, np.ndarray]:
    """(anomaly_score, is_anomaly) per frame of a sequence of BGR (or grey) images, in order.

    The one scoring path behind ``score``, the HTTP service and the release gate: frames are
    decoded and resized in a background thread while the PredNet runs.
    """
    from videoanom.scoring.features import ExtractConfig, extract_features

    height, width, channels = models.prednet.frame_shape
    inputs = prefetch(to_model_input(f, height, width, channels) for f in frames)
    features = extract_features(models.prednet, inputs, name, ExtractConfig())
    scores, flags = models.detector.score(features)
    return np.asarray(scores, float), np.asarray(flags, int)


def score_to_csv(models: LocationModels, clips: list[InputClip], out: IO[str]) -> list[str]:
    """Write one CSV row per frame; returns the names of clips that could not be read."""
    from tqdm import tqdm

    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    failed = []
    for clip in tqdm(clips, desc=f"scoring {models.location}", unit="clip", disable=len(clips) < 2):
        try:
            scores, flags = score_clip(models, clip)
        except ClipReadError as error:
            logger.error("cannot score %s: %s", clip.path, error)
            failed.append(clip.name)
            continue
        for frame, (score, flag) in enumerate(zip(scores, flags, strict=True), start=1):
            writer.writerow((clip.name, frame, f"{score:.6f}", int(flag)))
        out.flush()
    return failed
