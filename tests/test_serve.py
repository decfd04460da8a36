"""The scoring service (``videoanom serve``, CONTRACT section 2b).

Fast tests check the payload functions and the application with stand-in models. The slow
ones train one tiny location with the real pipeline (``videoanom run``), serve it with
uvicorn on a free local port and talk to it over HTTP, then fuzz it from its own OpenAPI
document with schemathesis.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import cv2
import httpx
import mlflow
import numpy as np
import pytest
import schemathesis
from conftest import TINY_RUN, moving_square_frames, wait_until, write_tiny_demo, write_video
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from ml_service.util.env_variables import Settings
from videoanom.data.frames import read_video
from videoanom.serving.app import _at_most, create_app
from videoanom.serving.models import ModelStore
from videoanom.serving.payloads import (
    PayloadError,
    PayloadTooLarge,
    decode_json_frames,
    frames_response,
    image_size,
)
from videoanom.serving.server import build_server, redact_uri
from videoanom.serving.upload import safe_file_name

LOCATION = "demo-plaza"
API_KEY = "test-key-7f3a"  # not a secret: only this test's service accepts it
KEY = {"X-API-Key": API_KEY}
MAX_UPLOAD_MB = 1
MAX_FRAMES = 25
slow = pytest.mark.slow


def png_b64(frame: np.ndarray) -> str:
    ok, data = cv2.imencode(".png", frame)
    assert ok
    return base64.b64encode(data.tobytes()).decode()


def jpeg_bytes(frame: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", frame)
    assert ok
    return data.tobytes()


def batch(frames: list[np.ndarray]) -> bytes:
    return json.dumps({"frames": [png_b64(f) for f in frames]}).encode()


# ------------------------------------------------------------------------------ payloads
def test_json_batch_decodes_png_and_jpeg_in_order() -> None:
    frames = moving_square_frames(3, height=24, width=32)
    payload = {
        "frames": [
            png_b64(frames[0]),
            base64.b64encode(jpeg_bytes(frames[1])).decode(),
            "data:image/png;base64," + png_b64(frames[2]),
        ]
    }
    decoded = decode_json_frames(payload, max_frames=10)
    assert [f.shape for f in decoded] == [(24, 32, 3)] * 3
    assert decoded[0].dtype == np.uint8
    np.testing.assert_array_equal(decoded[0], frames[0])  # PNG is lossless
    np.testing.assert_array_equal(decoded[2], frames[2])
    assert image_size(jpeg_bytes(frames[1])) == (32, 24)


@pytest.mark.parametrize(
    ("payload", "error", "message"),
    [
        ([], PayloadError, "must be an object"),
        ({"images": []}, PayloadError, 'no "frames" field'),
        ({"frames": "abc"}, PayloadError, "must be a list"),
        ({"frames": []}, PayloadError, "is empty"),
        ({"frames": [7]}, PayloadError, r"frames\[0\] is a number"),
        ({"frames": ["@@@"]}, PayloadError, r"frames\[0\] is not valid base64"),
        ({"frames": [base64.b64encode(b"hello").decode()]}, PayloadError, "not a PNG or JPEG"),
        ({"frames": ["A" * 40] * 11}, PayloadTooLarge, "at most 10 frames"),
    ],
)
def test_json_batch_errors_name_the_problem(payload, error, message: str) -> None:
    with pytest.raises(error, match=message):
        decode_json_frames(payload, max_frames=10)


def test_json_batch_frame_errors_name_the_frame() -> None:
    small, large = moving_square_frames(1, 24, 32)[0], moving_square_frames(1, 48, 64)[0]
    with pytest.raises(PayloadError, match=r"frames\[1\] is 64x48 pixels but frames\[0\] is 32x24"):
        decode_json_frames({"frames": [png_b64(small), png_b64(large)]}, max_frames=10)
    truncated = base64.b64encode(base64.b64decode(png_b64(small))[:40]).decode()
    with pytest.raises(PayloadError, match=r"frames\[1\] cannot be decoded"):
        decode_json_frames({"frames": [png_b64(small), truncated]}, max_frames=10)
    with pytest.raises(PayloadError, match="truncated or malformed JPEG"):
        image_size(b"\xff\xd8\xff\xe0\x00\x10JFIF", "frames[0]")
    # a header claiming a huge image is refused before anything is decoded
    header = bytearray(base64.b64decode(png_b64(small))[:33])
    header[16:24] = (100_000).to_bytes(4, "big") * 2
    with pytest.raises(PayloadTooLarge, match="100000x100000"):
        image_size(bytes(header), "frames[0]")
    with pytest.raises(PayloadTooLarge, match="MiB"):
        decode_json_frames({"frames": [png_b64(small)] * 3}, 10, max_decoded_bytes=1000)


def test_frames_response_is_the_contract_shape() -> None:
    body = frames_response(
        LOCATION, {"classifier": "c/2", "prednet": "p/1"}, [0.1234567, 1.0], [0, 1]
    )
    assert body == {
        "location": LOCATION,
        "models": {"classifier": "c/2", "prednet": "p/1"},
        "frames": [
            {"frame": 1, "anomaly_score": 0.123457, "is_anomaly": 0},
            {"frame": 2, "anomaly_score": 1.0, "is_anomaly": 1},
        ],
    }
    with pytest.raises(ValueError, match="2 scores but 1"):
        frames_response(LOCATION, {}, [0.1, 0.2], [0])


def test_small_helpers() -> None:
    assert safe_file_name("../../etc/passwd") == "passwd"
    assert safe_file_name("C:\\clips\\cam 1.avi") == "cam_1.avi"
    assert safe_file_name("") == "upload.video"
    assert redact_uri("https://user:s3cret@host/path") == "https://user:***@host/path"
    assert redact_uri("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert list(_at_most(iter(range(3)), 3, "clip.avi")) == [0, 1, 2]
    with pytest.raises(PayloadTooLarge, match=r"clip\.avi has more than 3 frames"):
        list(_at_most(iter(range(5)), 3, "clip.avi"))


def test_help_works_and_does_not_import_the_web_stack() -> None:
    code = (
        "import sys\n"
        "from videoanom.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted({'fastapi', 'uvicorn', 'tensorflow'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("[]")
    serve = subprocess.run(
        [sys.executable, "-m", "videoanom", "serve", "--help"], capture_output=True, text=True
    )
    assert serve.returncode == 0 and "--port" in serve.stdout and "--locations" in serve.stdout


# ------------------------------------------------------------------ app with stand-in models
class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(self.format(record))


def _start(server) -> tuple[str, threading.Thread]:
    """Run a ``uvicorn.Server`` (port 0: the OS picks a free one) in a thread."""
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    assert wait_until(lambda: server.started or not thread.is_alive(), timeout=180)
    assert server.started, "the service did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}", thread


def _stop(server, thread: threading.Thread) -> None:
    server.should_exit = True
    thread.join(timeout=30)
    assert not thread.is_alive()


@contextmanager
def serving(app) -> Iterator[httpx.Client]:
    """``app`` under uvicorn on a free local port, and an HTTP client for it."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None))
    url, thread = _start(server)
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client
    finally:
        _stop(server, thread)


def _fake_models(name: str) -> SimpleNamespace:
    if name == "broken-cam":
        raise RuntimeError("weights file is corrupt")
    # versions without "/N": the store does not ask the registry for the location's name;
    # prednet=None: scoring fails unexpectedly (the 500 path)
    return SimpleNamespace(
        location=name, prednet=None, detector=None, versions={"classifier": "c"}, selected="latest"
    )


def test_a_failed_location_is_reported_and_never_stops_the_others(tmp_path: Path) -> None:
    store = ModelStore(loader=_fake_models, warmup=False)
    settings_ = Settings.load({"home": tmp_path}, env_file=None, environ={})
    store.load(settings_.tracking_uri, ["cam-1", "broken-cam"])
    mlflow.set_tracking_uri("")
    with serving(create_app(settings_, model_store=store, api_key="")) as client:
        assert client.get("/healthz").json() == {"status": "ok", "locations": 1}
        listed = client.get("/locations").json()
        assert [x["location"] for x in listed["locations"]] == ["cam-1"]
        assert listed["failed"] == [
            {"location": "broken-cam", "error": "RuntimeError: weights file is corrupt"}
        ]
        failed = client.post("/score/Broken Cam", content=b"{}", headers=_json)
        assert failed.status_code == 503 and "failed to load" in failed.json()["detail"]
        unknown = client.post("/score/elsewhere", content=b"{}", headers=_json)
        assert unknown.status_code == 404
        assert unknown.json()["detail"] == "unknown location 'elsewhere': this service scores cam-1"
        # an unexpected error: logged, answered 500 with a generic message
        frames = moving_square_frames(2, 24, 32)
        crashed = client.post("/score/CAM_1", content=batch(frames), headers=_json)
        assert crashed.status_code == 500
        assert "internal error" in crashed.json()["detail"]
        assert "frame_shape" not in crashed.text


def test_health_is_503_without_models(tmp_path: Path) -> None:
    settings_ = Settings.load({"home": tmp_path}, env_file=None, environ={})
    store = ModelStore(warmup=False)
    store.load(settings_.tracking_uri)  # no registry yet: nothing to serve
    mlflow.set_tracking_uri("")
    with serving(create_app(settings_, model_store=store, api_key="k")) as client:
        health = client.get("/healthz")
        assert health.status_code == 503 and health.json()["locations"] == 0
        assert client.get("/locations").status_code == 401


_json = {"content-type": "application/json"}


# ------------------------------------------------------------------ the real service
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """One tiny location trained by the real pipeline, with the smallest budget."""
    root = tmp_path_factory.mktemp("serve")
    store, home = write_tiny_demo(root / "ds"), root / "home"
    args = ["run", "--location", LOCATION, "--datastore", str(store), "--home", str(home)]
    result = subprocess.run(
        [sys.executable, "-m", "videoanom", *args, "--trials", "1", "--max-epochs", "1"],
        capture_output=True,
        text=True,
        env={**os.environ, **TINY_RUN},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    base = Settings.load({"home": home}, env_file=None, environ={})
    yield SimpleNamespace(
        store=store,
        root=root,
        settings=dataclasses.replace(base, max_upload_mb=MAX_UPLOAD_MB, max_frames=MAX_FRAMES),
    )
    mlflow.set_tracking_uri("")


@pytest.fixture(scope="module")
def service(trained: SimpleNamespace) -> Iterator[SimpleNamespace]:
    """``videoanom serve``'s server (build_server) with an API key, on a free local port."""
    logs = _Collect()
    logging.getLogger().addHandler(logs)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VIDEOANOM_API_KEY", API_KEY)
        server = build_server(trained.settings, "127.0.0.1", 0)
    # the key was read when the app was created: it is required though the variable is gone
    url, thread = _start(server)
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            yield SimpleNamespace(url=url, client=client, logs=logs, trained=trained)
    finally:
        _stop(server, thread)
        logging.getLogger().removeHandler(logs)


def _video(trained: SimpleNamespace) -> Path:
    return next((trained.store / LOCATION / "test").glob("*.mp4"))


def _post_video(client: httpx.Client, path: Path, location: str = LOCATION, **kw):
    with open(path, "rb") as handle:
        return client.post(
            f"/score/{location}", files={"file": (path.name, handle, "video/mp4")}, **kw
        )


@slow
def test_scores_an_uploaded_video_frame_by_frame(service: SimpleNamespace) -> None:
    video = _video(service.trained)
    response = _post_video(service.client, video, headers=KEY)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"location", "models", "frames"}
    assert body["location"] == LOCATION
    assert body["models"] == {
        "classifier": f"anomaly-classifier-{LOCATION}/1",
        "prednet": f"prednet-{LOCATION}/1",
    }
    n = sum(1 for _ in read_video(video))
    assert [f["frame"] for f in body["frames"]] == list(range(1, n + 1))
    assert all(0 <= f["anomaly_score"] <= 1 for f in body["frames"])
    assert {f["is_anomaly"] for f in body["frames"]} <= {0, 1}

    # Requests at once are scored one at a time per model, with the same results.
    with ThreadPoolExecutor(3) as pool:
        again = list(pool.map(lambda _: _post_video(service.client, video, headers=KEY), range(3)))
    assert [r.status_code for r in again] == [200] * 3
    assert all(r.json() == body for r in again)

    # The same frames as a JSON batch of PNGs (lossless): the same scores.
    frames = list(read_video(video))
    as_json = service.client.post(
        "/score/Demo Plaza", content=batch(frames), headers={**KEY, **_json}
    )
    assert as_json.status_code == 200, as_json.text
    assert as_json.json()["location"] == LOCATION
    np.testing.assert_allclose(
        [f["anomaly_score"] for f in as_json.json()["frames"]],
        [f["anomaly_score"] for f in body["frames"]],
        atol=1e-5,
    )


@slow
def test_the_api_key_is_required_everywhere_but_healthz(service: SimpleNamespace) -> None:
    client = service.client
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok", "locations": 1}
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": API_KEY + "x"}):
        for method, path in (("GET", "/locations"), ("GET", "/openapi.json"), ("GET", "/docs")):
            denied = client.request(method, path, headers=headers)
            assert denied.status_code == 401, (path, headers)
            assert denied.json() == {"detail": "missing or wrong X-API-Key header"}
        denied = _post_video(client, _video(service.trained), headers=headers)
        assert denied.status_code == 401
    assert client.get("/locations", headers=KEY).status_code == 200
    spec = client.get("/openapi.json", headers=KEY).json()
    scheme = spec["components"]["securitySchemes"]["APIKeyHeader"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "X-API-Key")
    assert spec["paths"]["/score/{location}"]["post"]["security"] == [{"APIKeyHeader": []}]
    assert "security" not in spec["paths"]["/healthz"]["get"]
    assert not any(API_KEY in m for m in service.logs.messages), "the key was logged"


@slow
def test_limits_answer_413(service: SimpleNamespace, tmp_path: Path) -> None:
    client, score = service.client, f"/score/{LOCATION}"
    json_headers = {**KEY, **_json}
    big = json.dumps({"frames": ["A" * (MAX_UPLOAD_MB * 2**20)]}).encode()
    too_big = client.post(score, content=big, headers=json_headers)
    assert too_big.status_code == 413 and "larger than 1 MB" in too_big.json()["detail"]
    # no Content-Length (chunked): refused while streaming
    chunks = (b" " * 65536 for _ in range(24))
    streamed = client.post(score, content=chunks, headers=json_headers)
    assert streamed.status_code == 413 and "larger than 1 MB" in streamed.json()["detail"]
    upload = client.post(
        score, files={"file": ("big.avi", os.urandom(3 * 2**20), "video/x-msvideo")}, headers=KEY
    )
    assert upload.status_code == 413
    # and the connection still works afterwards
    assert client.get("/healthz").status_code == 200

    tiny = moving_square_frames(MAX_FRAMES + 1, 16, 16)
    many = client.post(score, content=batch(tiny), headers=json_headers)
    assert many.status_code == 413
    assert many.json()["detail"].startswith(f"{MAX_FRAMES + 1} frames sent")
    long_video = write_video(tmp_path / "long.avi", moving_square_frames(MAX_FRAMES + 5))
    long = _post_video(client, long_video, headers=KEY)
    assert long.status_code == 413 and f"at most {MAX_FRAMES} frames" in long.json()["detail"]


def _multipart(field: str, filename: str, data: bytes, boundary: str = "b0und") -> bytes:
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"'
            f"\r\nContent-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )


_MP = "multipart/form-data; boundary=b0und"
# FFmpeg would follow a playlist to other files: it must never get one
_PLAYLIST = b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/hostname\n#EXT-X-ENDLIST\n"
_small = moving_square_frames(2, 24, 32)
_MALFORMED = {
    "no boundary": ("multipart/form-data", _multipart("file", "a.avi", b"x"), 400, "boundary"),
    "not multipart": (_MP, b"garbage", 400, "malformed multipart body"),
    "cut short": (_MP, _multipart("file", "a.avi", b"data")[:-8], 400, "closing boundary"),
    "no file field": (_MP, _multipart("video", "a.avi", b"x"), 422, "no 'file' field"),
    "empty file": (_MP, _multipart("file", "a.avi", b""), 422, "is empty"),
    "not a video": (_MP, _multipart("file", "notes.txt", b"hello" * 99), 422, "notes.txt is not"),
    "playlist": (_MP, _multipart("file", "a.m3u8", _PLAYLIST), 422, "a.m3u8 is not a video"),
    "broken AVI": (
        _MP,
        _multipart("file", "a.avi", b"RIFF\0\0\0\0AVI " + b"\0" * 64),
        422,
        "a.avi",
    ),
    "two files": (
        _MP,
        _multipart("file", "a.avi", b"x")[: -len("--\r\n")]
        + b"\r\n"
        + _multipart("file", "b.avi", b"y")[len("--b0und\r\n") :],
        400,
        "one video per request",
    ),
    "JSON syntax": ("application/json", b'{"frames": [', 400, "not valid JSON"),
    "JSON nested": ("application/json", b"[" * 100_000, 400, "not valid JSON"),
    "JSON not UTF-8": ("application/json", b'{"frames": ["\xff"]}', 400, "not valid JSON"),
    "JSON empty": ("application/json", b"", 422, "empty body"),
    "JSON list": ("application/json", b"[]", 422, "must be an object"),
    "no frames": ("application/json", b'{"frames": []}', 422, "is empty"),
    "bad base64": ("application/json", b'{"frames": ["%%%"]}', 422, "not valid base64"),
    "not an image": ("application/json", b'{"frames": ["aGVsbG8="]}', 422, "not a PNG or JPEG"),
    "mixed sizes": (
        "application/json",
        json.dumps({"frames": [png_b64(_small[0]), png_b64(moving_square_frames(1)[0])]}).encode(),
        422,
        "frames[1] is 64x48 pixels but frames[0] is 32x24",
    ),
    "text/plain": ("text/plain", b"hello", 415, "unsupported content type 'text/plain'"),
    "no content type": ("", b"hello", 415, "unsupported content type '(none)'"),
}


@slow
@pytest.mark.parametrize("case", list(_MALFORMED), ids=list(_MALFORMED))
def test_malformed_input_is_a_4xx_with_detail(service: SimpleNamespace, case: str) -> None:
    content_type, body, status, message = _MALFORMED[case]
    headers = {**KEY, "content-type": content_type} if content_type else KEY
    response = service.client.post(f"/score/{LOCATION}", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


@slow
def test_unknown_location_is_404_listing_the_known_ones(service: SimpleNamespace) -> None:
    for name in ("nowhere", "demo plaza 2", "...", "a\u00e9"):
        response = service.client.post(f"/score/{name}", content=b"{}", headers={**KEY, **_json})
        assert response.status_code == 404, name
        assert response.json()["detail"].endswith(f"this service scores {LOCATION}")


@slow
def test_locations_report_latest_then_champion_after_a_restart(
    service: SimpleNamespace,
) -> None:
    listed = service.client.get("/locations", headers=KEY).json()
    assert listed == {
        "locations": [
            {
                "location": LOCATION,
                "slug": LOCATION,
                "classifier": f"anomaly-classifier-{LOCATION}/1",
                "prednet": f"prednet-{LOCATION}/1",
                "selected": "latest",
            }
        ],
        "failed": [],
    }
    assert any(
        f"no champion for {LOCATION} yet: serving latest version 1" in m
        for m in service.logs.messages
    )

    from videoanom.registry import set_alias

    settings_ = service.trained.settings
    mlflow.set_tracking_uri(settings_.tracking_uri)
    set_alias(f"anomaly-classifier-{LOCATION}", "champion", 1)
    app = create_app(settings_, model_store=ModelStore(warmup=False), api_key="")
    with serving(app) as client:
        restarted = client.get("/locations").json()
    assert restarted["locations"][0]["selected"] == "champion"
    assert restarted["locations"][0]["classifier"] == f"anomaly-classifier-{LOCATION}/1"


# ------------------------------------------------------------------ schemathesis
@slow
def test_no_server_errors_for_generated_requests(service: SimpleNamespace) -> None:
    """Requests generated from the served OpenAPI document, valid and invalid ones (a
    bounded number per operation, with the API key, deterministic): never a 5xx."""
    import requests

    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json", headers=KEY, timeout=30)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert sorted(f"{op.method.upper()} {op.path}" for op in operations) == [
        "GET /healthz",
        "GET /locations",
        "POST /score/{location}",
    ]
    session, statuses = requests.Session(), Counter()
    for operation in operations:
        # POST /score/{location} also with the served location, so bodies reach the decoders
        fixed = [{}, {"location": LOCATION}] if "{location}" in operation.path else [{}]
        for mode in GenerationMode:
            for path_parameters in fixed:
                strategy = operation.as_strategy(mode, path_parameters=path_parameters or None)

                @settings(
                    max_examples=25,
                    deadline=None,
                    database=None,
                    derandomize=True,
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=strategy)
                def call(case) -> None:
                    response = case.call(session=session, headers=KEY, timeout=60)
                    statuses[response.status_code] += 1
                    case.validate_response(response, checks=[not_a_server_error])

                try:
                    call()
                except Unsatisfiable:  # no invalid request exists (GET /healthz)
                    assert mode is GenerationMode.NEGATIVE
    assert not [s for s in statuses if s >= 500]
    assert statuses[200] and statuses[404] and statuses[422], statuses
