"""The backend-neutral half of the Azure ML support: settings, step specs, the submitting
master and the ``videoanom azure`` commands, with a fake backend standing in for an SDK."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest
from conftest import moving_square_frames, write_frame_folder

from ml_service.azure import commands
from ml_service.azure.master_step import build_parser as master_parser
from ml_service.azure.master_step import run_master
from ml_service.azure.spec import (
    DATASTORE,
    Ref,
    job_environment,
    master_spec,
    training_specs,
)
from ml_service.azure.submit import Submission
from ml_service.pipelines.definition import pipeline_params, training_pipeline
from ml_service.state import read_state
from ml_service.util.env_variables import AzureSettings, Settings, SettingsError
from videoanom.steps.train import build_parser as train_parser
from videoanom.steps.train import fixed_space
from videoanom.training.search_space import SEARCH_SPACE, Choice

WORKSPACE = {
    "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
    "AZURE_RESOURCE_GROUP": "rg",
    "AML_WORKSPACE_NAME": "ws",
}


def local_arguments(location: str = "campus") -> dict[str, list[str]]:
    """What the local runner passes each step, with data paths as placeholders."""
    settings = Settings.load(env_file=None, environ={})
    params = pipeline_params(settings, location, "<input:datastore>")
    out = {}
    for step in training_pipeline().ordered():
        paths = {n: Path(f"<input:{n}>") for n in step.inputs}
        paths.update({n: Path(f"<output:{n}>") for n in step.outputs})
        out[step.name] = step.arguments(paths, params)
    return out


def render(tokens: list) -> list[str]:
    return [t if isinstance(t, str) else f"<{t.kind}:{t.name}>" for t in tokens]


# ---------------------------------------------------------------- settings


def test_azure_settings_precedence_and_defaults(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("AML_SDK=v2\nAML_GPU_MAX_NODES=2\nAML_WORKSPACE_NAME=from-file\n")
    azure = AzureSettings.load(
        {"workspace_name": "from-flag"}, env_file=env_file, environ={"AML_GPU_MAX_NODES": "6"}
    )
    assert (azure.sdk, azure.gpu_max_nodes, azure.workspace_name) == ("v2", 6, "from-flag")
    assert azure.cpu_min_nodes == 0, "clusters scale to zero by default"
    assert azure.training_pipeline_name("Campus North") == "prednet-campus-north"


def test_missing_workspace_settings_are_named_in_one_error() -> None:
    azure = AzureSettings.load(env_file=None, environ={"AML_WORKSPACE_NAME": "ws"})
    with pytest.raises(SettingsError) as info:
        azure.require_workspace()
    message = str(info.value)
    assert "AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP" in message
    assert "AML_WORKSPACE_NAME" not in message and "\n" not in message


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("AML_SDK", "v3", "use one of v1, v2"),
        ("AML_SEARCH_SAMPLING", "grid", "random, bayesian"),
        ("AML_CPU_MAX_NODES", "0", "max >= 1"),
        ("AML_SEARCH_MAX_CONCURRENT", "20", "between 1 and AML_SEARCH_MAX_RUNS=8"),
        ("AML_BANDIT_SLACK_FACTOR", "2", "in (0, 1)"),
        ("AML_POLLING_INTERVAL_MINUTES", "soon", "not a whole number"),
    ],
)
def test_bad_azure_values_name_the_variable(variable: str, value: str, fragment: str) -> None:
    with pytest.raises(SettingsError, match=variable) as info:
        AzureSettings.load(env_file=None, environ={variable: value})
    assert fragment in str(info.value)


# ---------------------------------------------------------------- step specs


def test_specs_run_the_local_runners_scripts_with_its_arguments() -> None:
    settings = Settings.load(env_file=None, environ={})
    specs = training_specs(settings, "campus")
    local = local_arguments()
    assert [s.name for s in specs] == list(local)
    for spec in specs:
        step = next(s for s in training_pipeline().steps if s.name == spec.name)
        assert spec.script == f"code/{step.script}"
        assert (Path(__file__).parents[1] / spec.script).is_file()
        args = render(spec.tokens())
        if spec.searched:  # the SDK's search runs one trial per job
            expected = [a if a != str(settings.trials) else "1" for a in local[spec.name]]
            n = 2 * len(spec.searched)
            assert args[:-n] == expected
            assert args[-n:][1::2] == [f"<search:{name}>" for name in SEARCH_SPACE]
        else:
            assert args == local[spec.name], spec.name


def test_datastore_is_a_mounted_input_and_empty_values_are_left_out() -> None:
    settings = Settings.load(env_file=None, environ={})
    data_prep, train = training_specs(settings, "campus")[:2]
    assert data_prep.inputs == (DATASTORE,)
    assert not data_prep.allow_reuse, "reuse by path would train on stale data"
    assert train.allow_reuse
    assert Ref("input", DATASTORE) in data_prep.tokens()
    assert "--init-from" not in train.tokens(), "an empty value would break a command line"
    warm = training_specs(settings, "campus", init_from="models:/prednet-a/1")[1]
    assert warm.tokens()[warm.tokens().index("--init-from") + 1] == "models:/prednet-a/1"


def test_train_step_accepts_every_searched_hyperparameter() -> None:
    settings = Settings.load(env_file=None, environ={})
    train = training_specs(settings, "campus")[1]
    sample = {"batch_size": "8", "filter_sizes": "5,3,3", "stack_sizes": "12,24,48"}
    sample |= {"learning_rate": "0.002", "lr_decay": "0.05"}
    args = train_parser().parse_args(
        train.render({**sample, "prepared_data": "p", "trained_model": "t"})
    )
    space = fixed_space(args)
    assert space == {
        "batch_size": Choice((8,)),
        "filter_sizes": Choice(("5,3,3",)),
        "stack_sizes": Choice(("12,24,48",)),
        "learning_rate": Choice((0.002,)),
        "lr_decay": Choice((0.05,)),
    }


def test_fixed_hyperparameters_need_one_trial() -> None:
    args = train_parser().parse_args(
        ["--prepared-data", "p", "--trained-model", "t", "--trials", "4", "--batch-size", "8"]
    )
    with pytest.raises(ValueError, match="--batch-size fix hyperparameters: use --trials 1"):
        fixed_space(args)
    plain = train_parser().parse_args(["--prepared-data", "p", "--trained-model", "t"])
    assert fixed_space(plain) is None, "no flags: the local Optuna search runs"


def test_master_spec_matches_the_master_step_script() -> None:
    spec = master_spec(quiet_seconds=60, max_retries=2)
    args = master_parser().parse_args(spec.render({"datastore": "/mnt/data", "state": "/mnt/s"}))
    assert (args.datastore, args.state) == (Path("/mnt/data"), Path("/mnt/s"))
    assert (args.quiet_seconds, args.max_retries) == (60.0, 2)
    assert spec.allow_reuse is False


def test_job_environment_carries_settings_but_no_secret_or_local_path() -> None:
    environ = {**WORKSPACE, "VIDEOANOM_TRIALS": "6", "AZURE_STORAGE_CONNECTION_STRING": "secret"}
    settings = Settings.load(env_file=None, environ=environ)
    azure = AzureSettings.load(env_file=None, environ=environ)
    env = job_environment(settings, azure)
    assert env["VIDEOANOM_TRIALS"] == "6" and env["AML_WORKSPACE_NAME"] == "ws"
    assert "secret" not in json.dumps(env)
    assert not {"VIDEOANOM_HOME", "MLFLOW_TRACKING_URI", "VIDEOANOM_DATASTORE"} & set(env)


# ---------------------------------------------------------------- the submitting master


class FakeBackend:
    """A backend whose runs end however the test says."""

    sdk = "fake"

    def __init__(self) -> None:
        self.submitted: list[tuple[str, str]] = []
        self.statuses: dict[str, str] = {}

    def submit(self, location: str, init_from: str = "") -> Submission:
        run_id = f"run-{location}-{len(self.submitted)}"
        self.submitted.append((location, run_id))
        self.statuses[run_id] = "Running"
        return Submission(location, f"prednet-{location}", run_id, f"https://ml/{run_id}")

    def run_status(self, run_id: str) -> str:
        if run_id not in self.statuses:
            raise RuntimeError("service unavailable")
        return self.statuses[run_id]

    def active_run(self, location: str) -> str | None:
        return next(
            (
                run
                for loc, run in self.submitted
                if loc == location and self.statuses.get(run) == "Running"
            ),
            None,
        )


def master_args(tmp_path: Path, **extra: object) -> argparse.Namespace:
    store = tmp_path / "mnt" / "videoanom"
    for name in ("campus", "plaza"):
        write_frame_folder(store / name / "train" / "c0", moving_square_frames(4))
    argv = ["--datastore", str(store), "--state", str(tmp_path / "state"), "--quiet-seconds", "0"]
    for key, value in extra.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return master_parser().parse_args(argv)


def test_master_step_submits_each_new_location_once(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = master_args(tmp_path)
    backend = FakeBackend()
    first = run_master(args, backend)
    assert sorted(loc for loc, _ in backend.submitted) == ["campus", "plaza"]
    assert all(d["outcome"].startswith("submitted: prednet-") for d in first)
    record = read_state(args.state, "campus")
    assert record["state"] == "submitted" and record["url"].startswith("https://ml/run-campus")
    second = run_master(args, backend)
    assert len(backend.submitted) == 2, "a submitted location is not submitted again"
    assert {d["reason"] for d in second} == {
        f"pipeline {r} submitted" for _, r in backend.submitted
    }
    for _, run_id in backend.submitted:
        backend.statuses[run_id] = "Completed"
    run_master(args, backend)
    assert read_state(args.state, "campus")["state"] == "succeeded"
    assert len(backend.submitted) == 2
    decisions = json.loads((args.state / "decisions.json").read_text())
    assert {d["reason"] for d in decisions} == {"already trained"}


def test_master_step_retries_failed_runs_then_gives_up(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = master_args(tmp_path, backoff_seconds=0, max_retries=2)
    backend = FakeBackend()
    for _ in range(4):
        run_master(args, backend)
        for location, run_id in backend.submitted:
            backend.statuses[run_id] = "Failed" if location == "plaza" else "Completed"
    plaza = [run for loc, run in backend.submitted if loc == "plaza"]
    assert len(plaza) == 2, "submitted, failed, retried once, failed, given up"
    record = read_state(args.state, "plaza")
    assert record["state"] == "failed" and "ended failed" in record["reason"]
    assert read_state(args.state, "campus")["state"] == "succeeded"


def test_overlapping_master_runs_do_not_submit_twice(tmp_path: Path, monkeypatch) -> None:
    """Two master runs on Azure ML (a schedule firing while the last one works) share the
    workspace but may not see each other's records in time: the workspace is asked."""
    monkeypatch.chdir(tmp_path)
    backend = FakeBackend()
    run_master(master_args(tmp_path), backend)
    other_state = master_args(tmp_path)
    other_state.state = tmp_path / "state-of-an-overlapping-run"
    decisions = run_master(other_state, backend)
    assert len(backend.submitted) == 2, "nothing submitted twice"
    assert {d["outcome"] for d in decisions} == {
        f"submitted: already running as run {run}" for _, run in backend.submitted
    }
    assert read_state(other_state.state, "campus")["pipeline_id"] == "run-campus-0"


def test_unknown_run_status_keeps_the_location_submitted(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = master_args(tmp_path)
    backend = FakeBackend()
    run_master(args, backend)
    backend.statuses.clear()  # the service cannot answer
    run_master(args, backend)
    assert read_state(args.state, "campus")["state"] == "submitted"
    assert len(backend.submitted) == 2


# ---------------------------------------------------------------- commands


class CommandBackend(FakeBackend):
    def __init__(self, settings: Settings, azure: AzureSettings, connect: bool) -> None:
        super().__init__()
        self.azure, self.connect = azure, connect

    def describe(self) -> str:
        return f"pipeline {self.azure.master_pipeline_name} with {self.azure.sdk}"

    def submit_master(self) -> Submission:
        return Submission("", "prednet-master", "m-1")

    def status(self) -> list[dict]:
        return [
            {"name": "prednet-campus", "location": "campus", "status": "Running", "run_id": "r1"}
        ]


def test_dry_run_describes_both_sdks_without_a_workspace() -> None:
    settings = Settings.load(env_file=None, environ={})
    azure = AzureSettings.load(env_file=None, environ={})
    text = commands.publish(settings, azure, dry_run=True, factory=CommandBackend)
    assert "AML_SDK=v1" in text and "AML_SDK=v2" in text
    assert "prednet-master with v1" in text and "prednet-master with v2" in text


def test_commands_need_the_workspace_and_render_runs() -> None:
    settings = Settings.load(env_file=None, environ={})
    with pytest.raises(SettingsError, match="missing Azure settings"):
        commands.status(
            settings, AzureSettings.load(env_file=None, environ={}), factory=CommandBackend
        )
    azure = AzureSettings.load(env_file=None, environ=WORKSPACE)
    table = commands.status(settings, azure, factory=CommandBackend)
    assert table.splitlines()[1].split() == ["prednet-campus", "campus", "Running", "r1"]
    out = commands.submit(settings, azure, "campus", factory=CommandBackend)
    assert out.splitlines() == [
        "submitted: prednet-campus as run run-campus-0",
        "https://ml/run-campus-0",
    ]
    with pytest.raises(ValueError, match="contains a path separator"):
        commands.submit(settings, azure, "../etc", factory=CommandBackend)


def test_service_errors_become_one_line() -> None:
    from azure.core.exceptions import ClientAuthenticationError

    class Refused(CommandBackend):
        def status(self) -> list[dict]:
            raise ClientAuthenticationError("DefaultAzureCredential failed\nlong trace")

    settings = Settings.load(env_file=None, environ={})
    azure = AzureSettings.load(env_file=None, environ=WORKSPACE)
    with pytest.raises(commands.AzureServiceError) as info:
        commands.status(settings, azure, factory=Refused)
    assert str(info.value) == "Azure ML: ClientAuthenticationError: DefaultAzureCredential failed"


def test_cli_reports_missing_settings_in_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    from videoanom.cli import main

    for name in WORKSPACE:
        monkeypatch.delenv(name, raising=False)
    code = main(["azure", "status", "--env-file", str(tmp_path / "none.env")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: missing Azure settings: AZURE_SUBSCRIPTION_ID")
    assert "\n" not in err
    code = main(["azure", "submit", "--env-file", str(tmp_path / "none.env")])
    assert code == 2 and "--location NAME or --master" in capsys.readouterr().err


def test_every_setting_dataclass_field_has_a_variable() -> None:
    for cls in (Settings, AzureSettings):
        for field in dataclasses.fields(cls):
            assert field.metadata.get("env"), f"{cls.__name__}.{field.name} has no variable"


@pytest.mark.parametrize("sdk", ["v1", "v2"])
def test_both_sdks_run_the_local_runners_scripts_and_arguments(sdk: str) -> None:
    """Read back from the built SDK objects: the same scripts and arguments as locally."""
    import importlib

    module = importlib.import_module(f"ml_service.azure.{sdk}")
    settings = Settings.load(env_file=None, environ={})
    azure = AzureSettings.load(env_file=None, environ={"AML_SDK": sdk})
    built = module.built_step_arguments(settings, azure, "campus")
    local = local_arguments()
    if sdk == "v1":
        # HyperDrive cannot hand on its best trial's folder: each trial writes its own
        # outputs/, and an extra step copies the best one into the trained_model data.
        script, args = built.pop("best_trial")
        assert args[args.index("--trained-model") + 1] == "<output:trained_model>"
        script, args = built["train"]
        i = args.index("--trained-model") + 1
        assert args[i] == module.TRIAL_FOLDER
        built["train"] = (script, [*args[:i], "<output:trained_model>", *args[i + 1 :]])
    assert list(built) == list(local)
    steps = {s.name: s for s in training_pipeline().steps}
    for name, (script, args) in built.items():
        assert script == f"code/{steps[name].script}"
        expected = list(local[name])
        if name == "train":
            expected[expected.index("--trials") + 1] = "1"
            expected += [
                x for n in SEARCH_SPACE for x in (f"--{n.replace('_', '-')}", f"<search:{n}>")
            ]
        assert args == expected, f"{sdk} {name}"


def test_publish_dry_run_prints_both_sdks_pipelines_without_azure(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """``videoanom azure publish --dry-run`` with no workspace settings and no network."""
    import socket

    from videoanom.cli import main

    for name in WORKSPACE:
        monkeypatch.delenv(name, raising=False)

    def no_network(*args, **kwargs):
        raise AssertionError("a dry run must not open a connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    code = main(["azure", "publish", "--dry-run", "--env-file", str(tmp_path / "none.env")])
    out = capsys.readouterr().out
    assert code == 0
    v1, v2 = out.split("=== AML_SDK=v2")
    for text in (v1, v2):
        for step in ("data_prep", "train", "register_prednet", "batch_scoring"):
            assert f"code/{step}.py" in text
        assert "ml_service/azure/master_step.py" in text
        assert "val_loss" in text and "bandit" in text.lower()
    assert "prednet-master-schedule" in v1 and "polled every 5 min" in v1
    assert "recurrence" in v2.lower() or "frequency: minute" in v2
