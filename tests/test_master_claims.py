"""Per-location claims: one holder at a time, across processes, with stale takeover."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import assert_held_by_this_process, wait_until

from ml_service.master.claims import Claim, LocalClaims, open_claims

RACERS = 8


def _write_claim(root: Path, name: str, **record: object) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}.claim"
    defaults = {"pid": os.getpid(), "host": socket.gethostname(), "created": time.time()}
    path.write_text(json.dumps({**defaults, "owner": "someone-else", **record}))
    return path


def test_claim_and_release(tmp_path: Path) -> None:
    claims = LocalClaims(tmp_path / "claims")
    claim = claims.try_claim("Cam 1")
    assert isinstance(claim, Claim)
    assert claim.path == tmp_path / "claims" / "cam-1.claim"
    holder = claims.holder("Cam 1")
    assert_held_by_this_process(holder, claim.owner)
    claim.release()
    claim.release()  # idempotent
    assert not claim.path.exists()
    assert claims.holder("Cam 1") is None


def test_context_manager_releases(tmp_path: Path) -> None:
    claims = LocalClaims(tmp_path)
    with claims.try_claim("loc") as claim:
        assert claim.path.exists()
    assert not claim.path.exists()
    assert claims.try_claim("loc") is not None


def test_second_claim_while_held_is_refused(tmp_path: Path) -> None:
    first = LocalClaims(tmp_path).try_claim("loc")
    assert first is not None
    assert LocalClaims(tmp_path).try_claim("loc") is None
    # Names with the same slug share a model and state folder, so they share a claim too.
    assert LocalClaims(tmp_path).try_claim("LOC") is None
    assert LocalClaims(tmp_path).try_claim("other") is not None
    first.release()
    assert LocalClaims(tmp_path).try_claim("loc") is not None


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".hidden", "", "bad\x00name", "---"])
def test_unsafe_names_raise(tmp_path: Path, name: str) -> None:
    claims = LocalClaims(tmp_path / "claims")
    with pytest.raises(ValueError):
        claims.try_claim(name)
    with pytest.raises(ValueError):
        claims.holder(name)
    assert not (tmp_path / "x.claim").exists()


def test_claim_of_dead_pid_is_taken_over(tmp_path: Path) -> None:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead_pid = int(child.stdout)
    _write_claim(tmp_path, "loc", pid=dead_pid)
    claims = LocalClaims(tmp_path)
    claim = claims.try_claim("loc")
    assert claim is not None
    assert claims.holder("loc")["pid"] == os.getpid()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".broken")]


def test_dead_pid_on_another_host_is_not_judged_locally(tmp_path: Path) -> None:
    _write_claim(tmp_path, "loc", pid=2**22 + 12345, host="some-other-host")
    assert LocalClaims(tmp_path).try_claim("loc") is None


def test_stale_claim_is_taken_over(tmp_path: Path) -> None:
    _write_claim(tmp_path, "loc", created=time.time() - 7 * 3600)  # live pid (ours), but old
    claims = LocalClaims(tmp_path, stale_after=6 * 3600)
    assert claims.try_claim("loc") is not None


def test_heartbeat_keeps_a_long_claim_fresh(tmp_path: Path) -> None:
    claims = LocalClaims(tmp_path, stale_after=3600)
    claim = claims.try_claim("loc")
    record = json.loads(claim.path.read_text())
    record["created"] = record["heartbeat"] = time.time() - 7200
    claim.path.write_text(json.dumps(record))
    claim.heartbeat()
    assert LocalClaims(tmp_path, stale_after=3600).try_claim("loc") is None
    assert claims.holder("loc")["owner"] == claim.owner


def test_unreadable_claim_is_kept_while_young_and_broken_when_old(tmp_path: Path) -> None:
    path = tmp_path / "loc.claim"
    path.write_text("")  # a claim being written right now
    assert LocalClaims(tmp_path).try_claim("loc") is None
    old = time.time() - 3600
    os.utime(path, (old, old))
    assert LocalClaims(tmp_path).try_claim("loc") is not None


def test_release_of_someone_elses_claim_does_nothing(tmp_path: Path) -> None:
    claims = LocalClaims(tmp_path)
    path = _write_claim(tmp_path, "loc")
    Claim("loc", path, owner="not-the-owner").release()
    assert path.exists()
    assert claims.holder("loc")["owner"] == "someone-else"


def test_release_after_takeover_leaves_new_holder(tmp_path: Path) -> None:
    claims = LocalClaims(tmp_path, stale_after=3600)
    old = claims.try_claim("loc")
    record = json.loads(old.path.read_text())
    record["heartbeat"] = time.time() - 7200
    old.path.write_text(json.dumps(record))
    new = LocalClaims(tmp_path, stale_after=3600).try_claim("loc")
    assert new is not None
    old.release()
    assert claims.holder("loc")["owner"] == new.owner


def test_heartbeat_interval_defaults() -> None:
    assert LocalClaims(Path("x")).heartbeat_interval == 60  # 6 h / 10, capped at 60 s
    assert LocalClaims(Path("x"), stale_after=100).heartbeat_interval == 10
    assert LocalClaims(Path("x"), heartbeat_interval=2).heartbeat_interval == 2
    with pytest.raises(ValueError):
        LocalClaims(Path("x"), heartbeat_interval=0)


def test_heartbeat_thread_keeps_a_claim_past_stale_after(tmp_path: Path) -> None:
    claims = LocalClaims(tmp_path, stale_after=1.0)  # a beat every 0.1 s
    claim = claims.try_claim("loc")
    assert claim is not None and claim.keepalive_running
    time.sleep(2.0)  # twice stale_after
    assert LocalClaims(tmp_path, stale_after=1.0).try_claim("loc") is None
    record = claims.holder("loc")
    assert record["owner"] == claim.owner
    assert time.time() - record["heartbeat"] < 1.0
    assert not claim.lost
    claim.release()
    assert not claim.keepalive_running
    assert not claim.path.exists()
    with LocalClaims(tmp_path, stale_after=1.0).try_claim("loc") as retaken:
        assert retaken is not None


def test_heartbeat_thread_reports_a_takeover_without_raising(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    claim = LocalClaims(tmp_path, heartbeat_interval=0.05).try_claim("loc")
    with caplog.at_level(logging.ERROR):
        _write_claim(tmp_path, "loc", owner="the-new-holder")  # as if broken and re-taken
        assert wait_until(lambda: claim.lost)
    assert "claim on loc lost" in caplog.text
    assert "taken over" in claim.lost_reason
    assert wait_until(lambda: not claim.keepalive_running)
    claim.release()
    assert LocalClaims(tmp_path).holder("loc")["owner"] == "the-new-holder"


def test_heartbeat_thread_retries_transient_errors_then_reports_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    claim = LocalClaims(tmp_path, stale_after=0.5, heartbeat_interval=0.05).try_claim("loc")
    failures = []

    def failing_heartbeat() -> None:
        failures.append(time.monotonic())
        raise OSError("disk unavailable")

    claim.heartbeat = failing_heartbeat  # every beat fails, not with ClaimError
    with caplog.at_level(logging.WARNING):
        assert wait_until(lambda: claim.lost)
    assert len(failures) >= 3, "transient errors were not retried"
    assert "heartbeat failed (OSError: disk unavailable)" in caplog.text
    assert "no successful heartbeat" in claim.lost_reason
    claim.release()
    assert not claim.path.exists()


def test_hand_built_claim_has_no_thread_until_started(tmp_path: Path) -> None:
    path = _write_claim(tmp_path, "loc", owner="me")
    claim = Claim("loc", path, owner="me")
    assert not claim.keepalive_running and not claim.lost
    claim.start_keepalive(0.05)
    claim.start_keepalive(0.05)  # idempotent
    assert claim.keepalive_running
    assert wait_until(lambda: json.loads(path.read_text()).get("heartbeat") is not None)
    with claim:
        pass
    assert not claim.keepalive_running and not path.exists()


def test_open_claims_local(tmp_path: Path) -> None:
    claims = open_claims(str(tmp_path / "datastore"), tmp_path / "home")
    assert isinstance(claims, LocalClaims)
    assert claims.root == tmp_path / "home" / "claims"


_RACER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from ml_service.master.claims import LocalClaims

    root, start = Path(sys.argv[1]), float(sys.argv[2])
    claims = LocalClaims(root, stale_after=3600)
    time.sleep(max(0.0, start - time.time()))
    claim = claims.try_claim("race")
    print("won" if claim else "lost", flush=True)
    # Hold until every racer has tried, so a late one cannot take over a dead winner.
    time.sleep(max(0.0, start + 1.5 - time.time()))
    """
)


def _race(root: Path) -> list[str]:
    start = time.time() + 1.5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(root), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(RACERS)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(out.strip())
    return results


def test_processes_racing_for_a_free_location_one_wins(tmp_path: Path) -> None:
    results = _race(tmp_path)
    assert sorted(results) == ["lost"] * (RACERS - 1) + ["won"]


def test_processes_racing_to_break_a_stale_claim_one_wins(tmp_path: Path) -> None:
    _write_claim(tmp_path, "race", created=time.time() - 7200)
    results = _race(tmp_path)
    assert sorted(results) == ["lost"] * (RACERS - 1) + ["won"]
