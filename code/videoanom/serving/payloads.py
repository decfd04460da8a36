"""Request and response bodies of the scoring service (CONTRACT section 2b).

Pure functions shared by the FastAPI service (:mod:`videoanom.serving.app`) and the Azure ML
online endpoint's entry script, so both accept the same JSON batch and answer the same JSON:

* request: ``{"frames": ["<base64 PNG or JPEG>", ...]}``, the frames of one clip in order,
  all the same size;
* response: ``{"location": ..., "models": {...versions...}, "frames": [{"frame": 1,
  "anomaly_score": 0.03, "is_anomaly": 0}, ...]}``, one entry per frame, ``frame`` 1-based.

Nothing here imports a web framework or TensorFlow. Every problem with a payload raises
:class:`PayloadError` (or :class:`PayloadTooLarge` for a limit) with a message that names
what is wrong and which frame, meant to be returned to the client as it is.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# The largest frame accepted (pixels), checked from the image header before decoding, so a
# small compressed image cannot expand into gigabytes (a "decompression bomb").
MAX_FRAME_PIXELS = 4096 * 4096
# The most decoded BGR bytes one JSON batch may hold in memory at once.
MAX_DECODED_BYTES = 1 << 30

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): they hold the size
_JPEG_SOF = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
_BATCH_EXAMPLE = '{"frames": ["<base64 PNG or JPEG>", ...]}'


class PayloadError(ValueError):
    """A request body that cannot be scored; the message is safe to return to the client."""


class PayloadTooLarge(PayloadError):
    """A request over one of the service's limits (frames, pixels, bytes): HTTP 413."""


def decode_json_frames(
    payload: Any, max_frames: int, *, max_decoded_bytes: int = MAX_DECODED_BYTES
) -> list[np.ndarray]:
    """The frames of a JSON batch as BGR uint8 arrays (H, W, 3), in order.

    ``payload`` is the parsed JSON body. Checks, in order and before decoding any pixel: the
    shape of the body, the number of frames (at most ``max_frames``), every frame's base64
    and image header (PNG or JPEG, at most :data:`MAX_FRAME_PIXELS`), that every frame has
    the size of the first, and that the batch decodes to at most ``max_decoded_bytes``.
    """
    frames = _frame_list(payload)
    if len(frames) > max_frames:
        raise PayloadTooLarge(
            f"{len(frames)} frames sent; this service scores at most {max_frames} frames per "
            "request (VIDEOANOM_MAX_FRAMES): split the clip"
        )
    blobs: list[bytes] = []
    first: tuple[int, int] | None = None
    for index, item in enumerate(frames):
        data = _base64_image(item, index)
        size = image_size(data, f"frames[{index}]")
        if first is None:
            first = size
        elif size != first:
            raise PayloadError(
                f"frames[{index}] is {size[0]}x{size[1]} pixels but frames[0] is "
                f"{first[0]}x{first[1]}: every frame of a clip must have the same size"
            )
        blobs.append(data)
    assert first is not None
    decoded = len(blobs) * first[0] * first[1] * 3
    if decoded > max_decoded_bytes:
        raise PayloadTooLarge(
            f"{len(blobs)} frames of {first[0]}x{first[1]} pixels decode to "
            f"{decoded / 2**20:.0f} MiB, more than the {max_decoded_bytes / 2**20:.0f} MiB one "
            "request may hold: send fewer or smaller frames, or upload a video file"
        )
    return [_decode_image(data, index, first) for index, data in enumerate(blobs)]


def frames_response(
    location: str,
    models_versions: Mapping[str, str],
    scores: Sequence[float] | np.ndarray,
    flags: Sequence[int] | np.ndarray,
) -> dict[str, Any]:
    """The contract's response body: one entry per frame, ``frame`` numbered from 1.

    Scores are rounded to 6 decimals, as ``videoanom score`` writes them to CSV.
    """
    scores = np.asarray(scores, dtype=float).ravel()
    flags = np.asarray(flags).ravel()
    if scores.shape != flags.shape:
        raise ValueError(f"{scores.size} scores but {flags.size} anomaly flags")
    return {
        "location": location,
        "models": {str(k): str(v) for k, v in models_versions.items()},
        "frames": [
            {"frame": number, "anomaly_score": round(float(score), 6), "is_anomaly": int(flag)}
            for number, (score, flag) in enumerate(zip(scores, flags, strict=True), start=1)
        ],
    }


def image_size(data: bytes, where: str = "the image") -> tuple[int, int]:
    """(width, height) from a PNG or JPEG header, without decoding; checks the pixel limit."""
    if data.startswith(_PNG_SIGNATURE):
        size = _png_size(data)
        kind = "PNG"
    elif data.startswith(_JPEG_SOI):
        size = _jpeg_size(data)
        kind = "JPEG"
    else:
        raise PayloadError(f"{where} is not a PNG or JPEG image")
    if size is None:
        raise PayloadError(f"{where} is a truncated or malformed {kind} image")
    width, height = size
    if width < 1 or height < 1:
        raise PayloadError(f"{where} has an invalid size {width}x{height}")
    if width * height > MAX_FRAME_PIXELS:
        raise PayloadTooLarge(
            f"{where} is {width}x{height} pixels, more than the {MAX_FRAME_PIXELS} pixels a "
            "frame may have"
        )
    return width, height


def _frame_list(payload: Any) -> list[Any]:
    if not isinstance(payload, dict):
        raise PayloadError(
            f"the JSON body must be an object {_BATCH_EXAMPLE}, not {_json_kind(payload)}"
        )
    if "frames" not in payload:
        raise PayloadError(f'the JSON body has no "frames" field: send {_BATCH_EXAMPLE}')
    frames = payload["frames"]
    if not isinstance(frames, list):
        raise PayloadError(
            f'"frames" must be a list of base64-encoded images, not {_json_kind(frames)}'
        )
    if not frames:
        raise PayloadError('"frames" is empty: send at least one frame')
    return frames


def _base64_image(item: Any, index: int) -> bytes:
    if not isinstance(item, str):
        raise PayloadError(
            f"frames[{index}] is {_json_kind(item)}, not a base64-encoded PNG or JPEG string"
        )
    text = item
    if text.startswith("data:"):  # a data URL: data:image/png;base64,....
        _, sep, text = text.partition(",")
        if not sep:
            raise PayloadError(f"frames[{index}] is a data URL without a comma before its data")
    text = "".join(text.split())  # base64 wrapped over lines is still base64
    if not text:
        raise PayloadError(f"frames[{index}] is an empty string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise PayloadError(
            f"frames[{index}] is not valid base64 (standard alphabet, with padding)"
        ) from None


def _decode_image(data: bytes, index: int, size: tuple[int, int]) -> np.ndarray:
    import cv2

    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise PayloadError(f"frames[{index}] cannot be decoded as an image (corrupt data)")
    if (image.shape[1], image.shape[0]) != size:
        raise PayloadError(
            f"frames[{index}] decodes to {image.shape[1]}x{image.shape[0]} pixels, not the "
            f"{size[0]}x{size[1]} its header gives"
        )
    return image


def _png_size(data: bytes) -> tuple[int, int] | None:
    # signature (8 bytes), then the IHDR chunk: length (4), b"IHDR", width (4), height (4)
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Walk the JPEG segments up to the first start-of-frame marker, which holds the size."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if length < 2:
            return None
        if marker in _JPEG_SOF:
            if length < 7 or i + 9 > n:
                return None
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return width, height
        i += 2 + length
    return None


def _json_kind(value: Any) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    for kind, name in kinds.items():
        if isinstance(value, kind):
            return name
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__
