"""The release gate's smoke test: the real HTTP service scores a known clip.

:func:`service_smoke_test` starts ``python -m videoanom serve`` in a subprocess on a free
local port, waits for ``GET /healthz``, checks that ``GET /locations`` without the API key
is refused, posts one clip to ``POST /score/{location}`` and checks the answer (CONTRACT
section 2b): one entry per frame numbered from 1, scores in [0, 1], flags 0/1, the
candidate's model versions, and the same scores the gate computed in-process for that file.
The service always stops.

The service gets a fresh random ``VIDEOANOM_API_KEY`` of its own, so the check never needs
(or prints) the operator's key and always exercises the key check. Only the standard library
talks HTTP here (no proxy: the service is on 127.0.0.1).
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ml_service.util.env_variables import Settings
from videoanom.names import InvalidLocationName, normalise_location

logger = logging.getLogger(__name__)

API_KEY_ENV = "VIDEOANOM_API_KEY"
API_KEY_HEADER = "X-API-Key"
SCORE_TOLERANCE = 1e-3  # the service rounds scores to 6 decimals; the same code scores both
NOT_READY_GRACE = 15.0  # seconds a service that answers /healthz with an error gets to recover


@dataclass
class SmokeRequest:
    """What the smoke test sends and what it expects back."""

    location: str
    video: Path  # a video file of the known clip
    n_frames: int
    versions: dict[str, str]  # the candidate's {"classifier": "name/N", "prednet": "name/M"}
    scores: np.ndarray | None = None  # the gate's own scores of this file with the candidate


@dataclass
class SmokeResult:
    passed: bool
    detail: str  # one line
    seconds: float = 0.0
    log: str = ""  # the end of the service's log when it could not start


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_command(host: str, port: int, location: str) -> list[str]:
    """``python -m videoanom serve`` for one location, with this interpreter."""
    return [
        sys.executable,
        "-m",
        "videoanom",
        "serve",
        "--host",
        host,
        "--port",
        str(port),
        "--locations",
        location,
    ]


def service_environment(settings: Settings, api_key: str) -> dict[str, str]:
    """This process's environment, tracking to the same registry, with the smoke test's key."""
    env = dict(os.environ)
    env.update(settings.step_environment())
    env["VIDEOANOM_HOME"] = str(Path(settings.home).resolve())
    env[API_KEY_ENV] = api_key
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def service_smoke_test(
    settings: Settings,
    request: SmokeRequest,
    *,
    startup_timeout: float = 300.0,
    request_timeout: float = 600.0,
    not_ready_grace: float = NOT_READY_GRACE,
) -> SmokeResult:
    """Start the real service, score ``request.video`` through it, check the answer, stop it."""
    started = time.monotonic()
    host, port = "127.0.0.1", free_port()
    base = f"http://{host}:{port}"
    api_key = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="videoanom-smoke-") as tmp:
        log_path = Path(tmp) / "serve.log"
        command = service_command(host, port, request.location)
        logger.info("smoke test: starting the service on %s (%s)", base, " ".join(command[1:]))
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                command,
                env=service_environment(settings, api_key),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        log_tail = ""
        try:
            problem = _wait_until_ready(process, base, startup_timeout, not_ready_grace)
            if problem is not None:
                log_tail = _tail(log_path)
            else:
                problem = _score_and_check(base, api_key, request, request_timeout)
        finally:
            stop_process(process)
    seconds = time.monotonic() - started
    if problem is not None:
        return SmokeResult(False, " ".join(problem.split()), seconds, log_tail)
    detail = (
        f"the service scored {request.video.name} ({request.n_frames} frames) with "
        f"{request.versions.get('classifier')} and {request.versions.get('prednet')}, "
        f"same scores as the gate"
    )
    return SmokeResult(True, detail, seconds)


def stop_process(process: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(grace)


def check_response(body: Any, request: SmokeRequest) -> str | None:
    """Why the service's answer to the smoke request is wrong, or None if it is right."""
    if not isinstance(body, dict):
        return "the answer is not a JSON object"
    if not _same_location(body.get("location"), request.location):
        return f"the answer names location {body.get('location')!r}, not {request.location!r}"
    models = body.get("models")
    if not isinstance(models, dict):
        return "the answer has no 'models' object"
    for role, expected in request.versions.items():
        if str(models.get(role)) != expected:
            return (
                f"the service scored with {role} {models.get(role)!r}, not the candidate's "
                f"{expected!r}"
            )
    frames = body.get("frames")
    if not isinstance(frames, list):
        return "the answer has no 'frames' list"
    if len(frames) != request.n_frames:
        return f"{len(frames)} frame entries for a clip of {request.n_frames} frames"
    scores = []
    for number, entry in enumerate(frames, start=1):
        if not isinstance(entry, dict) or entry.get("frame") != number:
            return f"entry {number} is {entry!r}: expected frame {number}"
        score = entry.get("anomaly_score")
        if not isinstance(score, int | float) or not (0.0 <= score <= 1.0) or math.isnan(score):
            return f"frame {number}: anomaly_score {score!r} is not a number in [0, 1]"
        if entry.get("is_anomaly") not in (0, 1) or isinstance(entry.get("is_anomaly"), bool):
            return f"frame {number}: is_anomaly {entry.get('is_anomaly')!r} is not 0 or 1"
        scores.append(float(score))
    if request.scores is not None:
        diff = float(np.max(np.abs(np.asarray(scores) - np.asarray(request.scores, float))))
        if diff > SCORE_TOLERANCE:
            return (
                f"the service's scores differ from the gate's by up to {diff:.4f} "
                f"(tolerance {SCORE_TOLERANCE})"
            )
    return None


def _same_location(answered: Any, location: str) -> bool:
    """The service names a location by its ``location`` tag: any spelling of the same slug."""
    try:
        return normalise_location(str(answered)) == normalise_location(location)
    except InvalidLocationName:
        return False


# ------------------------------------------------------------------------------ HTTP
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(
    method: str,
    url: str,
    timeout: float,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """(status, body) of one request; HTTP error statuses are answers, not exceptions."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with _OPENER.open(req, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _wait_until_ready(
    process: subprocess.Popen, base: str, timeout: float, grace: float = NOT_READY_GRACE
) -> str | None:
    """None once ``GET /healthz`` answers 200, else why not.

    The service loads its models before it listens, so a service that answers but is not
    ready (503: no location could be loaded) gets only ``grace`` seconds more.
    """
    deadline = time.monotonic() + timeout
    answer = None
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            return f"the service exited with status {code} before it was ready"
        try:
            status, body = _http("GET", f"{base}/healthz", timeout=5)
            if status == 200:
                return None
            if answer is None:
                deadline = min(deadline, time.monotonic() + grace)
            answer = f"{status} {body[:200].decode(errors='replace')}"
        except (urllib.error.URLError, OSError):
            pass  # not listening yet
        time.sleep(0.5)
    if answer is not None:
        return f"GET /healthz answered {answer}: the service cannot score"
    return f"GET /healthz did not answer within {timeout:.0f} s"


def _score_and_check(base: str, api_key: str, request: SmokeRequest, timeout: float) -> str | None:
    path = f"/score/{urllib.parse.quote(request.location, safe='')}"
    body, content_type = _multipart_file("file", request.video)
    try:
        status, _ = _http("GET", f"{base}/locations", 60)
        if status not in (401, 403):
            return f"GET /locations without the API key answered {status}, not 401/403"
        status, raw = _http(
            "POST",
            base + path,
            timeout,
            body,
            {"Content-Type": content_type, API_KEY_HEADER: api_key},
        )
    except (urllib.error.URLError, OSError) as error:
        return f"POST {path} failed: {error}"
    if status != 200:
        return f"POST {path} answered {status}: {raw[:500].decode(errors='replace')}"
    try:
        answer = json.loads(raw)
    except json.JSONDecodeError:
        return f"POST {path} answered 200 with a body that is not JSON"
    return check_response(answer, request)


def _multipart_file(field: str, path: Path) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in path.name)
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = head + Path(path).read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _tail(path: Path, limit: int = 1500) -> str:
    """The end of the service's log, without its access lines (our own /healthz polls)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    text = "\n".join(line for line in lines if "uvicorn.access" not in line).strip()
    return ("..." + text[-limit:]) if len(text) > limit else (text or "(empty)")
