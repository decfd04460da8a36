"""The scoring service's FastAPI application (CONTRACT section 2b).

Routes:

* ``GET /healthz``: 200 ``{"status": "ok", "locations": n}`` when at least one location can
  be scored, else 503; never needs the API key.
* ``GET /locations``: the loaded models per location (versions, champion or latest) and
  the locations that failed to load.
* ``POST /score/{location}``: one video file (multipart field ``file``) or a JSON batch of
  frames (``{"frames": ["<base64 PNG or JPEG>", ...]}``); answers one entry per frame.

Limits: a body over ``settings.max_upload_mb`` or more than ``settings.max_frames`` frames
answers 413, checked while the body streams in and before frames are scored. Bad input
answers 4xx with ``{"detail": "..."}``; an unexpected error is logged and answered 500 with
a generic message. When ``VIDEOANOM_API_KEY`` is set, every request but ``/healthz`` needs
the header ``X-API-Key`` with that value (401 otherwise).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Request, Security
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

import videoanom
from videoanom.data.frames import ClipReadError
from videoanom.serving.models import LocationUnavailable, ModelStore, UnknownLocation
from videoanom.serving.payloads import (
    MAX_FRAME_PIXELS,
    PayloadError,
    PayloadTooLarge,
    decode_json_frames,
    frames_response,
)
from videoanom.serving.upload import Body, UploadError, receive_video, too_large

logger = logging.getLogger(__name__)

API_KEY_ENV = "VIDEOANOM_API_KEY"
API_KEY_HEADER = "X-API-Key"
OPEN_PATHS = frozenset({"/healthz"})
INTERNAL_ERROR = "internal error while handling the request; the service log has the details"


# ---------------------------------------------------------------------- response models
class ErrorDetail(BaseModel):
    detail: str = Field(description="what is wrong with the request, in words")


class Health(BaseModel):
    status: str = Field(description='"ok" when at least one location can be scored')
    locations: int = Field(description="number of locations that can be scored")


class FrameScore(BaseModel):
    frame: int = Field(description="1-based frame number, in the order the frames were sent")
    anomaly_score: float = Field(ge=0, le=1, description="higher means more anomalous")
    is_anomaly: int = Field(ge=0, le=1, description="1 when the score reaches the threshold")


class ScoreResponse(BaseModel):
    location: str
    models: dict[str, str] = Field(
        description="registered versions used: classifier (detector) and prednet"
    )
    frames: list[FrameScore]


class LocationInfo(BaseModel):
    location: str = Field(description="the location's name")
    slug: str = Field(description="the name as used in model names ([a-z0-9-])")
    classifier: str = Field(description="detector version served: anomaly-classifier-<slug>/N")
    prednet: str = Field(description="PredNet version served: prednet-<slug>/N")
    selected: str = Field(
        description='"champion" (the alias) or "latest" (no champion yet: the newest version)'
    )


class FailedLocation(BaseModel):
    location: str
    error: str


class LocationsResponse(BaseModel):
    locations: list[LocationInfo]
    failed: list[FailedLocation]


# ---------------------------------------------------------------------- the application
def create_app(
    settings: Any,
    locations: list[str] | None = None,
    model_store: ModelStore | None = None,
    *,
    api_key: str | None = None,
) -> FastAPI:
    """The service for ``settings`` (tracking URI, upload limits).

    Models are loaded once when the application starts (its lifespan), unless
    ``model_store`` is given already loaded. ``api_key`` None reads ``VIDEOANOM_API_KEY``
    from the environment (then ``.env``) now, at creation; an empty string means no key.
    """
    store = model_store if model_store is not None else ModelStore()
    key = read_api_key() if api_key is None else api_key
    max_bytes = int(settings.max_upload_mb) * 2**20
    max_frames = int(settings.max_frames)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        if store.loaded_at is None:
            await run_in_threadpool(store.load, settings.tracking_uri, locations)
        yield

    app = FastAPI(
        title="videoanom scoring service",
        version=videoanom.__version__,
        description=_description(settings, bool(key)),
        lifespan=lifespan,
    )
    app.state.model_store = store
    app.add_middleware(_Guard, api_key=key or None)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)

    # Declares the header in the OpenAPI document; the check itself is _Guard's, which
    # also covers /docs, /openapi.json and unknown paths.
    scheme = APIKeyHeader(
        name=API_KEY_HEADER,
        auto_error=False,
        description=f"the value of {API_KEY_ENV} on the server",
    )
    secured = [Security(scheme)] if key else []
    errors = _error_responses(401 if key else None)

    @app.get(
        "/healthz",
        response_model=Health,
        responses={503: {"model": Health, "description": "no location can be scored"}},
        summary="200 when the service can score",
    )
    async def healthz() -> JSONResponse:
        n = len(store.served())
        if n == 0:
            return JSONResponse({"status": "unavailable", "locations": 0}, status_code=503)
        return JSONResponse({"status": "ok", "locations": n})

    @app.get(
        "/locations",
        response_model=LocationsResponse,
        responses=_pick(errors, 401),
        dependencies=secured,
        summary="the loaded models per location",
    )
    async def list_locations() -> LocationsResponse:
        return LocationsResponse(
            locations=[LocationInfo(**s.describe()) for s in store.served()],
            failed=[FailedLocation(location=k, error=v) for k, v in store.failures().items()],
        )

    @app.post(
        "/score/{location}",
        response_model=ScoreResponse,
        responses=_pick(errors, 400, 401, 404, 413, 415, 422, 503),
        dependencies=secured,
        openapi_extra=_score_request_body(),
        summary="score every frame of one clip",
    )
    async def score(
        location: Annotated[
            str,
            PathParam(description="location name (any spelling with the same model name)"),
        ],
        request: Request,
    ) -> JSONResponse:
        body = Body(request.receive, max_bytes)
        try:
            return await _score(store, location, request, body, max_bytes, max_frames)
        except (UploadError, PayloadError, ClipReadError, ClientDisconnect) as error:
            status, detail = _status_of(error)
        except UnknownLocation as error:
            status, detail = 404, str(error)
        except LocationUnavailable as error:
            status, detail = 503, str(error)
        await body.drain(request.headers)
        return JSONResponse({"detail": detail}, status_code=status)

    return app


async def _score(
    store: ModelStore,
    location: str,
    request: Request,
    body: Body,
    max_bytes: int,
    max_frames: int,
) -> JSONResponse:
    served = store.get(location)
    kind = _content_kind(request.headers.get("content-type", ""))
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large(max_bytes)
    started = time.monotonic()
    if kind == "json":
        payload = _parse_json(await body.read_all())
        frames = await run_in_threadpool(decode_json_frames, payload, max_frames)
        scores, flags = await run_in_threadpool(served.score, frames, "frames")
        what = "JSON batch"
    else:
        path = await receive_video(request.headers["content-type"], body)
        try:
            scores, flags = await run_in_threadpool(_score_video, served, path, max_frames)
        finally:
            shutil.rmtree(path.parent, ignore_errors=True)
        what = path.name
    logger.info(
        "scored %d frames (%s) for %s in %.2f s",
        len(scores),
        what,
        served.location,
        time.monotonic() - started,
    )
    return JSONResponse(frames_response(served.location, served.versions, scores, flags))


def _score_video(served: Any, path: Path, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Score an uploaded video; refuses (413) before decoding when its header shows it is
    over the limits, and stops decoding at the first frame past ``max_frames``."""
    import cv2

    from videoanom.data.frames import read_video

    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise ClipReadError(f"{path.name} cannot be opened as a video")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    finally:
        capture.release()
    if count > max_frames:
        raise _too_many_frames(f"{path.name} has {count} frames", max_frames)
    if width * height > MAX_FRAME_PIXELS:
        raise PayloadTooLarge(
            f"{path.name} is {width}x{height} pixels, more than the {MAX_FRAME_PIXELS} pixels "
            "a frame may have"
        )
    return served.score(_at_most(read_video(path), max_frames, path.name), path.stem)


def _at_most(frames: Iterable[np.ndarray], limit: int, name: str) -> Iterator[np.ndarray]:
    for number, frame in enumerate(frames, start=1):
        if number > limit:
            raise _too_many_frames(f"{name} has more than {limit} frames", limit)
        yield frame


def _too_many_frames(what: str, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{what}; this service scores at most {limit} frames per request "
        "(VIDEOANOM_MAX_FRAMES): split the clip"
    )


def _content_kind(content_type: str) -> str:
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "multipart/form-data":
        return "video"
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return "json"
    raise UploadError(
        415,
        f"unsupported content type {media or '(none)'!r}: send multipart/form-data with a "
        "'file' field (one video), or application/json {\"frames\": [<base64 PNG or JPEG>, ...]}",
    )


def _parse_json(body: bytes) -> Any:
    if not body.strip():
        raise UploadError(422, 'empty body: send {"frames": ["<base64 PNG or JPEG>", ...]}')
    try:
        return json.loads(body)
    except RecursionError:
        raise UploadError(400, "request body is not valid JSON: nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise UploadError(400, f"request body is not valid JSON: {error}") from None


def _status_of(error: Exception) -> tuple[int, str]:
    if isinstance(error, UploadError):
        return error.status, error.detail
    if isinstance(error, PayloadTooLarge):
        return 413, str(error)
    if isinstance(error, ClientDisconnect):
        return 400, "the client disconnected before the request body was complete"
    return 422, str(error)  # PayloadError, ClipReadError


# ---------------------------------------------------------------------- API key, errors
def read_api_key(env_file: str | Path = ".env") -> str:
    """``VIDEOANOM_API_KEY`` from the environment, then ``env_file``; "" when unset."""
    key = os.environ.get(API_KEY_ENV, "")
    if not key and Path(env_file).is_file():
        from dotenv import dotenv_values

        key = dotenv_values(env_file).get(API_KEY_ENV) or ""
    return key.strip()


class _Guard:
    """Outermost application middleware: the API key check and the catch-all for errors.

    Every request but ``/healthz`` must carry ``X-API-Key`` equal to the key (compared in
    constant time) when one is set. An exception no handler answered is logged with its
    traceback and answered 500 with a generic message (never the exception's text).
    """

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.key = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.key is not None and scope["path"] not in OPEN_PATHS:
            supplied = _header(scope, API_KEY_HEADER.lower().encode())
            if supplied is None or not hmac.compare_digest(supplied, self.key):
                detail = f"missing or wrong {API_KEY_HEADER} header"
                body = Body(receive)
                await body.drain({"expect": (_header(scope, b"expect") or b"").decode("latin-1")})
                await JSONResponse({"detail": detail}, status_code=401)(scope, receive, send)
                return
        started = False

        async def tracked(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            logger.exception("unexpected error on %s %s", scope.get("method"), scope["path"])
            if started:
                raise
            await JSONResponse({"detail": INTERNAL_ERROR}, status_code=500)(scope, receive, send)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


async def _http_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    return JSONResponse(
        {"detail": str(error.detail)}, status_code=error.status_code, headers=error.headers
    )


async def _validation_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in error.errors()
    )
    return JSONResponse({"detail": f"invalid request: {problems}"}, status_code=422)


# ---------------------------------------------------------------------- OpenAPI
_ERROR_TEXT = {
    400: "malformed body (multipart or JSON syntax)",
    401: f"missing or wrong {API_KEY_HEADER} header",
    404: "unknown location (the message lists the served ones)",
    413: "body over VIDEOANOM_MAX_UPLOAD_MB, more than VIDEOANOM_MAX_FRAMES frames, or a "
    "frame too large",
    415: "content type other than multipart/form-data or application/json",
    422: "unreadable video, bad frames (base64, image, sizes), or no frames",
    503: "the location is registered but its models failed to load",
}


def _error_responses(api_key_status: int | None) -> dict[int, dict[str, Any]]:
    return {
        status: {"model": ErrorDetail, "description": text}
        for status, text in _ERROR_TEXT.items()
        if status != 401 or api_key_status
    }


def _pick(responses: dict[int, dict[str, Any]], *statuses: int) -> dict[int | str, Any]:
    return {s: responses[s] for s in statuses if s in responses}


def _score_request_body() -> dict[str, Any]:
    batch_example = {"frames": ["iVBORw0KGgoAAAANSUhEUgAA..."]}
    return {
        "requestBody": {
            "required": True,
            "description": "one video file, or the frames of one clip as a JSON batch",
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {
                                "type": "string",
                                "format": "binary",
                                "description": "one video file (.avi, .mp4, .mov, .mkv)",
                            }
                        },
                    }
                },
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["frames"],
                        "properties": {
                            "frames": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "string",
                                    "format": "byte",
                                    "description": "a base64-encoded PNG or JPEG image",
                                },
                                "description": "the clip's frames in order, all the same size",
                            }
                        },
                    },
                    "example": batch_example,
                },
            },
        }
    }


def _description(settings: Any, keyed: bool) -> str:
    auth = (
        f"Every request but `/healthz` must carry the `{API_KEY_HEADER}` header."
        if keyed
        else f"No API key is required (set `{API_KEY_ENV}` to require one)."
    )
    return (
        "Frame-level anomaly scores for camera locations, from each location's registered "
        "PredNet and anomaly detector (the `champion` alias, else the latest version).\n\n"
        "`POST /score/{location}` takes one video file as the multipart field `file`, or a "
        'JSON batch `{"frames": ["<base64 PNG or JPEG>", ...]}`, and answers one entry per '
        "frame: `frame` (1-based), `anomaly_score` in [0, 1] (higher is more anomalous) and "
        "`is_anomaly` (0/1 at the location's threshold).\n\n"
        f"Limits: request bodies up to {settings.max_upload_mb} MB, at most "
        f"{settings.max_frames} frames per request (413 beyond). Bad input answers 4xx with "
        f'`{{"detail": "..."}}`. {auth}'
    )
