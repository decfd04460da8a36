"""The ``videoanom`` command line, end to end on tiny data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import TINY_RUN, write_tiny_demo

from videoanom.cli import main
from videoanom.data.demo import write_ucsd_style_location

ROOT = Path(__file__).resolve().parents[1]


def videoanom(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "videoanom", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=900,
    )


def test_help_does_not_import_tensorflow() -> None:
    code = (
        "import sys\n"
        "from videoanom.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('tensorflow' in sys.modules, 'mlflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False False")


@pytest.mark.parametrize("verb", ["demo-data", "run", "score", "status"])
def test_every_verb_has_help(verb: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([verb, "--help"])
    assert exit_info.value.code == 0
    assert "usage: videoanom" in capsys.readouterr().out


def test_unknown_location_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "store" / "cam").mkdir(parents=True)
    code = main(
        [
            "run",
            "--location",
            "nowhere",
            "--datastore",
            str(tmp_path / "store"),
            "--home",
            str(tmp_path / "h"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [f"error: location 'nowhere' not found in datastore {tmp_path / 'store'}"]


def test_unsafe_location_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(
        ["run", "--location", "../etc", "--datastore", str(tmp_path), "--home", str(tmp_path / "h")]
    )
    assert code == 2
    assert "path separator" in capsys.readouterr().err


def test_failed_step_names_the_step_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    loc = tmp_path / "store" / "cam"
    (loc / "train" / "a").mkdir(parents=True)
    (loc / "train" / "a" / "1.png").write_bytes(b"garbage")
    code = main(
        [
            "run",
            "--location",
            "cam",
            "--datastore",
            str(tmp_path / "store"),
            "--home",
            str(tmp_path / "h"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 3
    assert (
        "step data_prep failed" in err and "no usable train clip (a: 1.png cannot be decoded" in err
    )
    state = json.loads((tmp_path / "h" / "locations" / "cam" / "state.json").read_text())
    assert state["state"] == "failed" and state["step"] == "data_prep"


def test_demo_data_command_writes_locations(tmp_path: Path) -> None:
    result = videoanom(
        "demo-data",
        str(tmp_path / "ds"),
        "--locations",
        "1",
        "--frames-per-clip",
        "12",
        "--train-clips",
        "2",
        "--test-clips",
        "2",
        "--height",
        "48",
        "--width",
        "64",
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ds" / "demo-plaza" / "test" / "labels.csv").is_file()


@pytest.mark.slow
def test_run_end_to_end_registers_a_tagged_prednet(tmp_path: Path) -> None:
    store, home = write_tiny_demo(tmp_path / "ds"), tmp_path / "home"
    before = sorted(p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file())
    args = [
        "run",
        "--location",
        "demo-plaza",
        "--datastore",
        str(store),
        "--home",
        str(home),
        "--trials",
        "1",
        "--max-epochs",
        "2",
    ]
    result = videoanom(*args, env=TINY_RUN)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "registered: models:/prednet-demo-plaza/1" in result.stdout
    assert sorted(p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()) == before

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home.resolve() / 'mlflow.db'}")
    version = client.get_model_version("prednet-demo-plaza", "1")
    for tag in (
        "location",
        "data_fingerprint",
        "git_commit",
        "val_loss",
        "val_mae",
        "copy_last_mae",
        "param.learning_rate",
        "param.stack_sizes",
    ):
        assert tag in version.tags, tag
    assert version.tags["location"] == "demo-plaza"
    assert len(version.tags["data_fingerprint"]) == 64
    manifest = next(home.glob("steps/demo-plaza/data_prep/*/prepared_data/manifest.json"))
    assert json.loads(manifest.read_text())["fingerprint"] == version.tags["data_fingerprint"]

    detector = client.get_model_version("anomaly-classifier-demo-plaza", "1")
    for tag in (
        "location",
        "data_fingerprint",
        "git_commit",
        "scorer",
        "threshold",
        "features",
        "prednet",
    ):
        assert tag in detector.tags, tag
    assert detector.tags["prednet"] == "models:/prednet-demo-plaza/1"
    report = next(home.glob("steps/demo-plaza/train_classifier/*/classifier/report"))
    assert (report / "metrics.json").is_file() and (report / "timeline.png").is_file()

    # A second run reuses every finished step: no new version, no retraining.
    again = videoanom(*args, env=TINY_RUN)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("reusing finished output") == 6
    assert "models:/prednet-demo-plaza/1" in again.stdout

    status = videoanom("status", "--datastore", str(store), "--home", str(home))
    assert status.returncode == 0, status.stderr
    row = [line for line in status.stdout.splitlines() if line.startswith("demo-plaza")]
    assert row and "succeeded" in row[0] and "v1" in row[0]

    # score: a folder of clips (frame folders and videos), one row per frame, in order.
    out = tmp_path / "scores.csv"
    score_args = ["score", "--location", "demo-plaza", "--home", str(home)]
    scored = videoanom(
        *score_args, "--input", str(store / "demo-plaza" / "test"), "--output", str(out)
    )
    assert scored.returncode == 0, scored.stderr[-3000:]
    table = pd.read_csv(out)
    assert list(table.columns[:4]) == ["clip", "frame", "anomaly_score", "is_anomaly"]
    assert list(dict.fromkeys(table["clip"])) == ["test_001", "test_002"]
    for _, rows in table.groupby("clip"):
        assert rows["frame"].tolist() == list(range(1, 21))
    assert table["anomaly_score"].between(0, 1).all()
    assert set(table["is_anomaly"]) <= {0, 1}

    video = next((store / "demo-plaza" / "test").glob("*.mp4"))
    single = videoanom(*score_args, "--input", str(video))
    assert single.returncode == 0, single.stderr[-3000:]
    lines = single.stdout.strip().splitlines()
    assert lines[0] == "clip,frame,anomaly_score,is_anomaly" and len(lines) == 21
    assert lines[1].startswith(f"{video.stem},1,")

    missing = videoanom(*score_args, "--input", str(tmp_path / "nope.avi"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_run_on_ucsd_layout_and_warm_start(tmp_path: Path) -> None:
    store, home = tmp_path / "ds", tmp_path / "home"
    write_ucsd_style_location(store, "UCSDped_synth", frames_per_clip=20)
    write_ucsd_style_location(store, "UCSDped_other", seed=1, frames_per_clip=20)
    common = ["--datastore", str(store), "--home", str(home), "--trials", "1", "--max-epochs", "1"]
    first = videoanom("run", "--location", "UCSDped_synth", *common, env=TINY_RUN)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "models:/prednet-ucsdped-synth/1" in first.stdout
    second = videoanom(
        "run",
        "--location",
        "UCSDped_other",
        "--init-from",
        "UCSDped_synth",
        "--freeze-layers",
        "0",
        *common,
        env=TINY_RUN,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home.resolve() / 'mlflow.db'}")
    tags = client.get_model_version("prednet-ucsdped-other", "1").tags
    assert tags["init_from"] == "UCSDped_synth"
