"""Shared fixtures: tiny clips written the way users upload them."""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The tests make their own registries and datastores: a developer's settings (a team MLflow
# server, an Azure workspace) must never reach the commands they start.
for _name in [n for n in os.environ if n.startswith(("VIDEOANOM_", "AML_", "MLFLOW_"))]:
    del os.environ[_name]


@pytest.fixture(autouse=True)
def _restore_environment():
    """Give every test the environment the session started with.

    ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI`` so that subprocesses
    inherit it: without this, a test that tracked in-process would send the ``videoanom``
    commands of every later test to its registry (they then saw version 2 where they made 1).
    """
    saved = dict(os.environ)
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        mlflow.set_tracking_uri(None)  # forget the URI (it unsets the variable too)
    os.environ.clear()
    os.environ.update(saved)


def moving_square_frames(
    n: int, height: int = 48, width: int = 64, seed: int = 0
) -> list[np.ndarray]:
    """BGR frames of a bright square moving right over a noisy static background."""
    rng = np.random.default_rng(seed)
    background = rng.integers(60, 120, size=(height, width, 3), dtype=np.uint8)
    frames = []
    for t in range(n):
        frame = background.copy()
        x = (4 + 2 * t) % (width - 8)
        frame[10:18, x : x + 8] = 230
        noise = rng.normal(0, 3, frame.shape)
        frames.append(np.clip(frame + noise, 0, 255).astype(np.uint8))
    return frames


def write_frame_folder(
    folder: Path, frames: list[np.ndarray], ext: str = ".png", pattern: str = "frame_{}"
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames, start=1):
        cv2.imwrite(str(folder / (pattern.format(i) + ext)), frame)
    return folder


def write_video(path: Path, frames: list[np.ndarray], fourcc: str = "MJPG", fps: int = 10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened(), f"cannot write {path}"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


# Settings that make a whole `videoanom run` take well under a minute on tiny data.
TINY_RUN = {
    "VIDEOANOM_IMAGE_HEIGHT": "32",
    "VIDEOANOM_IMAGE_WIDTH": "40",
    "VIDEOANOM_NT": "6",
    "VIDEOANOM_WINDOWS_PER_EPOCH": "24",
}


def write_tiny_demo(store: Path) -> Path:
    """One demo location (demo-plaza): 3 train and 2 test clips of 20 frames at 48x64."""
    from videoanom.data.demo import write_demo_datastore

    write_demo_datastore(
        store,
        locations=1,
        train_clips=3,
        test_clips=2,
        frames_per_clip=20,
        height=48,
        width=64,
        progress=False,
    )
    return store


def wait_until(predicate, timeout: float = 10.0, poll: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return bool(predicate())


def assert_held_by_this_process(holder: dict | None, owner: str) -> None:
    """A claim holder record naming this process, this host and the claim's owner token."""
    import os
    import socket

    assert holder is not None
    assert holder["pid"] == os.getpid()
    assert holder["host"] == socket.gethostname()
    assert holder["owner"] == owner
    assert abs(holder["created"] - time.time()) < 60


def tree_digest(root: Path) -> str:
    """Hash of every file's path, content and mtime under ``root`` (to prove read-only)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
        digest.update(str(path.stat().st_mtime_ns).encode())
    return digest.hexdigest()


@pytest.fixture
def mixed_location(tmp_path: Path) -> Path:
    """A location with frame folders, a video clip, labels.csv and a stray file."""
    root = tmp_path / "store"
    loc = root / "cam-1"
    for i in range(3):
        write_frame_folder(loc / "train" / f"clip{i + 1}", moving_square_frames(12, seed=i))
    write_video(loc / "train" / "clip10.avi", moving_square_frames(12, seed=9))
    write_frame_folder(loc / "test" / "t1", moving_square_frames(10, seed=20))
    write_video(loc / "test" / "t2.avi", moving_square_frames(10, seed=21))
    (loc / "test" / "labels.csv").write_text("clip,start_frame,end_frame\nt2,3,5\nt2,9,9\n")
    (loc / "README.txt").write_text("notes")
    return root


# --- Azurite (Azure Blob emulator) for the azureblob:// datastore tests ---------------------


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory):
    """Connection string of a private in-memory Azurite blob service for this test session."""
    from azurite_server import AzuriteError, start, stop

    try:
        server = start(tmp_path_factory.mktemp("azurite"))
    except AzuriteError as error:
        pytest.fail(str(error), pytrace=False)
    try:
        yield server.connection_string
    finally:
        stop(server)


def tiny_prednet(size: int = 16, output_mode: str = "error"):
    """An untrained three-layer PredNet on ``size`` x ``size`` grey frames, seeded."""
    import keras

    from videoanom.prednet import PredNet

    keras.utils.set_random_seed(0)
    return PredNet(
        frame_shape=(size, size, 1),
        stack_sizes=(1, 4, 8),
        A_filt_sizes=(3, 3),
        Ahat_filt_sizes=(3, 3, 3),
        R_filt_sizes=(3, 3, 3),
        layer_loss_weights=(1.0, 0.0, 0.0),
        output_mode=output_mode,
    )
