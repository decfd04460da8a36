"""The azureml-sdk (v1) backend, built for real and checked offline.

The pipelines are built with the SDK's own step, data and HyperDrive classes; only the
service is faked: a MagicMock(spec=Workspace), the pipeline service's workflow provider
(graph building and publishing call it), snapshot uploads, and the few service calls a test
is about (published pipelines, schedules, clusters, runs).
"""

from __future__ import annotations

import dataclasses
import graphlib
import json
import math
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar
from unittest.mock import MagicMock, patch

import pytest
from azure.identity import CredentialUnavailableError
from azureml.core import Environment, Workspace
from azureml.core.compute import AmlCompute
from azureml.data import OutputFileDatasetConfig
from azureml.data.azure_storage_datastore import AzureBlobDatastore
from azureml.data.data_reference import DataReference
from azureml.exceptions import AuthenticationException, ComputeTargetException
from azureml.pipeline.core import PipelineData, PublishedPipeline, Schedule
from azureml.pipeline.core._aeva_provider import _AevaWorkflowProvider
from azureml.pipeline.steps import HyperDriveStep, PythonScriptStep

from ml_service.azure import spec
from ml_service.azure.backend import backend_for
from ml_service.azure.master_step import build_parser as master_parser
from ml_service.azure.spec import SOURCE_DIR, compute_name, job_environment, training_specs
from ml_service.azure.submit import Submission
from ml_service.azure.v1 import (
    BEST_TRIAL_SCRIPT,
    METRICS_OUTPUT,
    TRIAL_FOLDER,
    V1Backend,
    backend_in_job,
    best_trial,
    built_step_arguments,
    make_backend,
    service,
)
from ml_service.pipelines.definition import pipeline_params, training_pipeline
from ml_service.util.env_variables import AzureSettings, Settings, SettingsError
from videoanom.steps.register_prednet import build_parser as register_parser
from videoanom.steps.train import build_parser as train_parser
from videoanom.training.search_space import SEARCH_SPACE, search_flag

WORKSPACE = {
    "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
    "AZURE_RESOURCE_GROUP": "rg",
    "AML_WORKSPACE_NAME": "ws",
}
# azureml-core reads YAML with ruamel's deprecated API (its warning, not ours).
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")

RUN_ORDER = [
    "data_prep",
    "train",
    "best_trial",
    "register_prednet",
    "batch_scoring",
    "train_classifier",
    "register_classifier",
]


def load(**environ: str) -> tuple[Settings, AzureSettings]:
    env = {**WORKSPACE, **environ}
    return Settings.load(env_file=None, environ=env), AzureSettings.load(env_file=None, environ=env)


@pytest.fixture(autouse=True)
def conda_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The job environment's conda file (a stand-in while environment_setup/ has none)."""
    if spec.CONDA_FILE.is_file():
        return spec.CONDA_FILE
    path = tmp_path / "conda.yml"
    path.write_text("name: videoanom\ndependencies:\n  - python=3.11\n  - pip\n")
    monkeypatch.setattr(spec, "CONDA_FILE", path)
    return path


# ---------------------------------------------------------------- the fake service


@dataclasses.dataclass
class FakePublished:
    """A published pipeline as the service keeps it."""

    name: str
    version: str
    id: str
    service: FakeService
    status: str = "Active"

    def disable(self) -> None:
        self.status = "Disabled"

    def submit(self, workspace: Any, experiment_name: str) -> FakeRun:
        run = FakeRun(f"run-{len(self.service.runs)}", experiment_name, self.id)
        self.service.runs.append(run)
        return run


@dataclasses.dataclass
class FakeSchedule:
    name: str
    id: str
    pipeline_id: str
    experiment_name: str
    datastore_name: str
    path_on_datastore: str
    polling_interval: int
    status: str = "Active"

    def disable(self) -> None:
        self.status = "Disabled"


@dataclasses.dataclass
class FakeRun:
    id: str
    experiment: str
    pipeline_id: str = ""
    status: str = "Running"
    tags: dict = dataclasses.field(default_factory=dict)

    def set_tags(self, tags: dict) -> None:
        self.tags.update(tags)

    def get_tags(self) -> dict:
        return self.tags

    def get_status(self) -> str:
        return self.status

    def get_details(self) -> dict:
        return {"startTimeUtc": "2026-01-02T03:04:05Z"}

    def get_portal_url(self) -> str:
        return f"https://ml.azure.com/runs/{self.id}"


class FakeService:
    """Published pipelines, schedules and runs of one workspace, in memory."""

    def __init__(self) -> None:
        self.published: list[FakePublished] = []
        self.schedules: list[FakeSchedule] = []
        self.runs: list[FakeRun] = []
        self.graphs: list[Any] = []
        self.provider = MagicMock(name="workflow provider")
        self.provider.published_pipeline_provider.create_from_graph.side_effect = self._publish

    def _publish(self, name: str, description: str, version: str, graph: Any, **_: Any):
        self.graphs.append(graph)
        published = FakePublished(name, version, f"pub-{len(self.published)}", self)
        self.published.append(published)
        return published

    def list_published(self, workspace: Any, active_only: bool = True) -> list[FakePublished]:
        return [p for p in self.published if p.status == "Active" or not active_only]

    def list_schedules(self, workspace: Any, active_only: bool = True, pipeline_id=None):
        if pipeline_id is not None:  # as the SDK: every schedule of that pipeline
            return [s for s in self.schedules if s.pipeline_id == pipeline_id]
        return [s for s in self.schedules if s.status == "Active" or not active_only]

    def create_schedule(self, workspace: Any, **kwargs: Any) -> FakeSchedule:
        datastore = kwargs["datastore"]
        assert datastore.datastore_type == "AzureBlob", "datastore triggers need a blob datastore"
        schedule = FakeSchedule(
            name=kwargs["name"],
            id=f"sched-{len(self.schedules)}",
            pipeline_id=kwargs["pipeline_id"],
            experiment_name=kwargs["experiment_name"],
            datastore_name=datastore.name,
            path_on_datastore=kwargs["path_on_datastore"],
            polling_interval=kwargs["polling_interval"],
        )
        self.schedules.append(schedule)
        return schedule

    def active(self, name: str) -> list[FakePublished]:
        return [p for p in self.published if p.name == name and p.status == "Active"]


class FakeCluster:
    def __init__(self, name: str, vm_size: str, low: int, high: int) -> None:
        self.name, self.vm_size = name, vm_size
        self.scale_settings = MagicMock(minimum_node_count=low, maximum_node_count=high)
        self.updates: list[dict] = []

    def update(self, **kwargs: Any) -> None:
        self.updates.append(kwargs)

    def wait_for_completion(self, show_output: bool = False) -> None:
        pass


class FakeComputeTarget:
    """``ComputeTarget(workspace, name)`` and ``ComputeTarget.create`` over a dict."""

    clusters: ClassVar[dict[str, FakeCluster]] = {}
    created: ClassVar[list[tuple[str, Any]]] = []

    def __new__(cls, workspace: Any = None, name: str = "") -> FakeCluster:  # type: ignore[misc]
        if name not in cls.clusters:
            raise ComputeTargetException(f"ComputeTargetNotFound: {name}")
        return cls.clusters[name]

    @classmethod
    def create(cls, workspace: Any, name: str, config: Any) -> FakeCluster:
        cls.created.append((name, config))
        scale = config.scale_settings
        cluster = FakeCluster(
            name, config.vm_size, scale.minimum_node_count, scale.maximum_node_count
        )
        cls.clusters[name] = cluster
        return cluster


@pytest.fixture
def workspace() -> MagicMock:
    ws = MagicMock(spec=Workspace)
    ws.name, ws.subscription_id, ws.resource_group = "ws", WORKSPACE["AZURE_SUBSCRIPTION_ID"], "rg"
    store = AzureBlobDatastore(ws, "workspaceblobstore", "azureml-blobstore", "account")
    ws.get_default_datastore.return_value = store
    cluster = MagicMock(spec=AmlCompute)
    cluster.type = "AmlCompute"
    ws.compute_targets = {"cpu-cluster": cluster, "gpu-cluster": cluster}
    return ws


@pytest.fixture
def fake_service(workspace: MagicMock, monkeypatch: pytest.MonkeyPatch) -> FakeService:
    """Every service call the v1 backend makes, answered in memory."""
    fake = FakeService()
    store = workspace.get_default_datastore.return_value
    snapshots = "azureml._restclient.snapshots_client.SnapshotsClient.create_snapshot"
    patches = [
        patch(snapshots, return_value="snapshot-1"),
        patch.object(_AevaWorkflowProvider, "create_provider", return_value=fake.provider),
        patch.object(PublishedPipeline, "list", side_effect=fake.list_published),
        patch.object(Schedule, "list", side_effect=fake.list_schedules),
        patch.object(Schedule, "create", side_effect=fake.create_schedule),
        patch("azureml.core.Datastore.get", return_value=store),
        patch.object(
            Environment, "register", lambda self, ws: SimpleNamespace(name=self.name, version="3")
        ),
    ]
    for p in patches:
        p.start()
    FakeComputeTarget.clusters = {}
    FakeComputeTarget.created = []
    monkeypatch.setattr(service, "ComputeTarget", FakeComputeTarget)
    yield fake
    for p in patches:
        p.stop()


def backend(workspace: Any, **environ: str) -> V1Backend:
    settings, azure = load(**environ)
    return V1Backend(settings, azure, workspace)


def graph_order(graph: Any) -> list[str]:
    """Module steps in the order their data edges allow (graphlib: one valid order)."""
    deps: dict[str, set[str]] = {n.name: set() for n in graph.module_nodes}
    for edge in graph.edges:
        source, dest = edge.source_port.node.name, edge.dest_port.node.name
        if source in deps and dest in deps:
            deps[dest].add(source)
    return list(graphlib.TopologicalSorter(deps).static_order())


# ---------------------------------------------------------------- the training pipeline


class TestTrainingPipelineGraph:
    def test_steps_run_in_data_order_and_each_input_is_its_producers_output(
        self, workspace: MagicMock, fake_service: FakeService
    ) -> None:
        built = backend(workspace).training("campus")
        assert built.name == "prednet-campus"
        graph = built.pipeline(workspace).graph
        assert graph_order(graph) == RUN_ORDER, "a chain: only one order is possible"
        producers = {}
        for node in graph.module_nodes:
            for port in node.outputs:
                if not port.name.startswith("_"):
                    producers[port.name] = node.name
        expected_inputs = {
            "data_prep": {"datastore"},
            "train": {"prepared_data"},
            "best_trial": {METRICS_OUTPUT},
            "register_prednet": {"prepared_data", "trained_model"},
            "batch_scoring": {"prepared_data", "registered_prednet"},
            "train_classifier": {"prepared_data", "scores"},
            "register_classifier": {"prepared_data", "classifier"},
        }
        edges = {(e.dest_port.node.name, e.dest_port.name): e for e in graph.edges}
        for node in graph.module_nodes:
            names = {p.name for p in node.inputs if not p.name.startswith("_")}
            assert names == expected_inputs[node.name], node.name
            for name in names - {"datastore"}:
                edge = edges[(node.name, name)]
                assert edge.source_port.name == name
                assert edge.source_port.node.name == producers[name], f"{node.name}.{name}"
        source = edges[("data_prep", "datastore")].source_port.node
        assert source.name == "datastore" and source not in graph.module_nodes

    def test_scripts_and_arguments_are_the_local_runners(self) -> None:
        settings, azure = load()
        built = built_step_arguments(settings, azure, "campus")
        assert list(built) == RUN_ORDER
        params = pipeline_params(settings, "campus", "<input:datastore>")
        for step in training_pipeline().ordered():
            paths = {n: Path(f"<input:{n}>") for n in step.inputs}
            paths.update({n: Path(f"<output:{n}>") for n in step.outputs})
            local = step.arguments(paths, params)
            script, args = built[step.name]
            assert script == f"code/{step.script}"
            assert (SOURCE_DIR / script).is_file()
            if step.name != "train":
                assert args == local, step.name
                continue
            # One trial per HyperDrive run, each trial's model in its own ./outputs, and
            # the sampled hyperparameters appended by HyperDrive.
            local = [
                {"<output:trained_model>": TRIAL_FOLDER, str(settings.trials): "1"}.get(a, a)
                for a in local
            ]
            searched = [x for name in SEARCH_SPACE for x in (search_flag(name), f"<search:{name}>")]
            assert args == local + searched
        script, args = built["best_trial"]
        assert script == BEST_TRIAL_SCRIPT and (SOURCE_DIR / script).is_file()
        parsed = best_trial.build_parser().parse_args(args)
        assert (parsed.metrics, parsed.trained_model) == (
            Path(f"<input:{METRICS_OUTPUT}>"),
            Path("<output:trained_model>"),
        )
        assert (parsed.trial_folder, parsed.primary_metric, parsed.goal) == (
            TRIAL_FOLDER,
            "val_loss",
            "minimize",
        )
        register = register_parser().parse_args(built["register_prednet"][1])
        assert register.trained_model == parsed.trained_model.with_name("<input:trained_model>")

    def test_a_trial_accepts_its_arguments_with_sampled_values(self) -> None:
        settings, azure = load()
        _, args = built_step_arguments(settings, azure, "campus")["train"]
        sample = {
            "<search:batch_size>": "8",
            "<search:filter_sizes>": "5,3,3",
            "<search:stack_sizes>": "12,24,48",
            "<search:learning_rate>": "0.002",
            "<search:lr_decay>": "0.1",
        }
        parsed = train_parser().parse_args([sample.get(a, a) for a in args])
        assert (parsed.trials, parsed.batch_size, parsed.learning_rate) == (1, 8, 0.002)
        assert parsed.trained_model == Path(TRIAL_FOLDER)

    def test_compute_environment_and_reuse_per_step(self, workspace: MagicMock) -> None:
        settings, azure = load(AML_GPU_CLUSTER="t4", AML_CPU_CLUSTER="small")
        built = V1Backend(settings, azure, None).training("campus")
        specs = {s.name: s for s in training_specs(settings, "campus")}
        env = job_environment(settings, azure)
        steps = {s.name: s for s in built.steps}
        assert [s.name for s in built.steps] == RUN_ORDER
        for name, step in steps.items():
            if name == "train":
                assert isinstance(step, HyperDriveStep)
                run_config = step._hyperdrive_config.run_config.run_config
            else:
                assert isinstance(step, PythonScriptStep)
                run_config = step._runconfig
            assert run_config.environment_variables == env, name
            assert run_config.environment.name == azure.environment_name
            assert run_config.environment.docker.base_image == spec.BASE_IMAGE
            assert run_config.target == (
                compute_name(specs[name], azure) if name in specs else "small"
            ), name
            assert step._allow_reuse is (specs[name].allow_reuse if name in specs else True)
        assert {n for n, s in steps.items() if s._allow_reuse is False} == {"data_prep"}
        assert steps["train"]._hyperdrive_config.run_config.run_config.target == "t4"
        assert steps["batch_scoring"]._runconfig.target == "t4"
        assert steps["data_prep"]._runconfig.target == "small"
        datastore = steps["data_prep"]._inputs[0]
        assert isinstance(datastore, DataReference)
        assert (datastore.datastore.name, datastore.path_on_datastore, datastore.mode) == (
            azure.datastore_name,
            azure.datastore_path,
            "mount",
        )
        for step in built.steps:
            for obj in step._outputs:
                assert isinstance(obj, PipelineData)


class TestHyperDrive:
    def config(self, **environ: str):
        settings, azure = load(**environ)
        steps = V1Backend(settings, azure, None).training("campus").steps
        step = next(s for s in steps if isinstance(s, HyperDriveStep))
        return step, step._hyperdrive_config

    def test_random_search_with_bandit_policy(self) -> None:
        step, config = self.config(
            AML_SEARCH_MAX_RUNS="6", AML_SEARCH_MAX_CONCURRENT="2", AML_BANDIT_SLACK_FACTOR="0.2"
        )
        generator = config._generator_config
        assert generator["name"] == "RANDOM"
        space = generator["parameter_space"]
        assert list(space) == [search_flag(n) for n in SEARCH_SPACE]
        assert space["--batch-size"] == ["choice", [[4, 8]]]
        assert space["--stack-sizes"] == ["choice", [["16,32,64", "12,24,48", "24,48,96"]]]
        kind, (low, high) = space["--learning-rate"]
        assert kind == "loguniform"
        assert (low, high) == pytest.approx((math.log(1e-3), math.log(6e-3)))
        assert space["--lr-decay"] == ["uniform", [0.0, 0.3]]
        assert config._policy_config == {
            "name": "Bandit",
            "properties": {"evaluation_interval": 1, "delay_evaluation": 2, "slack_factor": 0.2},
        }
        assert config._primary_metric_config == {"name": "val_loss", "goal": "minimize"}
        assert (config._max_total_runs, config._max_concurrent_runs) == (6, 2)
        script = config.run_config
        assert (Path(script.source_directory), script.script) == (SOURCE_DIR, "code/train.py")
        assert not any(a in SEARCH_SPACE or str(a).startswith("<") for a in script.arguments)
        assert step._params["PrimaryMetricName"] == "val_loss"

    def test_bayesian_search_has_no_early_termination(self) -> None:
        _, config = self.config(AML_SEARCH_SAMPLING="bayesian")
        assert config._generator_config["name"] == "BayesianOptimization"
        assert config._policy_config == {"name": "Default"}, "no early termination"
        # Bayesian sampling has no loguniform: the same bounds, sampled uniformly.
        assert config._generator_config["parameter_space"]["--learning-rate"] == [
            "uniform",
            [1e-3, 6e-3],
        ]


# ---------------------------------------------------------------- the master pipeline


class TestMasterPipeline:
    def test_master_step_mounts_the_datastore_and_the_persistent_state(
        self, workspace: MagicMock, fake_service: FakeService
    ) -> None:
        b = backend(workspace, AML_STATE_PATH="records/master", AML_DATASTORE_PATH="cams")
        built = b.master()
        assert built.name == "prednet-master"
        (step,) = built.steps
        assert step.name == "master" and step._script_name == spec.MASTER_SCRIPT
        assert step._allow_reuse is False
        assert step._runconfig.target == "cpu-cluster"
        (datastore,) = step._inputs
        assert isinstance(datastore, DataReference)
        assert (datastore.path_on_datastore, datastore.mode) == ("cams", "mount")
        (state,) = step._outputs
        assert isinstance(state, OutputFileDatasetConfig)
        assert state.mode == "mount"
        assert (state.destination[0].name, state.destination[1]) == (
            "workspaceblobstore",
            "records/master",
        )
        summary = built.summaries()[0]
        args = summary["arguments"]
        mounted = {"<input:datastore>": "/mnt/data", "<output:state>": "/mnt/state"}
        parsed = master_parser().parse_args([mounted.get(a, a) for a in args])
        assert (parsed.datastore, parsed.state) == (Path("/mnt/data"), Path("/mnt/state"))
        graph = built.pipeline(workspace).graph
        assert [n.name for n in graph.module_nodes] == ["master"]
        (edge,) = list(graph.edges)
        assert (edge.source_port.node.name, edge.dest_port.name) == ("datastore", "datastore")

    def test_state_inside_the_watched_folder_is_refused(self) -> None:
        settings, azure = load(AML_DATASTORE_PATH="videoanom", AML_STATE_PATH="videoanom/state")
        with pytest.raises(SettingsError, match="AML_STATE_PATH='videoanom/state' must be"):
            V1Backend(settings, azure, None).master()


# ---------------------------------------------------------------- describe (dry run)


def test_describe_needs_no_workspace_and_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("describe() opened a connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    settings = Settings.load(env_file=None, environ={})
    azure = AzureSettings.load(env_file=None, environ={"AML_POLLING_INTERVAL_MINUTES": "7"})
    text = backend_for(settings, azure, connect=False).describe()
    assert "training pipeline prednet-<location>" in text
    assert "master pipeline prednet-master" in text
    for name in RUN_ORDER:
        assert f". {name} on " in text
    assert "train on gpu-cluster: code/train.py (HyperDrive" in text
    assert "random sampling, 8 trials, 4 at once, minimize val_loss" in text
    assert "bandit (slack factor 0.15, every 1 after 2)" in text
    assert "--learning-rate: loguniform(0.001 .. 0.006" in text
    assert "--trained-model outputs/trained_model" in text
    assert "state = workspaceblobstore:videoanom-state (read-write mount)" in text
    assert (
        "schedule prednet-master-schedule: runs prednet-master when files under "
        "workspaceblobstore:videoanom change, polled every 7 min"
    ) in text


def test_make_backend_loads_through_backend_for() -> None:
    settings, azure = load()
    assert isinstance(backend_for(settings, azure, connect=False), V1Backend)
    assert make_backend(settings, azure, connect=False).workspace is None


# ---------------------------------------------------------------- publish and schedule


class TestPublish:
    def test_publish_creates_clusters_and_is_idempotent(
        self, workspace: MagicMock, fake_service: FakeService
    ) -> None:
        b = backend(workspace, AML_VM_PRIORITY="lowpriority", AML_GPU_MAX_NODES="2")
        lines = b.publish()
        assert lines[0] == "environment videoanom-env version 3"
        assert [name for name, _ in FakeComputeTarget.created] == ["cpu-cluster", "gpu-cluster"]
        gpu = dict(FakeComputeTarget.created)["gpu-cluster"]
        assert (gpu.vm_size, gpu.vm_priority) == ("Standard_NC4as_T4_v3", "lowpriority")
        scale = gpu.scale_settings
        assert (scale.minimum_node_count, scale.maximum_node_count) == (0, 2)
        assert scale.idle_seconds_before_scaledown == service.IDLE_SECONDS_BEFORE_SCALEDOWN
        (first,) = fake_service.active("prednet-master")
        assert any(line.startswith("pipeline prednet-master: published pub-0") for line in lines)
        # The same definition again: nothing new is published, no cluster is created.
        again = backend(workspace, AML_VM_PRIORITY="lowpriority", AML_GPU_MAX_NODES="2")
        lines = again.publish()
        assert "pipeline prednet-master: unchanged, pub-0" in " ".join(lines)
        assert fake_service.active("prednet-master") == [first]
        assert len(FakeComputeTarget.created) == 2
        assert "cluster gpu-cluster: exists" in lines

    def test_changed_definition_replaces_the_pipeline_and_moves_the_schedule(
        self, workspace: MagicMock, fake_service: FakeService
    ) -> None:
        b = backend(workspace, AML_POLLING_INTERVAL_MINUTES="10")
        b.publish()
        line = b.schedule()
        (first,) = fake_service.active("prednet-master")
        (schedule,) = fake_service.schedules
        assert (schedule.name, schedule.pipeline_id) == ("prednet-master-schedule", first.id)
        assert (schedule.datastore_name, schedule.path_on_datastore) == (
            "workspaceblobstore",
            "videoanom",
        )
        assert (schedule.polling_interval, schedule.experiment_name) == (10, "videoanom-master")
        assert "polled every 10 min" in line
        assert b.schedule() == f"schedule prednet-master-schedule: unchanged ({schedule.id})"
        # A new setting reaches every step's environment: a new definition.
        changed = backend(workspace, AML_POLLING_INTERVAL_MINUTES="10", VIDEOANOM_MAX_EPOCHS="3")
        lines = changed.publish()
        (second,) = fake_service.active("prednet-master")
        assert second.id != first.id and first.status == "Disabled"
        assert schedule.status == "Disabled"
        assert f"pipeline prednet-master: disabled older {first.id} (version {first.version})" in (
            lines
        )
        active = [s for s in fake_service.schedules if s.status == "Active"]
        assert [(s.name, s.pipeline_id) for s in active] == [("prednet-master-schedule", second.id)]
        # schedule() again replaces its own trigger only when something differs.
        changed.schedule()
        assert len([s for s in fake_service.schedules if s.status == "Active"]) == 1

    def test_published_graph_is_the_built_pipeline(
        self, workspace: MagicMock, fake_service: FakeService
    ) -> None:
        backend(workspace).publish()
        (graph,) = fake_service.graphs
        assert [n.name for n in graph.module_nodes] == ["master"]

    def test_existing_cluster_is_rescaled_not_recreated(
        self, workspace: MagicMock, fake_service: FakeService
    ) -> None:
        FakeComputeTarget.clusters = {
            "cpu-cluster": FakeCluster("cpu-cluster", "Standard_DS3_v2", 0, 4),
            "gpu-cluster": FakeCluster("gpu-cluster", "Standard_NC6", 1, 4),
        }
        lines = backend(workspace, AML_GPU_MAX_NODES="6").ensure_clusters()
        assert FakeComputeTarget.created == []
        assert FakeComputeTarget.clusters["cpu-cluster"].updates == []
        assert FakeComputeTarget.clusters["gpu-cluster"].updates == [
            {
                "min_nodes": 0,
                "max_nodes": 6,
                "idle_seconds_before_scaledown": service.IDLE_SECONDS_BEFORE_SCALEDOWN,
            }
        ]
        assert "rescaled 1-4 -> 0-6 nodes" in lines[1]
        assert "differs from Standard_NC4as_T4_v3" in lines[1]


# ---------------------------------------------------------------- submit and status


class TestSubmit:
    def test_submit_publishes_once_and_tags_the_run(
        self, workspace: MagicMock, fake_service: FakeService
    ) -> None:
        b = backend(workspace)
        submission = b.submit("Campus North")
        assert submission == Submission(
            "Campus North", "prednet-campus-north", "run-0", "https://ml.azure.com/runs/run-0"
        )
        (run,) = fake_service.runs
        assert run.experiment == "videoanom-training"
        assert run.tags == {"videoanom": "training", "location": "Campus North"}
        (published,) = fake_service.active("prednet-campus-north")
        assert run.pipeline_id == published.id
        graph = fake_service.graphs[0]
        assert graph_order(graph) == RUN_ORDER
        b.submit("Campus North")
        assert fake_service.active("prednet-campus-north") == [published], "not republished"
        assert len(fake_service.runs) == 2

    def test_submit_master_and_statuses(
        self, workspace: MagicMock, fake_service: FakeService, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        b = backend(workspace)
        master = b.submit_master()
        assert (master.pipeline_name, master.run_id) == ("prednet-master", "run-0")
        assert fake_service.runs[0].tags == {"videoanom": "master"}
        b.submit("plaza")
        fake_service.runs[1].status = "Completed"
        runs = {r.id: r for r in fake_service.runs}
        monkeypatch.setattr(service.Run, "get", staticmethod(lambda ws, run_id: runs[run_id]))
        assert b.run_status("run-1") == "Completed"

        class FakeExperiment:
            def __init__(self, workspace: Any, name: str) -> None:
                self.name = name

            def get_runs(self):
                return (r for r in reversed(fake_service.runs) if r.experiment == self.name)

        monkeypatch.setattr(service, "Experiment", FakeExperiment)
        rows = b.status()
        assert rows == [
            {
                "name": "prednet-plaza",
                "location": "plaza",
                "run_id": "run-1",
                "status": "Completed",
                "started": "2026-01-02T03:04:05Z",
            },
            {
                "name": "prednet-master",
                "location": "",
                "run_id": "run-0",
                "status": "Running",
                "started": "2026-01-02T03:04:05Z",
            },
        ]

    def test_active_run_finds_an_unfinished_run_of_the_location(
        self, workspace: MagicMock, fake_service: FakeService, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        b = backend(workspace)
        b.submit("plaza")
        b.submit("gate")
        fake_service.runs[1].status = "Completed"

        class TaggedExperiment:
            def __init__(self, workspace: Any, name: str) -> None:
                self.name = name

            def get_runs(self, tags: dict):
                return (
                    r
                    for r in reversed(fake_service.runs)
                    if r.experiment == self.name and tags.items() <= r.tags.items()
                )

        monkeypatch.setattr(service, "Experiment", TaggedExperiment)
        assert b.active_run("plaza") == "run-0"
        assert b.active_run("gate") is None, "a finished run does not block a new one"
        assert b.active_run("elsewhere") is None


# ---------------------------------------------------------------- settings and sign-in


class TestSignIn:
    def test_missing_workspace_settings(self) -> None:
        settings = Settings.load(env_file=None, environ={})
        azure = AzureSettings.load(env_file=None, environ={"AML_WORKSPACE_NAME": "ws"})
        with pytest.raises(SettingsError, match="AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP"):
            make_backend(settings, azure, connect=True)
        with pytest.raises(SettingsError, match="missing Azure settings"):
            backend_for(settings, azure, connect=True)

    def test_bad_values_are_refused_before_building(self) -> None:
        with pytest.raises(SettingsError, match="AML_SEARCH_SAMPLING"):
            load(AML_SEARCH_SAMPLING="grid")

    @pytest.mark.parametrize(
        "error",
        [
            AuthenticationException("Could not retrieve user token. Please run 'az login'"),
            CredentialUnavailableError("Azure CLI not found on path"),
        ],
    )
    def test_sign_in_failure_is_one_clear_line(
        self, error: Exception, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def fail(**kwargs: Any) -> None:
            raise error

        monkeypatch.setattr(service, "Workspace", fail)
        _, azure = load()
        with pytest.raises(SettingsError) as info:
            service.connect_workspace(azure, environ={})
        message = str(info.value)
        assert "\n" not in message
        assert "cannot sign in to Azure ML workspace ws" in message
        assert "with the Azure CLI login" in message and "run `az login`" in message
        assert "OIDC" in message

    def test_unknown_workspace_names_the_settings(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from azureml.exceptions import ProjectSystemException

        def fail(**kwargs: Any) -> None:
            raise ProjectSystemException("Workspace not found.")

        monkeypatch.setattr(service, "Workspace", fail)
        with pytest.raises(SettingsError, match="check AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE"):
            service.connect_workspace(load()[1], environ={})

    def test_no_network_is_not_blamed_on_the_settings(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from requests.exceptions import ConnectionError as RequestsConnectionError

        def fail(**kwargs: Any) -> None:
            raise RequestsConnectionError("Failed to resolve 'management.azure.com'")

        monkeypatch.setattr(service, "Workspace", fail)
        with pytest.raises(SettingsError, match=r"cannot reach Azure ML workspace ws .*network"):
            service.connect_workspace(load()[1], environ={})

    def test_workspace_gets_the_settings_and_the_chosen_sign_in(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        seen: dict[str, Any] = {}
        monkeypatch.setattr(service, "Workspace", lambda **kwargs: seen.update(kwargs) or "ws")
        _, azure = load()
        msi = {"AZURE_CLIENT_ID": "client-1", "IDENTITY_ENDPOINT": "http://169.254.169.254"}
        assert service.connect_workspace(azure, environ=msi) == "ws"
        assert (seen["subscription_id"], seen["resource_group"], seen["workspace_name"]) == (
            WORKSPACE["AZURE_SUBSCRIPTION_ID"],
            "rg",
            "ws",
        )
        from azureml.core.authentication import MsiAuthentication, TokenAuthentication

        assert isinstance(seen["auth"], MsiAuthentication)
        assert seen["auth"]._identity_config == {"client_id": "client-1"}
        service.connect_workspace(azure, environ={"AZURE_CLIENT_ID": "client-1"})
        assert isinstance(seen["auth"], TokenAuthentication), "no MSI endpoint: the CLI login"

    def test_cli_tokens_are_reused_until_they_expire(self) -> None:
        import time

        asked: list[str] = []

        class Credential:
            def get_token(self, scope: str):
                asked.append(scope)
                return MagicMock(token=f"t{len(asked)}", expires_on=time.time() + 3600)

        token = service.CliToken(Credential())
        assert token("https://management.core.windows.net/") == "t1"
        assert token("https://management.core.windows.net/") == "t1"
        assert token("https://ml.azure.com") == "t2"
        assert asked == [
            "https://management.core.windows.net/.default",
            "https://ml.azure.com/.default",
        ]

    def test_backend_in_job_outside_a_job(self) -> None:
        settings, azure = load()
        with pytest.raises(SettingsError, match="not inside an Azure ML job"):
            backend_in_job(settings, azure)


# ---------------------------------------------------------------- the best_trial step


class FakeTrial:
    """A HyperDrive child run whose artifacts are files under ``outputs/trained_model``."""

    def __init__(self, run_id: str, status: str = "Completed", whole: bool = True) -> None:
        self.id, self.status, self.whole = run_id, status, whole

    def get_status(self) -> str:
        return self.status

    def get_metrics(self) -> dict:
        return {"val_loss": [0.3, 0.2]} if self.id == "HD_7" else {}

    def download_files(self, prefix: str, output_directory: str, append_prefix: bool) -> None:
        folder = Path(output_directory) / prefix if append_prefix else Path(output_directory)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "prednet.keras").write_text(self.id)
        if self.whole:
            (folder / best_trial.RESULT_FILE).write_text(json.dumps({"run_id": self.id}))


class TestBestTrial:
    METRICS: ClassVar[dict[str, dict]] = {
        "HD_0": {"val_loss": [0.5, 0.3], "val_mae": [0.2]},
        "HD_1": {"val_loss": [0.4, 0.1]},  # best, but stopped by the bandit policy
        "HD_2": {"val_loss": 0.2},  # next best, left no whole model
        "HD_3": {"val_loss": [0.9, 0.25]},
        "HD_4": {"loss": [0.01]},  # never logged val_loss
    }

    def test_ranks_by_the_last_logged_value(self, tmp_path: Path) -> None:
        path = tmp_path / "metrics"
        path.mkdir()
        (path / "hyperdrive_metrics").write_text(json.dumps(self.METRICS))
        ranked = best_trial.ranked_trials(best_trial.read_metrics(path), "val_loss")
        assert [r for r, _ in ranked] == ["HD_1", "HD_2", "HD_3", "HD_0"]
        assert best_trial.ranked_trials(self.METRICS, "val_loss", "maximize")[0][0] == "HD_0"

    def test_main_copies_the_best_completed_trials_folder(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from azureml.core import Run

        metrics = tmp_path / "hyperdrive_metrics"
        metrics.write_text(json.dumps(self.METRICS))
        trials = {
            "HD_0": FakeTrial("HD_0"),
            "HD_1": FakeTrial("HD_1", status="Canceled"),
            "HD_2": FakeTrial("HD_2", whole=False),
            "HD_3": FakeTrial("HD_3"),
        }
        context = MagicMock()
        monkeypatch.setattr(Run, "get_context", staticmethod(lambda: context))
        monkeypatch.setattr(Run, "get", staticmethod(lambda ws, run_id: trials[run_id]))
        out = tmp_path / "trained_model"
        assert best_trial.main(["--metrics", str(metrics), "--trained-model", str(out)]) == 0
        assert (out / "prednet.keras").read_text() == "HD_3"
        assert json.loads((out / best_trial.RESULT_FILE).read_text()) == {"run_id": "HD_3"}
        context.set_tags.assert_called_once_with({"best_trial": "HD_3", "best_val_loss": "0.25"})

    def test_without_metrics_output_the_service_is_asked(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from azureml.core import Run

        metrics = tmp_path / "hyperdrive_metrics"
        metrics.write_text(json.dumps({}))
        trials = {"HD_6": FakeTrial("HD_6"), "HD_7": FakeTrial("HD_7")}
        context = MagicMock()
        context.parent.find_step_run.return_value = [MagicMock(get_children=trials.values)]
        monkeypatch.setattr(Run, "get_context", staticmethod(lambda: context))
        monkeypatch.setattr(Run, "get", staticmethod(lambda ws, run_id: trials[run_id]))
        out = tmp_path / "trained_model"
        assert best_trial.main(["--metrics", str(metrics), "--trained-model", str(out)]) == 0
        context.parent.find_step_run.assert_called_once_with("train")
        assert (out / "prednet.keras").read_text() == "HD_7", "HD_6 logged no val_loss"

    def test_no_usable_trial_fails_with_a_reason(self, tmp_path: Path) -> None:
        trials = {"HD_0": FakeTrial("HD_0", status="Failed")}
        with pytest.raises(RuntimeError, match="none of 1 trials completed with a model"):
            best_trial.pick_best([("HD_0", 0.1)], trials.get, TRIAL_FOLDER, tmp_path / "out")


def test_fingerprint_follows_the_definition() -> None:
    first = V1Backend(*load(), None).master().fingerprint()
    assert V1Backend(*load(), None).master().fingerprint() == first
    assert V1Backend(*load(VIDEOANOM_SEED="4"), None).master().fingerprint() != first
    settings, azure = load()
    campus = V1Backend(settings, azure, None).training("campus").fingerprint()
    assert V1Backend(settings, azure, None).training("plaza").fingerprint() != campus
