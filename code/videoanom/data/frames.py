"""Reading clips (frame folders or video files) and converting frames to the model input."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTENSIONS = frozenset({".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp"})
VIDEO_EXTENSIONS = frozenset({".avi", ".mp4", ".mov", ".mkv"})


class ClipReadError(ValueError):
    """A clip that cannot be used: undecodable, empty, or with frames of another size."""


def natural_key(text: str) -> list[object]:
    """Sort key that puts ``frame_2`` before ``frame_10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def read_frame_files(paths: list[Path]) -> Iterator[np.ndarray]:
    """Decode image files in order as BGR uint8 arrays, checking they share one size."""
    if not paths:
        raise ClipReadError("the clip has no frames")
    first_shape: tuple[int, ...] | None = None
    for path in paths:
        data = np.fromfile(path, dtype=np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if image is None:
            raise ClipReadError(f"{path.name} cannot be decoded as an image")
        first_shape = _check_shape(image, first_shape, path.name)
        yield image


def read_video(path: Path) -> Iterator[np.ndarray]:
    """Decode a video file frame by frame as BGR uint8 arrays."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise ClipReadError(f"{path.name} cannot be opened as a video")
        count = 0
        first_shape: tuple[int, ...] | None = None
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            count += 1
            first_shape = _check_shape(frame, first_shape, f"{path.name} frame {count}")
            yield frame
        if count == 0:
            raise ClipReadError(f"{path.name} has no decodable frames")
    finally:
        capture.release()


def _check_shape(image: np.ndarray, first: tuple[int, ...] | None, where: str) -> tuple[int, ...]:
    if first is not None and image.shape != first:
        raise ClipReadError(
            f"{where} is {image.shape[1]}x{image.shape[0]} but earlier frames are "
            f"{first[1]}x{first[0]}"
        )
    return image.shape


def to_model_input(bgr: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
    """Convert one BGR frame to (height, width, channels) uint8: colour, resize, centre-crop.

    The frame is scaled so that it covers the target size while keeping its aspect ratio,
    then cropped around the centre, so nothing is stretched.
    """
    if channels == 1:
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    elif channels == 3:
        image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    else:
        raise ValueError(f"channels must be 1 (grey) or 3 (colour), not {channels}")
    src_h, src_w = image.shape[:2]
    scale = max(height / src_h, width / src_w)
    new_h, new_w = max(height, round(src_h * scale)), max(width, round(src_w * scale))
    if (new_h, new_w) != (src_h, src_w):
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    image = image[top : top + height, left : left + width]
    if channels == 1:
        image = image[:, :, np.newaxis]
    return np.ascontiguousarray(image)
