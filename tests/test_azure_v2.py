"""The azure-ai-ml (v2) backend, offline: the jobs it builds pass the SDK's own validation,
dump to YAML and load back as the same pipelines; the service calls are checked against an
MLClient whose operations are mocked (nothing reaches Azure)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
import yaml
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError
from offline_azure import offline_client

from ml_service.azure import spec as specs
from ml_service.azure import v2  # imports azure-ai-ml without its marshmallow notices
from ml_service.azure.backend import backend_for
from ml_service.azure.commands import AzureServiceError
from ml_service.azure.submit import Submission
from ml_service.azure.v2 import build
from ml_service.azure.v2.build import AmlCompute, JobSchedule, PipelineJob
from ml_service.pipelines.definition import pipeline_params, training_pipeline
from ml_service.util.env_variables import AzureSettings, Settings, SettingsError
from videoanom.training.search_space import SEARCH_SPACE, search_flag

# azure-ai-ml 1.35 uses marshmallow APIs that marshmallow 3.x flags for its next major.
pytestmark = [
    pytest.mark.filterwarnings("ignore::marshmallow.warnings.RemovedInMarshmallow4Warning"),
    pytest.mark.filterwarnings("ignore::marshmallow.warnings.ChangedInMarshmallow4Warning"),
]

LOCATION = "North Gate 2"
WORKSPACE = {
    "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
    "AZURE_RESOURCE_GROUP": "rg-videoanom",
    "AML_WORKSPACE_NAME": "ws-videoanom",
}
STEPS = [
    "data_prep",
    "train",
    "register_prednet",
    "batch_scoring",
    "train_classifier",
    "register_classifier",
]


@pytest.fixture(autouse=True)
def conda_file(tmp_path_factory, monkeypatch):
    """environment_setup/conda.yml, or a stand-in while it does not exist yet."""
    if not specs.CONDA_FILE.is_file():
        stand_in = tmp_path_factory.mktemp("env") / "conda.yml"
        stand_in.write_text("name: videoanom\ndependencies:\n  - python=3.11\n")
        monkeypatch.setattr(specs, "CONDA_FILE", stand_in)
    return specs.CONDA_FILE


def settings(**env: str) -> Settings:
    return Settings.load(env_file=None, environ=env)


def azure(**env: str) -> AzureSettings:
    return AzureSettings.load(env_file=None, environ={"AML_SDK": "v2", **env})


def dump_and_load(entity, path: Path):
    """The SDK's YAML of ``entity`` written to ``path`` and loaded back with load_job, and the
    loaded job's own YAML as a dict (what the assertions read).

    Loading from YAML makes inline components and environments anonymous (as ``az ml job
    create -f`` would); everything else comes back as it was built.
    """
    from azure.ai.ml import load_job

    text = build.to_yaml(build.validate(entity))
    path.write_text(text)
    loaded = load_job(path)
    assert isinstance(loaded, PipelineJob)
    assert build.validate(loaded) is loaded
    doc = yaml.safe_load(build.to_yaml(loaded))
    built = yaml.safe_load(text)
    for name, node in built["jobs"].items():
        key = "trial" if node["type"] == "sweep" else "component"
        assert node[key]["name"].startswith(("videoanom_", "prednet_")), name
        assert node[key]["environment"]["name"] != "CliV2AnonymousEnvironment"
        for part in (node, node[key]):
            part.get("environment", {}).pop("name", None)
            part.get("environment", {}).pop("version", None)
        node[key].pop("name")
    for node in doc["jobs"].values():
        key = "trial" if node["type"] == "sweep" else "component"
        for part in (node, node[key]):
            part.get("environment", {}).pop("name", None)
            part.get("environment", {}).pop("version", None)
        node[key].pop("name")
        node[key].pop("version")
    assert doc == built  # the round trip keeps everything but those names
    return loaded, doc, yaml.safe_load(text)


# --- the training pipeline ------------------------------------------------------------------


def test_training_pipeline_validates_dumps_and_loads(tmp_path):
    s, a = settings(), azure()
    job = build.training_pipeline_job(s, a, LOCATION)
    loaded, doc, built = dump_and_load(job, tmp_path / "training.yml")

    assert list(job.jobs) == STEPS  # run order, named after the steps
    for name, node in built["jobs"].items():
        component = node["trial"] if name == "train" else node["component"]
        assert component["name"] == f"videoanom_{name}"
    assert set(loaded.jobs) == set(STEPS)
    assert doc["type"] == "pipeline"
    assert doc["display_name"] == a.training_pipeline_name(LOCATION) == "prednet-north-gate-2"
    assert doc["experiment_name"] == "videoanom-training"
    assert doc["tags"] == {"videoanom": "training", "location": LOCATION}
    assert doc["settings"]["default_compute"] == "azureml:cpu-cluster"
    assert doc["inputs"]["datastore"] == {
        "type": "uri_folder",
        "path": "azureml://datastores/workspaceblobstore/paths/videoanom",
        "mode": "ro_mount",
    }
    jobs = doc["jobs"]
    # Data wiring: every input is the datastore or an upstream step's output.
    producers = {name: step for step in training_pipeline().steps for name in step.outputs}
    for name, node in jobs.items():
        spec = next(x for x in specs.training_specs(s, LOCATION) if x.name == name)
        bindings = {k: v["path"] for k, v in node.get("inputs", {}).items() if "path" in v}
        expected = {
            i: "${{parent.inputs.datastore}}"
            if i == specs.DATASTORE
            else f"${{{{parent.jobs.{producers[i].name}.outputs.{i}}}}}"
            for i in spec.inputs
        }
        assert bindings == expected, name
        assert set(node["outputs"]) == set(spec.outputs)
        assert node["compute"] == f"azureml:{specs.compute_name(spec, a)}"
        component = node["trial"] if node["type"] == "sweep" else node["component"]
        assert node["type"] == ("sweep" if name == "train" else "command")
        env_vars = component.get("environment_variables") or node["environment_variables"]
        assert env_vars == specs.job_environment(s, a)
        assert not any(k in env_vars for k in ("MLFLOW_TRACKING_URI", "VIDEOANOM_HOME"))
        assert Path(component["code"]) == specs.SOURCE_DIR  # dumped absolute
        assert component["environment"]["image"] == specs.BASE_IMAGE
        # A step reading the datastore is never reused (reuse is keyed on the path).
        assert component["is_deterministic"] is (name != "data_prep")
    # The GPU steps run on the GPU cluster; the best trial's model reaches register_prednet.
    assert jobs["train"]["compute"] == jobs["batch_scoring"]["compute"] == "azureml:gpu-cluster"
    assert jobs["register_prednet"]["inputs"]["trained_model"]["path"] == (
        "${{parent.jobs.train.outputs.trained_model}}"
    )


def test_train_step_is_a_sweep_over_the_search_space(tmp_path):
    _, doc, _ = dump_and_load(
        build.training_pipeline_job(settings(), azure(), LOCATION), tmp_path / "t.yml"
    )
    sweep = doc["jobs"]["train"]
    assert sweep["objective"] == {"goal": "minimize", "primary_metric": "val_loss"}
    assert sweep["sampling_algorithm"] == "random"
    assert sweep["limits"] == {"max_total_trials": 8, "max_concurrent_trials": 4}
    assert sweep["early_termination"] == {
        "type": "bandit",
        "slack_factor": 0.15,
        "evaluation_interval": 1,
        "delay_evaluation": 2,
    }
    space = sweep["search_space"]
    assert set(space) == set(SEARCH_SPACE)
    assert space["batch_size"] == {"type": "choice", "values": [4, 8]}
    assert space["filter_sizes"] == {"type": "choice", "values": ["3,3,3", "5,3,3"]}
    assert space["stack_sizes"]["values"] == ["16,32,64", "12,24,48", "24,48,96"]
    assert space["lr_decay"] == {"type": "uniform", "min_value": 0.0, "max_value": 0.3}
    # A sweep's loguniform bounds are natural logarithms: exp() gives back the range.
    lr = space["learning_rate"]
    assert lr["type"] == "loguniform"
    assert math.exp(lr["min_value"]) == pytest.approx(1e-3)
    assert math.exp(lr["max_value"]) == pytest.approx(6e-3)
    # Each searched hyperparameter is an input of the trial component, fed to its flag.
    trial = sweep["trial"]
    assert {"batch_size", "learning_rate", "lr_decay"} <= set(trial["inputs"])
    assert trial["inputs"]["batch_size"]["type"] == "integer"
    assert trial["inputs"]["learning_rate"]["type"] == "number"
    assert trial["inputs"]["stack_sizes"]["type"] == "string"
    for name in SEARCH_SPACE:
        assert f"{search_flag(name)} ${{{{inputs.{name}}}}}" in " ".join(trial["command"].split())
    assert "--trials 1 " in trial["command"]  # one trial per job: the sweep runs the others


def test_bayesian_search_has_no_early_termination_and_no_loguniform(tmp_path):
    a = azure(
        AML_SEARCH_SAMPLING="bayesian", AML_SEARCH_MAX_RUNS="20", AML_SEARCH_MAX_CONCURRENT="2"
    )
    _, doc, _ = dump_and_load(
        build.training_pipeline_job(settings(), a, LOCATION), tmp_path / "b.yml"
    )
    sweep = doc["jobs"]["train"]
    assert sweep["sampling_algorithm"] == "bayesian"
    assert "early_termination" not in sweep
    assert sweep["limits"] == {"max_total_trials": 20, "max_concurrent_trials": 2}
    # Bayesian sampling supports choice/uniform/quniform only: the log range becomes uniform.
    assert {v["type"] for v in sweep["search_space"].values()} == {"choice", "uniform"}
    assert sweep["search_space"]["learning_rate"] == {
        "type": "uniform",
        "min_value": 1e-3,
        "max_value": 6e-3,
    }


def test_built_arguments_match_the_local_runner():
    """The scripts and arguments parsed back from the built nodes' commands are those the
    local runner passes, with data and searched values as placeholders."""
    s = settings(VIDEOANOM_MAX_EPOCHS="3", VIDEOANOM_IMAGE_HEIGHT="32")
    init_from = "models:/prednet-south-gate@champion"
    built = v2.built_step_arguments(s, azure(), LOCATION, init_from)
    assert list(built) == STEPS
    values = pipeline_params(s, LOCATION, "<input:datastore>", init_from)
    for step in training_pipeline().ordered():
        searched = list(SEARCH_SPACE) if step.name == specs.SEARCH_STEP else []
        paths = {i: f"<input:{i}>" for i in step.inputs}
        paths |= {o: f"<output:{o}>" for o in step.outputs}
        params = {**values, "trials": 1} if searched else values
        expected = step.arguments(paths, params)
        for name in searched:
            expected += [search_flag(name), f"<search:{name}>"]
        assert built[step.name] == (f"code/{step.script}", expected), step.name
    assert built["data_prep"][1][built["data_prep"][1].index("--location") + 1] == LOCATION
    assert init_from in built["train"][1]


def test_parse_command_rejects_a_non_python_command():
    with pytest.raises(build.BuildError):
        build.parse_command("bash run.sh", set())


# --- the master -----------------------------------------------------------------------------


def test_master_job_mounts_datastore_read_only_and_state_read_write(tmp_path):
    a = azure(
        AML_DATASTORE_NAME="videos",
        AML_DATASTORE_PATH="cameras/",
        AML_STATE_PATH="records",
    )
    s = settings()
    loaded, doc, built = dump_and_load(build.master_pipeline_job(s, a), tmp_path / "master.yml")
    assert list(loaded.jobs) == ["master"]
    assert doc["display_name"] == "prednet-master"
    assert doc["experiment_name"] == "videoanom-master"
    assert doc["inputs"]["datastore"] == {
        "type": "uri_folder",
        "path": "azureml://datastores/videos/paths/cameras",
        "mode": "ro_mount",
    }
    node = doc["jobs"]["master"]
    assert node["inputs"]["datastore"]["path"] == "${{parent.inputs.datastore}}"
    assert node["outputs"]["state"] == {
        "type": "uri_folder",
        "path": "azureml://datastores/videos/paths/records",
        "mode": "rw_mount",
    }
    assert node["compute"] == "azureml:cpu-cluster"
    assert node["identity"] == {"type": "managed_identity"}
    assert node["environment_variables"]["AML_SDK"] == "v2"
    assert node["environment_variables"]["AZURE_RESOURCE_GROUP"] == ""  # settings, no secret
    assert built["jobs"]["master"]["component"]["name"] == "prednet_master"
    component = node["component"]
    assert component["is_deterministic"] is False
    script, args = build.parse_command(component["command"], set())
    assert script == specs.MASTER_SCRIPT
    assert args == specs.master_spec().render(
        {"datastore": "<input:datastore>", "state": "<output:state>"}
    )


def test_master_schedule_recurs_every_polling_interval(tmp_path):
    a = azure(AML_POLLING_INTERVAL_MINUTES="7", AML_MASTER_PIPELINE_NAME="cams-master")
    schedule = build.validate(build.master_schedule(settings(), a))
    assert isinstance(schedule, JobSchedule)
    doc = yaml.safe_load(build.to_yaml(schedule))
    assert doc["name"] == "cams-master-schedule"
    assert doc["trigger"]["type"] == "recurrence"
    assert (doc["trigger"]["frequency"], doc["trigger"]["interval"]) == ("minute", 7)
    assert doc["create_job"]["display_name"] == "cams-master"
    from azure.ai.ml.entities._load_functions import load_schedule

    # load_schedule reads create_job from a file (it rejects the inline job it dumps).
    (tmp_path / "master.yml").write_text(build.to_yaml(schedule.create_job))
    doc["create_job"] = "./master.yml"
    (tmp_path / "schedule.yml").write_text(yaml.safe_dump(doc))
    loaded = load_schedule(tmp_path / "schedule.yml")
    assert isinstance(loaded, JobSchedule) and loaded._validate().passed
    assert (loaded.trigger.frequency, loaded.trigger.interval) == ("minute", 7)
    assert list(loaded.create_job.jobs) == ["master"]
    out = loaded.create_job.jobs["master"].outputs.state
    assert (out.path, out.mode) == (
        "azureml://datastores/workspaceblobstore/paths/videoanom-state",
        "rw_mount",
    )


# --- environment, clusters, upload ----------------------------------------------------------


def test_environment_and_clusters_follow_the_settings():
    a = azure(
        AML_VM_PRIORITY="lowpriority",
        AML_GPU_VM_SIZE="Standard_NC6s_v3",
        AML_GPU_MIN_NODES="1",
        AML_GPU_MAX_NODES="2",
        AML_ENVIRONMENT_NAME="my-env",
    )
    env = build.job_environment_asset(a)
    assert (env.name, env.image, env.version) == ("my-env", specs.BASE_IMAGE, None)
    assert env.conda_file == yaml.safe_load(specs.CONDA_FILE.read_text())
    cpu, gpu = build.clusters(a)
    assert all(isinstance(c, AmlCompute) for c in (cpu, gpu))
    assert (cpu.name, cpu.size, cpu.min_instances, cpu.max_instances) == (
        "cpu-cluster",
        "Standard_DS3_v2",
        0,
        4,
    )
    assert (gpu.name, gpu.size, gpu.min_instances, gpu.max_instances) == (
        "gpu-cluster",
        "Standard_NC6s_v3",
        1,
        2,
    )
    for cluster in (cpu, gpu):
        assert cluster.tier == "low_priority"
        assert cluster.idle_time_before_scale_down == build.IDLE_SECONDS_BEFORE_SCALE_DOWN
        assert cluster.identity.type == "system_assigned"
        assert cluster._to_dict()["type"] == "amlcompute"


def test_uploaded_snapshot_has_the_steps_and_the_environment_but_no_venv_or_data():
    """What the SDK uploads as every step's code (.amlignore, else .gitignore)."""
    from azure.ai.ml._utils._asset_utils import get_ignore_file

    ignore = get_ignore_file(specs.SOURCE_DIR)
    root = specs.SOURCE_DIR
    for needed in (
        "code/train.py",
        "code/videoanom/steps/train.py",
        specs.MASTER_SCRIPT,
        "ml_service/azure/spec.py",
        "environment_setup/conda.yml",  # the master rebuilds the environment in its job
    ):
        assert not ignore.is_file_excluded(root / needed), needed
    for unwanted in (".venv/lib/python3.11/site.py", "data/datastore/a/clip.avi", ".env"):
        assert ignore.is_file_excluded(root / unwanted), unwanted


# --- the backend against a mocked workspace -------------------------------------------------


@pytest.fixture
def client():
    return offline_client(WORKSPACE)


@pytest.fixture
def backend(client):
    return v2.V2Backend(settings(), azure(**WORKSPACE), client)


def created(name: str) -> SimpleNamespace:
    return SimpleNamespace(name=name, studio_url=f"https://ml.azure.com/runs/{name}")


def clusters_exist(client) -> None:
    client.compute.get = mock.Mock(side_effect=lambda name: SimpleNamespace(name=name))


def test_submit_creates_the_location_job_in_the_training_experiment(backend, client):
    clusters_exist(client)
    client.jobs.create_or_update = mock.Mock(return_value=created("quiet_lamp_1"))
    submission = backend.submit(LOCATION, init_from="models:/prednet-x@champion")
    assert submission == Submission(
        location=LOCATION,
        pipeline_name="prednet-north-gate-2",
        run_id="quiet_lamp_1",
        url="https://ml.azure.com/runs/quiet_lamp_1",
    )
    (job,), kwargs = client.jobs.create_or_update.call_args
    assert isinstance(job, PipelineJob) and job.display_name == "prednet-north-gate-2"
    assert job.name is None  # the service names every run
    assert kwargs == {
        "experiment_name": "videoanom-training",
        "tags": {"videoanom": "training", "location": LOCATION},
    }
    assert "models:/prednet-x@champion" in job.jobs["train"].trial.command
    assert [c.args for c in client.compute.get.call_args_list] == [
        ("cpu-cluster",),
        ("gpu-cluster",),
    ]


def test_submit_to_a_missing_cluster_says_to_publish(backend, client):
    client.compute.get = mock.Mock(side_effect=ResourceNotFoundError("no such compute"))
    client.jobs.create_or_update = mock.Mock()
    with pytest.raises(SettingsError, match=r"'cpu-cluster' does not exist.*azure publish"):
        backend.submit(LOCATION)
    client.jobs.create_or_update.assert_not_called()


def test_an_sdk_validation_report_becomes_one_line(backend, client):
    from azure.ai.ml.exceptions import ValidationException

    clusters_exist(client)
    errors = [
        {"message": "quota\n exceeded", "path": "jobs.train.compute"},
        {"message": "no such environment"},
    ]
    report = json.dumps({"result": "Failed", "errors": errors}, indent=2)  # as the SDK writes
    client.jobs.create_or_update = mock.Mock(
        side_effect=ValidationException(message=report, no_personal_data_message="report")
    )
    with pytest.raises(AzureServiceError) as caught:
        backend.submit(LOCATION)
    assert str(caught.value) == (
        "Azure ML: jobs.train.compute: quota exceeded; *: no such environment"
    )


def test_submit_master_runs_the_master_job_once(backend, client):
    clusters_exist(client)
    client.jobs.create_or_update = mock.Mock(return_value=created("master_run_1"))
    submission = backend.submit_master()
    assert (submission.pipeline_name, submission.run_id) == ("prednet-master", "master_run_1")
    (job,), kwargs = client.jobs.create_or_update.call_args
    assert list(job.jobs) == ["master"]
    assert kwargs["experiment_name"] == "videoanom-master"


def test_publish_creates_missing_clusters_and_registers_components(backend, client):
    client.environments.create_or_update = mock.Mock(
        side_effect=lambda env: SimpleNamespace(name=env.name, version="3")
    )
    existing = SimpleNamespace(name="cpu-cluster", size="Standard_DS3_v2")

    def get(name):
        if name == "cpu-cluster":
            return existing
        raise ResourceNotFoundError("not found")

    client.compute.get = mock.Mock(side_effect=get)
    client.compute.begin_create_or_update = mock.Mock(
        side_effect=lambda c: SimpleNamespace(result=lambda: c)
    )
    client.components.create_or_update = mock.Mock(
        side_effect=lambda c, **kw: SimpleNamespace(name=c.name, version="1")
    )
    lines = backend.publish()

    assert lines[0] == "environment videoanom-env:3"
    (env,), _ = client.environments.create_or_update.call_args
    assert env.image == specs.BASE_IMAGE and env.version is None
    assert "cluster cpu-cluster: exists" in lines
    (cluster,), _ = client.compute.begin_create_or_update.call_args  # only the missing one
    assert (cluster.name, cluster.size) == ("gpu-cluster", "Standard_NC4as_T4_v3")
    registered = [c.args[0].name for c in client.components.create_or_update.call_args_list]
    assert registered == [
        "videoanom_train",
        "videoanom_register_prednet",
        "videoanom_batch_scoring",
        "videoanom_train_classifier",
        "videoanom_register_classifier",
        "prednet_master",
    ]  # data_prep names its location: it is registered with each location's job
    assert all(
        c.kwargs == {"skip_if_no_change": True}
        for c in client.components.create_or_update.call_args_list
    )
    assert any(line.startswith("master pipeline prednet-master") for line in lines)


def test_schedule_replaces_the_schedule_of_the_same_name(backend, client):
    clusters_exist(client)
    client.schedules.begin_create_or_update = mock.Mock(
        side_effect=lambda s: SimpleNamespace(result=lambda: s)
    )
    line = backend.schedule()
    (schedule,), _ = client.schedules.begin_create_or_update.call_args
    assert isinstance(schedule, JobSchedule)
    assert schedule.name == "prednet-master-schedule"
    assert (schedule.trigger.frequency, schedule.trigger.interval) == ("minute", 5)
    assert list(schedule.create_job.jobs) == ["master"]
    assert line == "schedule prednet-master-schedule: prednet-master every 5 minutes"


def test_run_status_and_status_read_the_jobs(backend, client):
    client.jobs.get = mock.Mock(return_value=SimpleNamespace(status="Completed"))
    assert backend.run_status("quiet_lamp_1") == "Completed"
    client.jobs.get.assert_called_once_with("quiet_lamp_1")

    def job(name, experiment, status, tags):
        return SimpleNamespace(
            name=name,
            display_name=f"shown-{name}",
            experiment_name=experiment,
            status=status,
            tags=tags,
            creation_context=SimpleNamespace(created_at=None),
        )

    client.jobs.list = mock.Mock(
        return_value=[
            job("a1", "videoanom-training", "Running", {"location": "gate"}),
            None,  # a job the SDK could not parse
            job("b2", "someone-else", "Completed", {}),
            job("c3", "videoanom-master", "Completed", {"videoanom": "master"}),
        ]
    )
    rows = backend.status()
    assert rows == [
        {
            "name": "shown-a1",
            "location": "gate",
            "run_id": "a1",
            "status": "Running",
            "started": "",
        },
        {
            "name": "shown-c3",
            "location": "",
            "run_id": "c3",
            "status": "Completed",
            "started": "",
        },
    ]


def test_active_run_finds_an_unfinished_training_job_of_the_location(backend, client):
    def job(name, experiment, status, location):
        return SimpleNamespace(
            name=name, experiment_name=experiment, status=status, tags={"location": location}
        )

    client.jobs.list = mock.Mock(
        return_value=[
            job("m1", "videoanom-master", "Running", "gate"),
            job("t1", "videoanom-training", "Completed", "gate"),
            job("t2", "videoanom-training", "Queued", "plaza"),
        ]
    )
    assert backend.active_run("plaza") == "t2"
    assert backend.active_run("gate") is None, "a finished job and a master job do not count"


@pytest.mark.parametrize(
    "call",
    [
        lambda b: b.run_status("quiet_lamp_1"),
        lambda b: b.submit(LOCATION),
        lambda b: b.submit_master(),
        lambda b: b.schedule(),
        lambda b: b.publish(),
        lambda b: b.status(),
    ],
    ids=["run_status", "submit", "submit_master", "schedule", "publish", "status"],
)
def test_an_auth_failure_is_one_line_saying_what_to_do(backend, call):
    # The real operations: the SDK asks the credential for a token before any request leaves.
    with pytest.raises(v2.AuthError) as caught:
        call(backend)
    message = str(caught.value)
    assert isinstance(caught.value, SettingsError)
    assert "\n" not in message and "ws-videoanom" in message
    assert "az login" in message and "AZURE_CLIENT_ID" in message and "managed identity" in message


def test_a_rejected_token_is_an_auth_error_too(backend, client):
    clusters_exist(client)
    client.jobs.create_or_update = mock.Mock(side_effect=ClientAuthenticationError("expired"))
    with pytest.raises(v2.AuthError, match=r"az login.*\[ClientAuthenticationError: expired\]"):
        backend.submit(LOCATION)


# --- construction, settings, dry run --------------------------------------------------------


def test_describe_works_offline_with_no_credentials(monkeypatch):
    for name in (*WORKSPACE, "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    backend = backend_for(settings(), azure(), connect=False)
    assert isinstance(backend, v2.V2Backend) and backend.client is None
    text = backend.describe()
    assert "cluster gpu-cluster: Standard_NC4as_T4_v3" in text
    assert "component videoanom_train (gpu): python code/train.py" in text
    assert "random sampling, 8 trials (4 at once), minimize val_loss" in text
    assert "display_name: prednet-example-location" in text
    assert "type: sweep" in text and "slack_factor: 0.15" in text
    assert "name: prednet-master-schedule" in text and "frequency: minute" in text
    with pytest.raises(SettingsError, match="offline"):
        backend.submit(LOCATION)


def test_missing_workspace_settings_are_a_settings_error():
    with pytest.raises(SettingsError, match=r"AZURE_SUBSCRIPTION_ID.*AML_WORKSPACE_NAME"):
        v2.make_backend(settings(), azure(), connect=True)
    with pytest.raises(SettingsError, match="AZURE_RESOURCE_GROUP"):
        v2.backend_in_job(settings(), azure(AZURE_SUBSCRIPTION_ID="s", AML_WORKSPACE_NAME="w"))
    with pytest.raises(SettingsError, match="AML_SEARCH_SAMPLING"):
        azure(AML_SEARCH_SAMPLING="grid")


def test_connected_backends_address_the_configured_workspace(monkeypatch):
    monkeypatch.setenv("DEFAULT_IDENTITY_CLIENT_ID", "11111111-2222-3333-4444-555555555555")
    for factory in (
        lambda s, a: v2.make_backend(s, a, connect=True),
        v2.backend_in_job,
    ):
        backend = factory(settings(), azure(**WORKSPACE))
        assert backend.sdk == "v2"
        assert (
            backend.client.subscription_id,
            backend.client.resource_group_name,
            backend.client.workspace_name,
        ) == tuple(WORKSPACE.values())
