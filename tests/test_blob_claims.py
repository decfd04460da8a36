"""Blob lease claims against Azurite: one holder at a time, across threads and processes."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobLeaseClient, BlobServiceClient
from azurite_server import AZURITE_KEY, free_port
from conftest import assert_held_by_this_process, wait_until

from ml_service.master.blob_claims import BlobLeaseClaim, BlobLeaseClaims
from ml_service.master.claims import ClaimError, LocalClaims, open_claims

ROOT = Path(__file__).resolve().parents[1]
VARIABLE = "AZURE_STORAGE_CONNECTION_STRING"
THREADS = 8
PROCESSES = 3


@pytest.fixture
def claims_container(azurite: str) -> Iterator[str]:
    """A fresh claims container name; the container itself is left to the code under test."""
    name = f"claims-{uuid.uuid4().hex[:12]}"
    yield name
    with contextlib.suppress(ResourceNotFoundError):
        BlobServiceClient.from_connection_string(azurite).delete_container(name)


def _claims(azurite: str, container: str, **options: object) -> BlobLeaseClaims:
    return BlobLeaseClaims(azurite, container=container, **options)


def test_claim_holder_release_and_retake(azurite: str, claims_container: str) -> None:
    claims = _claims(azurite, claims_container, prefix="store/site")
    assert claims.holder("Cam 1") is None  # no container yet: nothing is created by holder()
    claim = claims.try_claim("Cam 1")
    assert isinstance(claim, BlobLeaseClaim)
    assert claim.blob_name == "store/site/cam-1"
    assert claim.keepalive_running and not claim.lost

    holder = claims.holder("Cam 1")
    assert_held_by_this_process(holder, claim.owner)
    assert holder["lease_seconds"] == 60
    assert holder["lease_state"] == "leased"
    assert holder["lease_duration"] == "fixed"  # never infinite

    other = _claims(azurite, claims_container, prefix="store/site")
    assert other.try_claim("Cam 1") is None
    assert other.try_claim("CAM-1") is None  # same slug: same model, same claim
    second = other.try_claim("cam 2")
    assert second is not None

    claim.release()
    claim.release()  # idempotent
    assert claim.released and not claim.keepalive_running
    assert claims.holder("Cam 1") is None
    with other.try_claim("Cam 1") as retaken:
        assert retaken is not None
        assert claims.holder("Cam 1")["owner"] == retaken.owner
    assert claims.holder("Cam 1") is None
    second.release()


def test_threads_racing_one_wins(azurite: str, claims_container: str) -> None:
    # Each racer has its own client, and the container and blob do not exist yet: the
    # race covers creating both as well as acquiring the lease.
    racers = [_claims(azurite, claims_container) for _ in range(THREADS)]
    for round_ in range(2):  # 1: nothing exists yet; 2: the blob exists, lease released
        winners = [claim for claim in _race_threads(racers, "race") if claim is not None]
        assert len(winners) == 1, f"round {round_}: {len(winners)} winners"
        assert racers[0].holder("race")["owner"] == winners[0].owner
        winners[0].release()


def _race_threads(racers: list[BlobLeaseClaims], location: str) -> list[BlobLeaseClaim | None]:
    """Every racer calls try_claim at once (after a barrier); their results in order."""
    barrier = threading.Barrier(len(racers))
    results: list[BlobLeaseClaim | None] = [None] * len(racers)
    errors: list[BaseException] = []

    def race(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = racers[i].try_claim(location)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(racers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return results


_RACER = textwrap.dedent(
    """
    import os, sys
    from ml_service.master.blob_claims import BlobLeaseClaims

    claims = BlobLeaseClaims(container=sys.argv[1])  # connection string from the environment
    print("ready", flush=True)
    sys.stdin.readline()  # "go"
    claim = claims.try_claim("race")
    print(f"won {os.getpid()}" if claim else "lost", flush=True)
    sys.stdin.read()  # hold until every racer has tried
    if claim:
        claim.release()
    print("done", flush=True)
    """
)


def test_processes_racing_one_wins(azurite: str, claims_container: str) -> None:
    env = {**os.environ, VARIABLE: azurite}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, claims_container],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        for _ in range(PROCESSES)
    ]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        for proc in procs:  # start them as close together as we can
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = [proc.stdout.readline().strip() for proc in procs]
        winners = [line for line in results if line.startswith("won")]
        assert len(winners) == 1, results
        holder = _claims(azurite, claims_container).holder("race")
        assert holder is not None and str(holder["pid"]) == winners[0].split()[1]
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            assert out.strip() == "done"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert _claims(azurite, claims_container).holder("race") is None


@pytest.mark.slow
def test_renewer_outlives_the_lease_and_a_dead_holder_expires(
    azurite: str, claims_container: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One 15 s lease wait proves both: renewal keeps a claim, no renewal loses it."""
    live = _claims(azurite, claims_container, lease_duration=15).try_claim("live")
    dying = _claims(azurite, claims_container, lease_duration=15)
    dead = dying.try_claim("dead")
    assert live is not None and dead is not None
    start = time.monotonic()
    dead._stop_keepalive()  # the holder "dies": no more renewals, no release
    other = _claims(azurite, claims_container, lease_duration=15)
    assert other.try_claim("dead") is None  # still within its lease

    time.sleep(max(0.0, start + 17 - time.monotonic()))  # past one lease duration

    assert other.try_claim("live") is None, "the renewer did not keep the lease"
    assert other.holder("live")["owner"] == live.owner
    assert not live.lost
    assert dying.holder("dead") is None  # expired
    taken = other.try_claim("dead")
    assert taken is not None, "an expired claim was not taken over"
    assert other.holder("dead")["owner"] == taken.owner
    with caplog.at_level(logging.WARNING):
        dead.release()  # the late "dead" holder: must neither raise nor free the new lease
    assert "already expired or been taken over" in caplog.text
    assert other.holder("dead")["owner"] == taken.owner
    live.release()
    taken.release()
    assert other.holder("live") is None and other.holder("dead") is None


def test_lost_lease_is_reported_not_raised(
    azurite: str, claims_container: str, caplog: pytest.LogCaptureFixture
) -> None:
    claims = _claims(azurite, claims_container, lease_duration=15, renew_interval=0.2)
    claim = claims.try_claim("loc")
    assert claim is not None
    # An operator breaks the lease and another master takes the claim.
    blob = BlobServiceClient.from_connection_string(azurite).get_blob_client(
        claims_container, claim.blob_name
    )
    with caplog.at_level(logging.ERROR):
        BlobLeaseClient(blob).break_lease(lease_break_period=0)
        thief = _claims(azurite, claims_container).try_claim("loc")
        assert thief is not None
        assert wait_until(lambda: claim.lost), "the renewer did not notice the lost lease"
    assert "claim on loc lost" in caplog.text
    assert "LeaseIdMismatchWithLeaseOperation" in claim.lost_reason
    assert wait_until(lambda: not claim.keepalive_running)
    with pytest.raises(ClaimError):
        claim.heartbeat()
    claim.release()  # logs, never raises
    assert claims.holder("loc")["owner"] == thief.owner
    thief.release()


MALICIOUS = ["../x", "a/b", "..", ".hidden", "", "   ", "---", "a\\b", "bad\x00name"]
MALICIOUS += ["new\nline", "tab\tname", "esc\x1bname", "del\x7fname"]


def test_malicious_names_are_refused_before_any_request(
    azurite: str, claims_container: str
) -> None:
    sent: list[str] = []
    claims = _claims(
        azurite, claims_container, raw_request_hook=lambda request: sent.append(request)
    )
    for name in MALICIOUS:
        with pytest.raises(ValueError):
            claims.try_claim(name)
        with pytest.raises(ValueError):
            claims.holder(name)
        with pytest.raises(ValueError):
            claims.blob_name(name)
    assert sent == []
    service = BlobServiceClient.from_connection_string(azurite)
    assert not service.get_container_client(claims_container).exists()
    claims.holder("ok")
    assert sent, "the request hook does not see requests: the test proves nothing"


def _snapshot(container) -> list[tuple]:
    return [
        (b.name, b.etag, b.last_modified, dict(b.metadata or {}), b.lease.state, b.size)
        for b in container.list_blobs(include=["metadata"])
    ]


def test_open_claims_for_blob_datastore_never_writes_the_datastore(
    azurite: str, claims_container: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = BlobServiceClient.from_connection_string(azurite)
    store = service.get_container_client(f"store-{uuid.uuid4().hex[:12]}")
    store.create_container()
    try:
        for name in ("site/cam-1/train/a.png", "site/cam-1/test/b.png", "site/cam-2/x.avi"):
            store.upload_blob(name, b"data")
        container_props = store.get_container_properties()
        before = _snapshot(store)
        monkeypatch.setenv(VARIABLE, azurite)

        claims = open_claims(
            f"azureblob://{store.container_name}/site/", tmp_path, claims_container
        )
        assert isinstance(claims, BlobLeaseClaims)
        with claims.try_claim("cam-1") as claim:
            assert claims.holder("cam-1")["owner"] == claim.owner
            assert claims.try_claim("cam-1") is None
        assert claims.holder("cam-1") is None

        assert _snapshot(store) == before
        after_props = store.get_container_properties()
        assert after_props.etag == container_props.etag
        assert after_props.lease.state == "available"
        claim_blobs = [b.name for b in service.get_container_client(claims_container).list_blobs()]
        assert claim_blobs == [f"{store.container_name}/site/cam-1"]
        assert not (tmp_path / "claims").exists()
    finally:
        store.delete_container()


def test_open_claims_for_local_datastore_needs_no_azure(tmp_path: Path) -> None:
    claims = open_claims(str(tmp_path / "store"), tmp_path / "home")
    assert isinstance(claims, LocalClaims)
    assert claims.root == tmp_path / "home" / "claims"
    script = (
        "import sys; from pathlib import Path; from ml_service.master.claims import open_claims;"
        "open_claims('./store', Path('home'));"
        "print([m for m in sys.modules if m.startswith('azure')])"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


def test_unreachable_storage_and_bad_credentials_are_clear_errors(
    azurite: str, claims_container: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there
    unreachable = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )
    wrong_key = azurite.replace(AZURITE_KEY, "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=")
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ClaimError, match=f"'{claims_container}'.*reachable") as info:
            _claims(unreachable, claims_container, retry_total=0).try_claim("loc")
        assert AZURITE_KEY not in str(info.value)
        with pytest.raises(ClaimError, match=f"'{claims_container}'.*access denied") as info:
            _claims(wrong_key, claims_container, retry_total=0).try_claim("loc")
        assert "d3Jvbmc" not in str(info.value)
        with pytest.raises(ClaimError, match="not a valid storage connection string"):
            BlobLeaseClaims("AccountKey=secret-value;nonsense", container=claims_container)
    assert AZURITE_KEY not in caplog.text and "d3Jvbmc" not in caplog.text
    assert "secret-value" not in caplog.text


def test_missing_connection_string_and_bad_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, azurite: str
) -> None:
    monkeypatch.delenv(VARIABLE, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env here
    with pytest.raises(ClaimError, match=VARIABLE):
        BlobLeaseClaims()
    with pytest.raises(ClaimError, match="not a valid container name"):
        BlobLeaseClaims(azurite, container="Bad_Name")
    with pytest.raises(ClaimError, match="segment"):
        BlobLeaseClaims(azurite, prefix="a/../b")
    for duration in (-1, 0, 14, 61, 15.5):
        with pytest.raises(ValueError, match="lease_duration"):
            BlobLeaseClaims(azurite, lease_duration=duration)
    with pytest.raises(ValueError, match="renew_interval"):
        BlobLeaseClaims(azurite, lease_duration=15, renew_interval=15)
