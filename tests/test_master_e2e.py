"""``videoanom master`` end to end, as separate processes, on a local folder and on Azurite.

Each test runs real pipelines with tiny settings: two masters racing over a datastore
with good, broken, still-uploading and unsafely named locations; and a watching master
that picks up an upload, is killed mid-pipeline, and whose successor resumes it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from conftest import TINY_RUN, tree_digest, write_tiny_demo

pytestmark = pytest.mark.slow

LOCATION = "demo-plaza"
UNSAFE = "cam\\..\\..\\escape"  # a Windows-style path escape: must never touch a path
CORRUPT_CLIP = b"RIFF\x00\x00\x00\x00AVI this is not a video"


@dataclass
class Store:
    """One datastore under test: its URI, the environment to reach it, and a writer."""

    uri: str
    env: dict[str, str]
    root: Path | None = None  # local folder
    container: object | None = None  # azure ContainerClient

    def put(self, name: str, data: bytes) -> None:
        if self.root is not None:
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            self.container.upload_blob(name, data, overwrite=True)

    def put_tree(self, folder: Path, location: str) -> None:
        """Upload a location's files, ``_READY`` last (as an uploader is asked to)."""
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        for path in files:
            self.put(f"{location}/{path.relative_to(folder).as_posix()}", path.read_bytes())
        self.put(f"{location}/_READY", b"")

    def digest(self) -> str:
        """Every file's name and version: proves the masters never wrote to the store."""
        if self.root is not None:
            return tree_digest(self.root)
        blobs = self.container.list_blobs()
        return json.dumps(sorted((b.name, b.etag, str(b.last_modified)) for b in blobs))


@pytest.fixture(params=["local", "azureblob"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "local":
        root = tmp_path / "store"
        root.mkdir()
        yield Store(str(root), {}, root=root)
        return
    from azure.storage.blob import BlobServiceClient

    connection = request.getfixturevalue("azurite")
    service = BlobServiceClient.from_connection_string(connection)
    container = service.get_container_client(f"m{uuid.uuid4().hex[:12]}")
    container.create_container()
    env = {"AZURE_STORAGE_CONNECTION_STRING": connection, "VIDEOANOM_CLAIM_LEASE_SECONDS": "15"}
    yield Store(f"azureblob://{container.container_name}", env, container=container)
    container.delete_container()


@pytest.fixture(scope="module")
def tiny_location(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files of one tiny demo location, written once for every test here."""
    return write_tiny_demo(tmp_path_factory.mktemp("tiny")) / LOCATION


def master_env(store: Store, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDEOANOM_", "MLFLOW_"))}
    return {**env, **TINY_RUN, **store.env, "VIDEOANOM_HOME": str(home)}


class Master:
    """A ``videoanom master`` process whose output goes to files (a pipe could fill up)."""

    def __init__(self, store: Store, home: Path, log_dir: Path, *args: str) -> None:
        command = [sys.executable, "-m", "videoanom", "master", "--datastore", store.uri, *args]
        log_dir.mkdir(parents=True, exist_ok=True)
        stem = log_dir / f"master-{uuid.uuid4().hex[:6]}"
        self.out_path, self.err_path = stem.with_suffix(".out"), stem.with_suffix(".err")
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.process = subprocess.Popen(
                command,
                stdout=out,
                stderr=err,
                text=True,
                env=master_env(store, home),
                start_new_session=True,  # its own process group: killed with its steps
            )

    def wait(self, timeout: float) -> tuple[int, str, str]:
        code = self.process.wait(timeout=timeout)
        return code, self.out_path.read_text(), self.err_path.read_text()

    def stderr_tail(self) -> str:
        return self.err_path.read_text()[-3000:]

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


def versions(home: Path, name: str) -> list[int]:
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    return sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))


def status_json(store: Store, home: Path) -> dict[str, dict]:
    out = subprocess.run(
        [sys.executable, "-m", "videoanom", "status", "--json", "--datastore", store.uri],
        capture_output=True,
        text=True,
        env=master_env(store, home),
        timeout=120,
        check=True,
    )
    return {record["location"]: record for record in json.loads(out.stdout)}


def wait_for(predicate, timeout: float, what: str, master: Master):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if master.process.poll() is not None:
            code = master.process.returncode
            pytest.fail(f"master exited ({code}) before {what}: {master.stderr_tail()}")
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}: {master.stderr_tail()}")


def read_record(home: Path, location: str) -> dict:
    try:
        return json.loads((home / "locations" / location / "state.json").read_text())
    except (OSError, ValueError):
        return {}


def test_two_masters_train_each_location_once_and_isolate_failures(
    store: Store, tiny_location: Path, tmp_path: Path
) -> None:
    store.put_tree(tiny_location, LOCATION)
    # Every train clip undecodable: data_prep has nothing to train on.
    store.put("broken-clip/train/clip01.avi", CORRUPT_CLIP)
    store.put("broken-clip/_READY", b"")
    # Good clips, unreadable labels.
    store.put_tree(tiny_location, "bad-labels")
    store.put("bad-labels/test/labels.csv", b"\x00\xffnot,a header\n1,2\n")
    # Still uploading: clips but no _READY, and the quiet period is long.
    a_frame = next(tiny_location.glob("train/*/*.png")).read_bytes()
    store.put("uploading/train/c1/0001.png", a_frame)
    store.put("uploading/train/c1/0002.png", a_frame)
    store.put(f"{UNSAFE}/train/c1/0001.png", b"x")
    store.put(f"{UNSAFE}/_READY", b"")
    before = store.digest()
    home = tmp_path / "home"

    args = ("--once", "--quiet-seconds", "3600", "--workers", "2", "--max-retries", "1")
    masters = [Master(store, home, tmp_path / "logs", *args) for _ in range(2)]
    results = [m.wait(timeout=900) for m in masters]
    stdout = "\n".join(out for _, out, _ in results)
    assert all(code in (0, 1) for code, _, _ in results), [err[-3000:] for *_, err in results]

    # Exactly one pipeline per location, however the two masters interleaved.
    assert versions(home, f"prednet-{LOCATION}") == [1]
    assert versions(home, f"anomaly-classifier-{LOCATION}") == [1]
    assert stdout.count("succeeded: models:/anomaly-classifier-demo-plaza/1") == 1
    for location in ("broken-clip", "bad-labels"):
        assert versions(home, f"prednet-{location}") == []
        failed = [line for line in stdout.splitlines() if line.startswith(f"{location} ")]
        assert sum("failed" in line for line in failed) == 1, stdout

    status = status_json(store, home)
    good = status[LOCATION]
    assert good["state"] == "succeeded" and good["pipeline_id"].startswith("demo-plaza-")
    assert {s["state"] for s in good["steps"].values()} == {"succeeded"}
    assert good["models"] == {"prednet": 1, "classifier": 1}
    assert 0.0 <= good["metrics"]["auc"] <= 1.0

    broken = status["broken-clip"]
    assert broken["state"] == "failed" and broken["error"]["step"] == "data_prep"
    assert "no usable train clip" in broken["error"]["reason"]
    assert "clip01" in broken["error"]["reason"]
    labels = status["bad-labels"]
    assert labels["state"] == "failed" and labels["error"]["step"] == "data_prep"
    assert "labels.csv" in labels["error"]["reason"]

    assert status["uploading"]["state"] == "new" and not status["uploading"]["ready"]
    assert "uploading" in stdout and "not ready" in stdout
    if store.root is not None:
        assert status[UNSAFE]["state"] == "refused" and "path separator" in stdout
    else:  # Blob storage turns "\\" into "/": a location "cam" whose paths all escape it
        assert status["cam"]["state"] == "new" and "no train clip" in status["cam"]["ready_reason"]
    assert not any("escape" in p.name for p in home.rglob("*"))

    # A later poll has nothing to do: trained, given up after one failure, still uploading.
    code, out, err = Master(store, home, tmp_path / "logs", *args).wait(timeout=300)
    assert code == 0, err[-3000:]
    assert "succeeded" not in out and "failed:" not in out
    assert "already trained" in out and "gave up after 1 failures" in out
    assert versions(home, f"prednet-{LOCATION}") == [1]
    assert store.digest() == before


def test_watch_picks_up_an_upload_and_a_killed_pipeline_resumes(
    store: Store, tiny_location: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    watch_args = ("--watch", "--interval", "1", "--quiet-seconds", "3600")
    first = Master(store, home, tmp_path / "logs", *watch_args)
    try:
        time.sleep(2)  # the master is polling an empty datastore
        store.put_tree(tiny_location, LOCATION)

        def prednet_registered() -> bool:
            steps = read_record(home, LOCATION).get("steps", {})
            return steps.get("register_prednet", {}).get("state") == "succeeded"

        wait_for(prednet_registered, 600, "register_prednet to finish", first)
    finally:
        first.kill()  # SIGKILL to the master and the step it is running
    killed = read_record(home, LOCATION)
    assert killed["state"] == "running"
    assert status_json(store, home)[LOCATION]["state"] == "interrupted"

    second = Master(store, home, tmp_path / "logs", *watch_args)
    try:

        def finished() -> dict:
            record = read_record(home, LOCATION)
            return record if record.get("state") in ("succeeded", "failed") else {}

        # On Azure Blob the dead master's lease must expire first (15 s here).
        record = wait_for(finished, 600, "the resumed pipeline", second)
        second.process.send_signal(signal.SIGTERM)
        code, _, err = second.wait(timeout=60)
    finally:
        second.kill()
    assert code == 0, err[-3000:]
    assert record["state"] == "succeeded", record
    assert record["pipeline_id"] != killed["pipeline_id"]
    steps = {name: step["state"] for name, step in record["steps"].items()}
    assert steps["data_prep"] == steps["train"] == steps["register_prednet"] == "reused"
    assert steps["batch_scoring"] == steps["register_classifier"] == "succeeded"
    assert versions(home, f"prednet-{LOCATION}") == [1]
    assert versions(home, f"anomaly-classifier-{LOCATION}") == [1]
