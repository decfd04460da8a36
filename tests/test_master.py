"""The master: which locations it trains, and that it survives failures and other masters."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import moving_square_frames, write_frame_folder

from ml_service.master.claims import LocalClaims
from ml_service.master.master import Master, MasterConfig
from ml_service.pipelines.local_runner import StepFailed
from ml_service.state import read_state, write_state
from ml_service.util.env_variables import Settings


def add_location(store: Path, name: str, clips: int = 1) -> Path:
    for i in range(clips):
        write_frame_folder(store / name / "train" / f"c{i}", moving_square_frames(4, seed=i))
    return store / name


class FakeRun:
    """Stands in for run_location: records calls, fails for chosen locations."""

    def __init__(self, fail: set[str] = frozenset()) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail = set(fail)
        self.lock = threading.Lock()

    def __call__(self, settings: Settings, location: str, init_from: str = "") -> SimpleNamespace:
        with self.lock:
            self.calls.append((location, init_from))
        if location in self.fail:
            write_state(
                settings.home,
                location,
                "failed",
                reason="boom",
                attempts=int(read_state(settings.home, location).get("attempts", 0)) + 1,
            )
            raise StepFailed("train", 2, "boom", Path("log"))
        write_state(
            settings.home,
            location,
            "succeeded",
            prednet=f"models:/prednet-{location}/1",
            metrics={"val_mae": 0.5 if location == "b" else 0.9, "copy_last_mae": 1.0},
        )
        return SimpleNamespace(classifier_uri=f"models:/anomaly-classifier-{location}/1")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "store").mkdir()
    return Settings.load(
        {"home": str(tmp_path / "home"), "datastore": str(tmp_path / "store")},
        env_file=None,
        environ={},
    )


def master(settings: Settings, run: FakeRun, now: list[float], **config) -> Master:
    defaults = {"quiet_seconds": 60, "backoff_seconds": 100, "max_retries": 2}
    return Master(settings, MasterConfig(**{**defaults, **config}), run=run, clock=lambda: now[0])


def test_new_location_waits_for_quiet_period_then_trains_once(settings: Settings) -> None:
    add_location(Path(settings.datastore), "a")
    run, now = FakeRun(), [1000.0]
    m = master(settings, run, now)
    first = m.poll_once()
    assert first[0].action == "skip" and "first seen" in first[0].reason
    now[0] += 61
    assert [d.action for d in m.poll_once()] == ["train"]
    assert run.calls == [("a", "")]
    now[0] += 61
    again = m.poll_once()
    assert again[0].reason == "already trained" and len(run.calls) == 1


def test_ready_marker_skips_the_quiet_period(settings: Settings) -> None:
    loc = add_location(Path(settings.datastore), "a")
    (loc / "_READY").write_text("")
    run = FakeRun()
    master(settings, run, [0.0]).poll_once()
    assert run.calls == [("a", "")]


def test_a_changing_upload_is_not_started(settings: Settings) -> None:
    store = Path(settings.datastore)
    add_location(store, "a")
    run, now = FakeRun(), [0.0]
    m = master(settings, run, now)
    m.poll_once()
    now[0] += 61
    write_frame_folder(store / "a" / "train" / "late", moving_square_frames(3))
    assert "changed since last poll" in m.poll_once()[0].reason
    assert run.calls == []


def test_failure_is_isolated_retried_with_backoff_then_given_up(settings: Settings) -> None:
    store = Path(settings.datastore)
    for name in ("a", "b"):
        (add_location(store, name) / "_READY").write_text("")
    run, now = FakeRun(fail={"a"}), [0.0]
    m = master(settings, run, now, transfer=False)
    outcomes = {d.location: d.outcome for d in m.poll_once()}
    assert outcomes["a"].startswith("failed") and outcomes["b"].startswith("succeeded")
    assert "retry after" in m.poll_once()[0].reason  # inside the back-off
    now[0] = read_timestamp(settings, "a") + 101
    m.poll_once()
    assert [c[0] for c in run.calls].count("a") == 2
    now[0] += 10_000
    decision = m.poll_once()[0]
    assert decision.reason.startswith("gave up after 2 failures: boom")


def read_timestamp(settings: Settings, location: str) -> float:
    from ml_service.master.master import _timestamp

    return _timestamp(read_state(settings.home, location))


def test_location_claimed_by_another_master_is_left_alone(settings: Settings) -> None:
    (add_location(Path(settings.datastore), "a") / "_READY").write_text("")
    held = LocalClaims(Path(settings.home) / "claims").try_claim("a")
    assert held is not None
    run = FakeRun()
    decision = master(settings, run, [0.0]).poll_once()[0]
    assert decision.action == "skip" and decision.reason.startswith("claimed by pid")
    assert run.calls == []
    held.release()


def test_new_location_warm_starts_from_the_best_trained_one(settings: Settings) -> None:
    store = Path(settings.datastore)
    for name in ("b", "c"):
        (add_location(store, name) / "_READY").write_text("")
    run = FakeRun()
    master(settings, run, [0.0], workers=2).poll_once()
    (add_location(store, "d") / "_READY").write_text("")
    master(settings, run, [0.0]).poll_once()
    assert run.calls[-1] == ("d", "models:/prednet-b/1"), "b beats copy-last by the most"


def test_retrain_changed_data(settings: Settings) -> None:
    store = Path(settings.datastore)
    (add_location(store, "a") / "_READY").write_text("")
    calls: list[str] = []

    def run(settings: Settings, location: str, init_from: str = "") -> None:
        from ml_service.pipelines.run_location import listing_salt
        from videoanom.data.datastore import open_datastore

        calls.append(location)
        salt = listing_salt(open_datastore(settings.datastore), location)
        write_state(settings.home, location, "succeeded", listing=salt)

    m = Master(settings, MasterConfig(retrain_changed=True), run=run, clock=lambda: 0.0)
    m.poll_once()
    assert m.poll_once()[0].reason == "trained on the current data"
    write_frame_folder(store / "a" / "train" / "new", moving_square_frames(3))
    m.poll_once()
    assert calls == ["a", "a"]


def test_another_master_finishing_meanwhile_is_noticed_under_the_claim(
    settings: Settings,
) -> None:
    """Two masters may both decide to train; the loser sees the record under the claim."""
    (add_location(Path(settings.datastore), "a") / "_READY").write_text("")
    run = FakeRun()
    m = master(settings, run, [0.0])
    decision = m._decide("a", 0.0, {})
    assert decision.action == "train"
    write_state(settings.home, "a", "succeeded", pipeline_id="a-other-master")
    assert m._train(decision) == "skipped: succeeded meanwhile in pipeline a-other-master"
    assert run.calls == []


def test_a_dead_holder_does_not_block_the_location(settings: Settings) -> None:
    (add_location(Path(settings.datastore), "a") / "_READY").write_text("")
    claims = LocalClaims(Path(settings.home) / "claims")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    claims.root.mkdir(parents=True)
    record = {
        "pid": int(dead.stdout),
        "host": claims.host,
        "created": 0,
        "heartbeat": 9e12,
        "owner": "x",
    }
    claims.claim_path("a").write_text(json.dumps(record))
    run = FakeRun()
    assert master(settings, run, [0.0]).poll_once()[0].outcome.startswith("succeeded")
    assert run.calls == [("a", "")]


def test_unsafe_names_are_refused_and_reported(settings: Settings) -> None:
    store = Path(settings.datastore)
    for name in ("a", "bad\\name", "ctl\x07name"):
        (add_location(store, name) / "_READY").write_text("")
    run = FakeRun()
    decisions = master(settings, run, [0.0]).poll_once()
    refused = {d.location: d.reason for d in decisions if d.action == "refuse"}
    assert set(refused) == {repr("bad\\name"), repr("ctl\x07name")}
    assert "path separator" in refused[repr("bad\\name")]
    assert run.calls == [("a", "")]
    assert not any("name" in p.name for p in Path(settings.home).rglob("*"))


def test_watch_goes_on_after_a_failed_poll(settings: Settings) -> None:
    from videoanom.data.datastore import DatastoreError

    m = master(settings, FakeRun(), [0.0])
    polls = []

    def flaky_poll() -> list:
        polls.append(1)
        if len(polls) == 1:
            raise DatastoreError("storage unreachable")
        stop.set()
        return []

    stop = threading.Event()
    m.poll_once = flaky_poll
    m.watch(0.01, stop)
    assert len(polls) == 2
