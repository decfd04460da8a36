"""The azureblob:// datastore against Azurite: listing cost, cache, read-only, data_prep parity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient, StorageStreamDownloader
from conftest import (
    TINY_RUN,
    moving_square_frames,
    write_frame_folder,
    write_tiny_demo,
    write_video,
)

from ml_service.pipelines.run_location import listing_salt
from ml_service.util.env_variables import Settings
from videoanom.cli import main
from videoanom.data.blob import AzureBlobDatastore, MissingConnectionString
from videoanom.data.dataset import load_split
from videoanom.data.datastore import DatastoreError, LocalDatastore, open_datastore
from videoanom.data.prepare import PrepConfig, prepare_location

VARIABLE = "AZURE_STORAGE_CONNECTION_STRING"


class RequestLog:
    """A ``raw_response_hook`` that records every request the client sends."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, list[str]], str]] = []

    def __call__(self, response) -> None:
        request = response.http_request
        parts = urlsplit(request.url)
        query = parse_qs(parts.query, keep_blank_values=True)
        body = response.http_response.text() if query.get("comp") == ["list"] else ""
        self.requests.append((request.method, unquote(parts.path), query, body))

    def lists(self) -> list[tuple[dict[str, list[str]], str]]:
        return [(q, body) for _m, _p, q, body in self.requests if q.get("comp") == ["list"]]

    def downloads(self) -> list[str]:
        return [p for m, p, q, _b in self.requests if m == "GET" and "comp" not in q]

    def clear(self) -> None:
        self.requests.clear()


@pytest.fixture
def container(azurite: str):
    """A fresh, empty container in the session's Azurite."""
    client = BlobServiceClient.from_connection_string(azurite).get_container_client(
        f"t{uuid.uuid4().hex[:12]}"
    )
    client.create_container()
    yield client
    client.delete_container()


def upload_tree(container: ContainerClient, root: Path, prefix: str) -> list[str]:
    """Upload every file under ``root`` to ``prefix/<relative path>``."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    names = [f"{prefix}/{p.relative_to(root).as_posix()}" for p in files]
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda nf: container.upload_blob(nf[0], nf[1].read_bytes()),
                zip(names, files, strict=True),
            )
        )
    return names


def upload_bytes(container: ContainerClient, items: dict[str, bytes]) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(lambda kv: container.upload_blob(kv[0], kv[1], overwrite=True), items.items())
        )


def snapshot(container: ContainerClient) -> list[tuple[str, str, object]]:
    """Every blob's name, ETag and last-modified time."""
    return [(b.name, b.etag, b.last_modified) for b in container.list_blobs()]


def blob_store(container: ContainerClient, prefix: str, conn: str, cache: Path, **hooks):
    uri = f"azureblob://{container.container_name}/{prefix}"
    return AzureBlobDatastore(uri, connection_string=conn, cache_dir=cache, **hooks)


def test_list_locations_is_one_delimited_request(
    container: ContainerClient, azurite: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    items = {f"cams/loc-{x}/train/c{i // 10}/f{i}.png": b"x" for x in "abc" for i in range(100)}
    unsafe = {"cams/---/train/a.png": b"x", "cams/ /train/a.png": b"x", "cams//a.png": b"x"}
    unsafe[f"cams/{'n' * 120}/train/a.png"] = b"x"
    hidden = {"cams/.staging/a.png": b"x", "cams/_tmp/a.png": b"x"}
    others = {"cams/README.txt": b"x", "elsewhere/loc-z/train/a.png": b"x"}
    upload_bytes(container, {**items, **unsafe, **hidden, **others})
    log = RequestLog()
    store = blob_store(container, "cams", azurite, tmp_path / "cache", raw_response_hook=log)

    assert store.list_locations() == ["loc-a", "loc-b", "loc-c"]

    assert len(log.requests) == 1, log.requests
    ((query, body),) = log.lists()
    assert query["delimiter"] == ["/"] and query["prefix"] == ["cams/"]
    assert "f0.png" not in body, "the listing must return folder prefixes, not every blob"
    skipped = [r.getMessage() for r in caplog.records if "skipping blob folder" in r.getMessage()]
    assert len(skipped) == 4, skipped
    assert not any(".staging" in m or "_tmp" in m for m in skipped)


def test_list_files_paths_sizes_and_etags(
    container: ContainerClient, azurite: str, mixed_location: Path, tmp_path: Path
) -> None:
    upload_tree(container, mixed_location, "site")
    store = blob_store(container, "site/", azurite, tmp_path / "cache")
    assert store.uri == f"azureblob://{container.container_name}/site"

    files = store.list_files("cam-1")
    local = LocalDatastore(mixed_location).list_files("cam-1")
    assert [(f.path, f.size) for f in files] == [(f.path, f.size) for f in local]
    assert "test/labels.csv" in [f.path for f in files]
    etags = {b.name: b.etag for b in container.list_blobs(name_starts_with="site/cam-1/")}
    assert {f.version for f in files} == set(etags.values())
    assert all(f.version == etags[f"site/cam-1/{f.path}"] for f in files)

    with pytest.raises(DatastoreError, match="not found"):
        store.list_files("cam-2")
    for path in ("../cam-2/x.png", "train/../../x", "/etc/passwd", "train\\..\\x"):
        with pytest.raises(DatastoreError, match="escapes"):
            store.local_path("cam-1", path)
    with pytest.raises(ValueError):
        store.list_files("../cam-1")


def test_cache_downloads_once_and_again_after_a_change(
    container: ContainerClient, azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload_bytes(container, {"p/cam/train/c1.avi": b"first version", "p/cam/train/c2.avi": b"2"})
    before = snapshot(container)
    cache, log = tmp_path / "cache", RequestLog()
    store = blob_store(container, "p", azurite, cache, raw_response_hook=log)
    store.list_files("cam")

    first = store.local_path("cam", "train/c1.avi")
    assert first.read_bytes() == b"first version"
    assert first.suffix == ".avi" and cache in first.parents
    assert store.local_path("cam", "train/c1.avi") == first
    assert log.downloads() == [
        "/devstoreaccount1/" + container.container_name + "/p/cam/train/c1.avi"
    ]

    # A new process (no listing yet) checks the ETag but does not download again.
    log.clear()
    fresh = blob_store(container, "p", azurite, cache, raw_response_hook=log)
    assert fresh.local_path("cam", "train/c1.avi") == first
    assert log.downloads() == [] and [m for m, *_ in log.requests] == ["HEAD"]
    assert snapshot(container) == before

    # The blob changes (new ETag): the next read downloads the new content.
    upload_bytes(container, {"p/cam/train/c1.avi": b"second version"})
    log.clear()
    store.list_files("cam")
    second = store.local_path("cam", "train/c1.avi")
    assert second != first and second.read_bytes() == b"second version"
    assert len(log.downloads()) == 1
    assert store.local_path("cam", "train/c1.avi") == second and len(log.downloads()) == 1

    # A download that dies half way leaves no file that could pass for the blob.
    def broken(self, stream):
        stream.write(b"half")
        raise OSError("connection reset")

    with monkeypatch.context() as patch:
        patch.setattr(StorageStreamDownloader, "readinto", broken)
        with pytest.raises(OSError):
            store.local_path("cam", "train/c2.avi")
    assert sorted(p.name for p in cache.rglob("*") if p.is_file()) == ["c1.avi", "c1.avi"]
    assert store.local_path("cam", "train/c2.avi").read_bytes() == b"2"
    assert {m for m, *_ in log.requests} <= {"GET", "HEAD"}, "the datastore must only read"


def test_listing_salt_follows_blob_versions(
    container: ContainerClient, azurite: str, tmp_path: Path
) -> None:
    upload_bytes(container, {"d/cam/train/a.avi": b"a", "d/cam/train/b.avi": b"b"})
    salt = listing_salt(blob_store(container, "d", azurite, tmp_path), "cam")
    assert listing_salt(blob_store(container, "d", azurite, tmp_path), "cam") == salt
    upload_bytes(container, {"d/cam/train/a.avi": b"a"})  # same bytes, new version
    assert listing_salt(blob_store(container, "d", azurite, tmp_path), "cam") != salt


def test_data_prep_from_blob_matches_the_local_folder(
    container: ContainerClient,
    azurite: str,
    mixed_location: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_frame_folder(
        mixed_location / "cam-1" / "train" / "clip4", moving_square_frames(8, seed=4)
    )
    write_video(
        mixed_location / "cam-1" / "test" / "t3.mp4", moving_square_frames(9, seed=5), "mp4v"
    )
    upload_tree(container, mixed_location, "p/q")
    before = snapshot(container)
    monkeypatch.setenv(VARIABLE, azurite)
    monkeypatch.setenv("VIDEOANOM_BLOB_CACHE", str(tmp_path / "blobcache"))
    config = PrepConfig(height=16, width=24, channels=1)

    store = open_datastore(f"azureblob://{container.container_name}/p/q")
    assert isinstance(store, AzureBlobDatastore)
    assert store.cache_dir == (tmp_path / "blobcache").resolve()
    assert store.list_locations() == ["cam-1"]
    from_blob = prepare_location(store, "cam-1", tmp_path / "blob", config)
    from_disk = prepare_location(LocalDatastore(mixed_location), "cam-1", tmp_path / "disk", config)

    assert from_blob.fingerprint == from_disk.fingerprint
    assert from_blob.datastore == f"azureblob://{container.container_name}/p/q"
    blob_manifest = json.loads((tmp_path / "blob" / "manifest.json").read_text())
    disk_manifest = json.loads((tmp_path / "disk" / "manifest.json").read_text())
    blob_manifest.pop("datastore"), disk_manifest.pop("datastore")
    assert blob_manifest == disk_manifest
    assert blob_manifest["has_labels"] and blob_manifest["label_source"] == "test/labels.csv"
    for split in ("train", "val", "test"):
        a = load_split(tmp_path / "blob" / "data.h5", split)
        b = load_split(tmp_path / "disk" / "data.h5", split)
        assert a.clips == b.clips
        for name in ("frames", "clip", "frame", "label"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert load_split(tmp_path / "blob" / "data.h5", "test").label.sum() == 4
    assert snapshot(container) == before, "the container must never be modified"


def test_missing_or_bad_connection_string_is_one_clear_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    container: ContainerClient,
    azurite: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv(VARIABLE, raising=False)
    with pytest.raises(MissingConnectionString) as error:
        open_datastore("azureblob://videos/cams")
    assert isinstance(error.value, ValueError) and VARIABLE in str(error.value)
    code = main(["run", "--location", "cam", "--datastore", "azureblob://videos", "--home", "h"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and VARIABLE in err[0], err

    # A malformed string or a wrong key: a clear error that never repeats the secret.
    monkeypatch.setenv(VARIABLE, "AccountKey=TOPSECRET42;")
    with pytest.raises(DatastoreError, match="not a valid") as error:
        open_datastore("azureblob://videos")
    assert "TOPSECRET42" not in str(error.value)
    wrong_key = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3Jvbmc="
    monkeypatch.setenv(
        VARIABLE, azurite.replace(azurite.split("AccountKey=")[1].split(";")[0], wrong_key)
    )
    with pytest.raises(DatastoreError, match=r"access denied|HTTP 403") as error:
        open_datastore(f"azureblob://{container.container_name}").list_locations()
    assert wrong_key not in str(error.value) and "\n" not in str(error.value)


def test_blob_cache_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, azurite: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(VARIABLE, azurite)
    monkeypatch.delenv("VIDEOANOM_BLOB_CACHE", raising=False)
    store = open_datastore("azureblob://videos")
    assert store.cache_dir == tmp_path.resolve() / ".videoanom" / "cache" / "blob"
    assert (
        open_datastore("azureblob://videos", cache_dir=tmp_path / "c").cache_dir
        == (tmp_path / "c").resolve()
    )
    env = Settings.load({"home": str(tmp_path / "home")}, env_file=None).step_environment()
    assert env["VIDEOANOM_BLOB_CACHE"] == str((tmp_path / "home" / "cache" / "blob").resolve())
    assert not (tmp_path / ".videoanom").exists(), "opening a datastore creates nothing"
    with pytest.raises(DatastoreError, match="container name"):
        open_datastore("azureblob://No_Such")


@pytest.mark.slow
def test_run_end_to_end_from_a_blob_container(
    container: ContainerClient, azurite: str, tmp_path: Path
) -> None:
    store, home = write_tiny_demo(tmp_path / "ds"), tmp_path / "home"
    upload_tree(container, store, "uploads/2024")
    before = snapshot(container)
    uri = f"azureblob://{container.container_name}/uploads/2024"
    env = {
        **os.environ,
        VARIABLE: azurite,
        "VIDEOANOM_HOME": str(home),
        **TINY_RUN,
    }
    env.pop("VIDEOANOM_BLOB_CACHE", None)
    args = ["run", "--location", "demo-plaza", "--datastore", uri, "--trials", "1"]
    result = subprocess.run(
        [sys.executable, "-m", "videoanom", *args, "--max-epochs", "1"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "registered: models:/prednet-demo-plaza/1" in result.stdout
    assert azurite not in result.stdout + result.stderr
    assert azurite.split("AccountKey=")[1].split(";")[0] not in result.stdout + result.stderr
    manifest = next(home.glob("steps/demo-plaza/data_prep/*/prepared_data/manifest.json"))
    assert json.loads(manifest.read_text())["datastore"] == uri
    assert any((home / "cache" / "blob").rglob("*.png")), "steps download into VIDEOANOM_HOME"
    assert snapshot(container) == before, "the container must never be modified"
