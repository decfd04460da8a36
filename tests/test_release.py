"""The release gate (``videoanom release``) with real registered models of different quality.

One tiny location is trained twice with the real pipeline (``videoanom run``); between the
two runs a deliberately worse detector is registered: version 1's detector with its score
inverted (a real model the gate loads and scores, whose AUC is 1 - version 1's). Registry
snapshots after each stage let every test start from the state it needs:

* ``one``: v1 (good) only: a first model, no champion;
* ``two``: v1 and v2 (inverted, the latest): a worse candidate;
* ``three``: v1, v2 and v3 (the second run, the latest).

Each test copies a snapshot's SQLite database (the artifacts are shared and only read), so
the tests are independent and the aliases they move never leak.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pytest
from conftest import TINY_RUN, write_tiny_demo

from ml_service.release import ReleaseResult, SmokeRequest, SmokeResult, release
from ml_service.release.evaluation import Evaluation, open_evaluation
from ml_service.release.smoke import check_response
from ml_service.util.env_variables import Settings
from videoanom.cli import main
from videoanom.data.demo import write_ucsd_style_location
from videoanom.registry import register_version, set_alias, version_by_alias

LOCATION = "demo-plaza"
CLASSIFIER = "anomaly-classifier-demo-plaza"
PREDNET = "prednet-demo-plaza"
SERVER_MODULE = Path(__file__).resolve().parents[1] / "code/videoanom/serving/server.py"


def _videoanom_run(store: Path, home: Path, max_epochs: int) -> None:
    args = ["run", "--location", LOCATION, "--datastore", str(store), "--home", str(home)]
    args += ["--trials", "1", "--max-epochs", str(max_epochs)]
    result = subprocess.run(
        [sys.executable, "-m", "videoanom", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **TINY_RUN},
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _register_inverted(version: int, folder: Path) -> int:
    """Register ``version``'s detector with its anomaly score inverted (1 - score)."""
    source = Path(
        mlflow.artifacts.download_artifacts(f"models:/{CLASSIFIER}/{version}", dst_path=str(folder))
    )
    state = json.loads((source / "detector.json").read_text())
    state["unsup_slope"] = -state["unsup_slope"]
    if state["calibration"] is not None:
        state["calibration"] = [-value for value in state["calibration"]]
    (source / "detector.json").write_text(json.dumps(state))
    tags = dict(mlflow.MlflowClient().get_model_version(CLASSIFIER, str(version)).tags)
    tags.pop("auc", None)  # its out-of-fold AUC does not describe the inverted model
    tags["degraded"] = f"v{version} with its anomaly score inverted"
    return register_version(CLASSIFIER, str(source), None, tags, "deliberately worse detector")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two real training runs and an inverted detector, with a registry snapshot per stage."""
    root = tmp_path_factory.mktemp("release")
    store, home, snapshots = write_tiny_demo(root / "ds"), root / "home", root / "snapshots"
    snapshots.mkdir()
    db = home / "mlflow.db"

    _videoanom_run(store, home, max_epochs=1)
    shutil.copy(db, snapshots / "one.db")
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    try:
        assert _register_inverted(1, root / "inverted") == 2
    finally:
        mlflow.set_tracking_uri("")
    shutil.copy(db, snapshots / "two.db")
    _videoanom_run(store, home, max_epochs=2)
    shutil.copy(db, snapshots / "three.db")
    return {"store": store, "snapshots": snapshots}


_LOADED: dict[tuple[str, int | None], object] = {}


@pytest.fixture(autouse=True)
def reuse_loaded_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Load each registered version once per module: every snapshot holds the same versions
    of the same artifacts, and loading plus tracing a PredNet costs seconds per call."""
    import videoanom.scoring.inference as inference

    load = inference.load_location_models

    def cached(location: str, version: int | None = None):
        if version is None:
            return load(location, version)
        key = (location, version)
        if key not in _LOADED:
            _LOADED[key] = load(location, version)
        return _LOADED[key]

    monkeypatch.setattr(inference, "load_location_models", cached)


def _home_from(registry: dict, snapshot: str, tmp_path: Path) -> Path:
    home = Path(tempfile.mkdtemp(prefix=f"home-{snapshot}-", dir=tmp_path))
    shutil.copy(registry["snapshots"] / f"{snapshot}.db", home / "mlflow.db")
    return home


def _settings(registry: dict, home: Path, **values: object) -> Settings:
    overrides = {"home": home, "datastore": str(registry["store"]), **values}
    return Settings.load(overrides, env_file=None, environ={})


@pytest.fixture
def registry_state(registry: dict, tmp_path: Path):
    """A private copy of a snapshot: ``(settings, aliases)``; ``aliases()`` reads both."""

    def make(snapshot: str, champion: int | None = None, prednet: int | None = None, **values):
        home = _home_from(registry, snapshot, tmp_path)
        settings = _settings(registry, home, **values)
        mlflow.set_tracking_uri(settings.tracking_uri)
        if champion is not None:
            set_alias(CLASSIFIER, "champion", champion)
        if prednet is not None:
            set_alias(PREDNET, "champion", prednet)
        return settings

    yield make
    mlflow.set_tracking_uri("")


def _aliases() -> tuple[int | None, int | None]:
    return version_by_alias(CLASSIFIER, "champion"), version_by_alias(PREDNET, "champion")


class FakeSmoke:
    """A smoke runner that records its request and what the champion alias was meanwhile."""

    def __init__(self, passed: bool = True) -> None:
        self.passed = passed
        self.requests: list[SmokeRequest] = []
        self.aliases_during: list[tuple[int | None, int | None]] = []

    def __call__(self, settings: Settings, request: SmokeRequest) -> SmokeResult:
        self.requests.append(request)
        self.aliases_during.append(_aliases())
        if self.passed:
            return SmokeResult(True, "fake service answered", 0.1)
        return SmokeResult(False, "POST /score/demo-plaza answered 500", 0.1)


def _no_deploy(*args: object) -> str:
    raise AssertionError("nothing may be deployed")


# ------------------------------------------------------------------ with trained models
@pytest.mark.slow
def test_first_model_needs_the_minimum_auc(registry_state) -> None:
    settings = registry_state("one", release_min_auc=0.7)
    smoke = FakeSmoke()
    passed = release(settings, LOCATION, smoke=smoke, deployer=_no_deploy)
    assert passed.passed, passed.reason
    assert passed.candidate == 1 and passed.champion is None
    assert passed.candidate_auc >= 0.7 and passed.champion_auc is None
    assert passed.n_frames == 40 and passed.clips == ["test_001", "test_002"]
    assert "clears the minimum 0.700" in passed.reason
    # the service serves the champion: the smoke test ran with the alias on the candidate
    assert smoke.aliases_during == [(1, 1)]
    request = smoke.requests[0]
    assert request.video.suffix == ".avi" and request.n_frames == 20  # test_001 is frames
    assert request.versions == {"classifier": f"{CLASSIFIER}/1", "prednet": f"{PREDNET}/1"}
    assert _aliases() == (1, 1)
    text = "\n".join(passed.lines())
    assert "champion:    none yet (first model)" in text and "PASSED" in text
    assert "picks up the champion at its next start" in text

    # Asking for more than it gets fails, and nothing changes.
    settings = registry_state("one", release_min_auc=round(passed.candidate_auc + 0.01, 3))
    failed = release(settings, LOCATION, smoke=FakeSmoke(), deployer=_no_deploy)
    assert not failed.passed and failed.smoke is None
    assert failed.candidate_auc == pytest.approx(passed.candidate_auc)
    assert "is below the minimum" in failed.reason
    assert _aliases() == (None, None)
    tags = mlflow.MlflowClient().get_model_version(CLASSIFIER, "1").tags
    assert tags["release_gate"] == "failed" and tags["release_champion"] == "none"


@pytest.mark.slow
def test_worse_candidate_fails_with_both_aucs_and_exit_4(
    registry: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    home = _home_from(registry, "two", tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{home.resolve() / 'mlflow.db'}")
    try:
        set_alias(CLASSIFIER, "champion", 1)
        set_alias(PREDNET, "champion", 1)
        args = ["release", "--location", LOCATION, "--datastore", str(registry["store"])]
        code = main([*args, "--home", str(home), "--margin", "0.02", "--env-file", "none"])
        out, err = capsys.readouterr()
        assert code == 4, err
        reason = re.search(
            r"candidate v2 AUC (0\.\d{3}) is (0\.\d{3}) below champion v1 AUC (0\.\d{3}) "
            r"\(margin 0\.020\)",
            err,
        )
        assert reason, err
        candidate, champion = float(reason[1]), float(reason[3])
        assert candidate < champion - 0.02
        assert candidate == pytest.approx(1 - champion, abs=0.01)  # the inverted score
        assert f"AUC {candidate:.3f}" in out and f"AUC {champion:.3f}" in out
        assert "changed:     nothing" in out
        mlflow.set_tracking_uri(f"sqlite:///{home.resolve() / 'mlflow.db'}")
        assert _aliases() == (1, 1)
        tags = mlflow.MlflowClient().get_model_version(CLASSIFIER, "2").tags
        assert tags["release_gate"] == "failed" and tags["release_champion"] == "1"
    finally:
        mlflow.set_tracking_uri("")


@pytest.mark.slow
def test_better_candidate_is_promoted_and_deployed(registry_state) -> None:
    # champion: the inverted detector v2 (on PredNet v1); candidate: v3 of the second run
    settings = registry_state("three", champion=2, prednet=1, release_margin=0.0)
    deployed = []

    def deployer(settings, location, versions, target):
        deployed.append((location, versions, target, _aliases()))
        return "endpoint va-demo-plaza, deployment green"

    smoke = FakeSmoke()
    result = release(settings, LOCATION, deploy="azureml-v2", smoke=smoke, deployer=deployer)
    assert result.passed and result.promoted, result.reason
    assert (result.candidate, result.champion) == (3, 2)
    assert result.candidate_auc > result.champion_auc
    assert re.search(r"above champion v2 AUC 0\.\d{3} \(margin 0\.000\)", result.reason)
    assert result.candidate_oof_auc is not None
    versions = {"classifier": f"{CLASSIFIER}/3", "prednet": f"{PREDNET}/2"}
    assert deployed == [(LOCATION, versions, "azureml-v2", (3, 2))]
    assert _aliases() == (3, 2)
    assert smoke.aliases_during == [(3, 2)]
    tags = mlflow.MlflowClient().get_model_version(CLASSIFIER, "3").tags
    assert tags["release_gate"] == "passed" and tags["release_champion"] == "2"
    assert tags["release_auc"] == f"{result.candidate_auc:.3f}"
    text = "\n".join(result.lines())
    assert "deploy:      azureml-v2: endpoint va-demo-plaza" in text
    assert f"AUC {result.candidate_auc:.3f}" in text and f"AUC {result.champion_auc:.3f}" in text

    # Idempotent: the candidate now is the champion, so there is nothing to do.
    again = release(settings, LOCATION, smoke=FakeSmoke(passed=False), deployer=_no_deploy)
    assert again.passed and not again.promoted and "already champion" in again.reason


@pytest.mark.slow
def test_failed_smoke_test_leaves_the_champion(registry_state) -> None:
    settings = registry_state("three", champion=2, prednet=1)
    smoke = FakeSmoke(passed=False)
    result = release(settings, LOCATION, smoke=smoke, deployer=_no_deploy)
    assert not result.passed and not result.promoted
    assert "smoke test failed: POST /score/demo-plaza answered 500" in result.reason
    assert smoke.aliases_during == [(3, 2)]  # tentatively moved for the service ...
    assert _aliases() == (2, 1)  # ... and moved back
    assert "changed:     nothing" in "\n".join(result.lines())


@pytest.mark.slow
def test_failed_deploy_rolls_the_alias_back(registry_state) -> None:
    def broken(settings, location, versions, target):
        raise RuntimeError("endpoint va-demo-plaza: quota exceeded")

    settings = registry_state("three", champion=2, prednet=1)
    result = release(settings, LOCATION, deploy="azureml-v1", smoke=FakeSmoke(), deployer=broken)
    assert not result.passed and not result.promoted
    assert "deploying to azureml-v1 failed: endpoint va-demo-plaza: quota exceeded" in result.reason
    assert _aliases() == (2, 1)

    # A first model: rolling back means no champion at all again.
    settings = registry_state("one", release_min_auc=0.5)
    result = release(settings, LOCATION, deploy="azureml-v2", smoke=FakeSmoke(), deployer=broken)
    assert not result.passed and _aliases() == (None, None)


@pytest.mark.slow
@pytest.mark.skipif(not SERVER_MODULE.exists(), reason="the HTTP service is not written yet")
def test_real_smoke_test_through_the_http_service(registry_state) -> None:
    # The service serves the champion; the gate makes that the candidate v3 for the test.
    settings = registry_state("three", champion=2, prednet=1)
    result = release(settings, LOCATION, deployer=_no_deploy)
    assert result.smoke is not None and result.smoke.passed, result.smoke and result.smoke.detail
    assert result.passed and _aliases() == (3, 2)
    assert "same scores as the gate" in result.smoke.detail


@pytest.mark.slow
def test_no_labels_is_a_clear_failure(registry: dict, registry_state, tmp_path: Path) -> None:
    settings = registry_state("one", release_min_auc=0.0)
    unlabelled = tmp_path / "unlabelled"
    shutil.copytree(registry["store"] / LOCATION / "test", unlabelled)
    (unlabelled / "labels.csv").unlink()
    result = release(
        settings, LOCATION, eval_path=unlabelled, smoke=FakeSmoke(), deployer=_no_deploy
    )
    assert not result.passed
    assert result.reason.startswith("cannot gate without labelled frames")
    assert _aliases() == (None, None)


# ------------------------------------------------------------------ no training
def test_evaluation_clips_from_datastore_eval_folder_and_ucsd(tmp_path: Path) -> None:
    store = write_tiny_demo(tmp_path / "ds")
    source = open_evaluation(str(store), LOCATION, None)
    assert [c.name for c in source.clips] == ["test_001", "test_002"]
    assert source.from_datastore and source.labels is not None
    labels = source.frame_labels(source.clips[1], 20)
    assert labels.sum() > 0 and source.frame_labels(source.clips[0], 20).sum() == 0

    # --eval: a location-shaped folder, or the test folder itself
    for folder in (store / LOCATION, store / LOCATION / "test"):
        other = open_evaluation("unused", LOCATION, folder)
        assert [c.name for c in other.clips] == ["test_001", "test_002"]
        assert not other.from_datastore
        assert list(other.frame_labels(other.clips[1], 20)) == list(labels)

    write_ucsd_style_location(tmp_path / "ucsd", "UCSDped_synth", frames_per_clip=12)
    ucsd = open_evaluation(str(tmp_path / "ucsd"), "UCSDped_synth", None)
    assert [c.name for c in ucsd.clips] == ["Test001", "Test002"]
    assert ucsd.label_source.endswith(".m")
    assert all(ucsd.frame_labels(c, 12).sum() > 0 for c in ucsd.clips)
    frames = list(ucsd.frames(ucsd.clips[0]))
    assert len(frames) == 12 and frames[0].ndim == 3


def test_auc_needs_both_classes() -> None:
    scores = [np.array([0.1, 0.2, 0.9, 0.8])]
    assert Evaluation(np.array([0, 0, 1, 1]), scores).auc(0) == 1.0
    assert Evaluation(np.array([0, 0, 1, 1]), scores).missing_labels() is None
    assert "normal" in Evaluation(np.zeros(4, int), scores).missing_labels()
    assert "no labels" in Evaluation(np.full(4, -1), scores).missing_labels()
    assert "could be read" in Evaluation(np.zeros(0, int), []).missing_labels()


def test_smoke_response_checks(tmp_path: Path) -> None:
    versions = {"classifier": f"{CLASSIFIER}/3", "prednet": f"{PREDNET}/2"}
    request = SmokeRequest(LOCATION, tmp_path / "c.avi", 3, versions, np.array([0.1, 0.5, 0.9]))

    def body(**changes):
        answer = {
            "location": LOCATION,
            "models": dict(versions),
            "frames": [
                {"frame": i + 1, "anomaly_score": s, "is_anomaly": int(s >= 0.5)}
                for i, s in enumerate([0.1, 0.5, 0.9])
            ],
        }
        answer.update(changes)
        return answer

    assert check_response(body(), request) is None
    served_champion = {"classifier": f"{CLASSIFIER}/2", "prednet": f"{PREDNET}/1"}
    assert "not the candidate's" in check_response(body(models=served_champion), request)
    assert "2 frame entries" in check_response(body(frames=body()["frames"][:2]), request)
    shuffled = body()["frames"][::-1]
    assert "expected frame 1" in check_response(body(frames=shuffled), request)
    out_of_range = [dict(f, anomaly_score=1.5) for f in body()["frames"]]
    assert "not a number in [0, 1]" in check_response(body(frames=out_of_range), request)
    bad_flag = [dict(f, is_anomaly=2) for f in body()["frames"]]
    assert "not 0 or 1" in check_response(body(frames=bad_flag), request)
    other = [dict(f, anomaly_score=0.3) for f in body()["frames"]]
    assert "differ from the gate's" in check_response(body(frames=other), request)
    assert "not a JSON object" in check_response([], request)


def test_report_lines_show_both_aucs() -> None:
    result = ReleaseResult(
        LOCATION,
        passed=False,
        reason="candidate v3 AUC 0.812 is 0.051 below champion v2 AUC 0.863 (margin 0.020)",
        classifier_name=CLASSIFIER,
        candidate=3,
        champion=2,
        candidate_prednet=f"{PREDNET}/2",
        champion_prednet=f"{PREDNET}/1",
        candidate_auc=0.812,
        champion_auc=0.863,
        candidate_oof_auc=0.85,
        margin=0.02,
        n_frames=400,
        clips=["a", "b"],
        evaluation="test clips of demo-plaza in the datastore /data",
        evaluation_is_training_data=True,
    )
    text = "\n".join(result.lines())
    assert "v3 (prednet-demo-plaza/2): AUC 0.812; out-of-fold AUC at training 0.850" in text
    assert "v2 (prednet-demo-plaza/1): AUC 0.863" in text
    assert "400 frames of 2 clip(s)" in text and "--eval" in text
    assert "FAILED: candidate v3 AUC 0.812" in text and "changed:     nothing" in text


def test_mjpg_encoding_of_a_frame_folder_clip(tmp_path: Path) -> None:
    from ml_service.release.evaluation import clip_as_video

    store = write_tiny_demo(tmp_path / "ds")
    source = open_evaluation(str(store), LOCATION, None)
    video = clip_as_video(source, source.clips[0], tmp_path)
    capture = cv2.VideoCapture(str(video))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    assert video.suffix == ".avi" and count == 20


def test_evaluation_clips_from_a_blob_datastore(
    azurite: str, mixed_location: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.storage.blob import BlobServiceClient

    container = BlobServiceClient.from_connection_string(azurite).get_container_client(
        f"gate{os.getpid()}"
    )
    container.create_container()
    try:
        for path in sorted(p for p in mixed_location.rglob("*") if p.is_file()):
            container.upload_blob(
                f"p/{path.relative_to(mixed_location).as_posix()}", path.read_bytes()
            )
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite)
        uri = f"azureblob://{container.container_name}/p"
        source = open_evaluation(uri, "cam-1", None, cache_dir=tmp_path / "cache")
        local = open_evaluation(str(mixed_location), "cam-1", None)
        assert [c.name for c in source.clips] == [c.name for c in local.clips] == ["t1", "t2"]
        for blob_clip, local_clip in zip(source.clips, local.clips, strict=True):
            frames = list(source.frames(blob_clip))
            assert len(frames) == len(list(local.frames(local_clip))) == 10
            assert list(source.frame_labels(blob_clip, 10)) == list(
                local.frame_labels(local_clip, 10)
            )
        assert list(source.frame_labels(source.clips[1], 10)) == [0, 0, 1, 1, 1, 0, 0, 0, 1, 0]
    finally:
        container.delete_container()


@pytest.mark.slow
def test_real_smoke_test_reports_a_service_that_cannot_score(tmp_path: Path) -> None:
    from ml_service.release.smoke import service_smoke_test

    settings = Settings.load({"home": tmp_path / "home"}, env_file=None, environ={})
    video = tmp_path / "clip.avi"
    request = SmokeRequest("nowhere", video, 3, {"classifier": "anomaly-classifier-nowhere/1"})
    result = service_smoke_test(settings, request, not_ready_grace=1.0)
    assert not result.passed
    assert result.detail.startswith("GET /healthz answered 503") and "\n" not in result.detail
    assert "no registered detector 'anomaly-classifier-nowhere'" in result.log
    assert "uvicorn.access" not in result.log


def test_deploy_without_workspace_settings_fails_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    for name in ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AML_WORKSPACE_NAME"):
        monkeypatch.delenv(name, raising=False)
    args = ["release", "--location", LOCATION, "--deploy", "azureml-v2"]
    assert main([*args, "--home", str(tmp_path / "home")]) == 2
    assert "missing Azure settings: AZURE_SUBSCRIPTION_ID" in capsys.readouterr().err
    assert not (tmp_path / "home").exists()  # not even a tracking database was created
