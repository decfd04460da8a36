"""Deploying a detector to Azure ML (ml_service/azure/deploy.py) and its scoring script
(ml_service/azure/online_score.py), offline.

The endpoint, deployment, inference and web-service configurations are built with the real
SDK classes (and pass their own checks); only the service is mocked: an MLClient whose
operations are replaced (v2), ``Model``/``Webservice`` and a MagicMock(spec=Workspace) (v1).
The scoring script runs against monkeypatched models, and (slow) against a tiny real PredNet
and detector, loaded from mounted files and from an MLflow registry.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import cv2
import numpy as np
import pytest
from azure.core.exceptions import (
    HttpResponseError,
    ResourceNotFoundError,
)
from conftest import tiny_prednet
from offline_azure import offline_client

from ml_service.azure import deploy, online_score
from ml_service.azure import spec as specs
from ml_service.azure.commands import AzureServiceError
from ml_service.azure.v2.backend import AuthError
from ml_service.util.env_variables import AzureSettings, Settings, SettingsError
from videoanom.scoring.inference import LocationModels

pytestmark = [
    pytest.mark.filterwarnings("ignore::marshmallow.warnings.RemovedInMarshmallow4Warning"),
    pytest.mark.filterwarnings("ignore::marshmallow.warnings.ChangedInMarshmallow4Warning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),  # azureml-core's v1 deprecation notice
]

LOCATION = "North Gate 2"
SLUG = "north-gate-2"
VERSIONS = {"classifier": f"anomaly-classifier-{SLUG}/3", "prednet": f"prednet-{SLUG}/2"}
OLD_VERSIONS = {"classifier": f"anomaly-classifier-{SLUG}/2", "prednet": f"prednet-{SLUG}/1"}
WORKSPACE = {
    "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
    "AZURE_RESOURCE_GROUP": "rg-videoanom",
    "AML_WORKSPACE_NAME": "ws-videoanom",
}
TRACKING_URI = "azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/0/ws"
SCORING_URI = f"https://va-{SLUG}.westeurope.inference.ml.azure.com/score"
V2_NAME = re.compile(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")  # EndpointConfigurations


def settings(**env: str) -> Settings:
    return Settings.load(env_file=None, environ=env)


def azure(**env: str) -> AzureSettings:
    return AzureSettings.load(env_file=None, environ={**WORKSPACE, **env})


# --- names and versions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "location",
    [
        "campus",
        "a",
        "9th street",
        "North Gate 2",
        "Cámara Ñ — entrada principal (lado norte) nº 12",
        "x" * 100,
        "-_- weird__name -_-",
    ],
)
def test_endpoint_names_follow_both_sdks_rules(location):
    from azure.ai.ml.constants._endpoint import EndpointConfigurations
    from azureml.core.model import webservice_name_validation  # v1's own check

    name = deploy.endpoint_name(location)
    assert 3 <= len(name) <= 32
    assert re.fullmatch(EndpointConfigurations.NAME_REGEX_PATTERN, name)
    assert V2_NAME.fullmatch(name)
    webservice_name_validation(name)  # v1: raises when invalid
    assert name == deploy.endpoint_name(location), "the same location, the same endpoint"


def test_long_names_are_cut_with_a_hash_so_they_stay_distinct():
    a = deploy.endpoint_name("parking garage level minus two east entrance")
    b = deploy.endpoint_name("parking garage level minus two west entrance")
    assert a != b and len(a) == len(b) == 32
    assert a.startswith("va-parking-garage-level")
    assert deploy.endpoint_name("campus") == "va-campus"
    assert deploy.endpoint_name("campus", prefix="vaprod") == "vaprod-campus"


def test_endpoint_prefix_is_checked():
    with pytest.raises(SettingsError, match="AML_ONLINE_ENDPOINT_PREFIX"):
        deploy.DeployOptions.from_env({"AML_ONLINE_ENDPOINT_PREFIX": "9-bad"})
    options = deploy.DeployOptions.from_env(
        {"AML_ONLINE_ENDPOINT_PREFIX": "prod", "AML_ONLINE_KEEP_PREVIOUS": "true"}
    )
    assert options.endpoint_prefix == "prod" and options.keep_previous


def test_versions_must_be_the_locations_models():
    models = deploy.model_versions(LOCATION, VERSIONS)
    assert (models.classifier_version, models.prednet_version) == (3, 2)
    assert deploy.model_versions(LOCATION, {k: f"models:/{v}" for k, v in VERSIONS.items()})
    for bad in (
        {"classifier": "anomaly-classifier-elsewhere/3", "prednet": VERSIONS["prednet"]},
        {"classifier": VERSIONS["classifier"]},
        {"classifier": f"anomaly-classifier-{SLUG}/latest", "prednet": VERSIONS["prednet"]},
        {"classifier": f"anomaly-classifier-{SLUG}/0", "prednet": VERSIONS["prednet"]},
    ):
        with pytest.raises(ValueError, match="expected"):
            deploy.model_versions(LOCATION, bad)
    with pytest.raises(ValueError, match="deploy target"):
        deploy.describe_deployment(settings(), azure(), LOCATION, VERSIONS, "azureml-v3")


# --- v2: the objects ------------------------------------------------------------------------


def built_deployment(slot: str = "blue", **env: str):
    models = deploy.model_versions(LOCATION, VERSIONS)
    options = deploy.DeployOptions.from_env(env)
    return deploy.build_deployment(settings(), azure(), models, slot, TRACKING_URI, options)


def test_v2_deployment_runs_the_scoring_script_from_the_source_dir():
    from azure.ai.ml._utils._asset_utils import get_ignore_file
    from azure.ai.ml._utils._endpoint_utils import validate_scoring_script

    deployment = built_deployment()
    code = Path(deployment.code_configuration.code)
    assert code == specs.SOURCE_DIR
    script = code / deployment.code_configuration.scoring_script
    assert script.is_file() and script == Path(online_score.__file__)
    validate_scoring_script(deployment)  # the SDK's own check before it uploads
    ignore = get_ignore_file(specs.SOURCE_DIR)  # what the code upload leaves out
    for needed in (deploy.SCORING_SCRIPT, "code/videoanom/serving/payloads.py"):
        assert not ignore.is_file_excluded(specs.SOURCE_DIR / needed), needed


def test_v2_deployment_settings_and_environment():
    deployment = built_deployment("green")
    assert deployment.name == "green" and deployment.endpoint_name == f"va-{SLUG}"
    assert deployment.instance_type == deploy.DEFAULT_INSTANCE_TYPE == "Standard_DS3_v2"
    assert deployment.instance_count == 1
    assert deployment.environment_variables == {
        "VIDEOANOM_LOCATION": LOCATION,
        "VIDEOANOM_CLASSIFIER_VERSION": "3",
        "VIDEOANOM_PREDNET_VERSION": "2",
        "VIDEOANOM_MAX_FRAMES": "20000",
        "MLFLOW_TRACKING_URI": TRACKING_URI,
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    assert deployment.request_settings.request_timeout_ms == deploy.REQUEST_TIMEOUT_MS
    assert deployment.tags["classifier"] == VERSIONS["classifier"]
    assert deployment.liveness_probe is None and deployment.readiness_probe is None  # defaults
    env = deployment.environment
    assert env.name == "videoanom-env-serving" and env.image == specs.BASE_IMAGE
    pip = next(d for d in env.conda_file["dependencies"] if isinstance(d, dict))["pip"]
    job_pip = next(
        d
        for d in deploy.yaml.safe_load(specs.CONDA_FILE.read_text())["dependencies"]
        if isinstance(d, dict)
    )["pip"]
    assert pip == [*job_pip, *deploy.SERVING_PACKAGES], "the job environment plus the server"
    assert built_deployment(AML_ONLINE_INSTANCE_TYPE="Standard_F4s_v2").instance_type == (
        "Standard_F4s_v2"
    )
    with pytest.raises(ValueError, match="slot"):
        built_deployment("red")


def test_v2_objects_dump_and_load_back(tmp_path):
    from azure.ai.ml import load_online_deployment, load_online_endpoint

    text = deploy.describe_deployment(settings(), azure(), LOCATION, VERSIONS, "azureml-v2")
    endpoint_yaml = text.split("--- endpoint\n")[1].split("\n\n--- deployment")[0]
    deployment_yaml = text.split("--- deployment blue\n")[1]
    (tmp_path / "endpoint.yml").write_text(endpoint_yaml)
    (tmp_path / "deployment.yml").write_text(deployment_yaml)
    endpoint = load_online_endpoint(tmp_path / "endpoint.yml")
    assert (endpoint.name, endpoint.auth_mode) == (f"va-{SLUG}", "key")
    assert endpoint.identity.type == "system_assigned"
    loaded = load_online_deployment(tmp_path / "deployment.yml")
    assert loaded.name == "blue" and loaded.instance_type == "Standard_DS3_v2"
    assert loaded.environment_variables["VIDEOANOM_CLASSIFIER_VERSION"] == "3"
    assert loaded.code_configuration.scoring_script == deploy.SCORING_SCRIPT


def test_blue_green_slot_choice():
    assert deploy.idle_slot(None) == "blue"
    assert deploy.idle_slot("blue") == "green"
    assert deploy.idle_slot("green") == "blue"
    assert deploy.live_slot(SimpleNamespace(traffic={"blue": 0, "green": 100})) == "green"
    assert deploy.live_slot(SimpleNamespace(traffic={"blue": 0})) is None
    assert deploy.live_slot(SimpleNamespace(traffic={})) is None


# --- v2: the calls, against a mocked MLClient -----------------------------------------------


def poller(value=None):
    return SimpleNamespace(result=lambda: value)


class FakeWorkspace:
    """The online endpoint and deployment operations of an MLClient, recorded in order."""

    def __init__(self, client, deployments=(), traffic=None, fail_create=False):
        self.calls: list[tuple] = []
        self.deployments = {d.name: d for d in deployments}
        self.endpoint = (
            None
            if traffic is None
            else SimpleNamespace(name=f"va-{SLUG}", traffic=dict(traffic), scoring_uri=SCORING_URI)
        )
        self.fail_create = fail_create
        client.workspaces.get = mock.Mock(
            return_value=SimpleNamespace(mlflow_tracking_uri=TRACKING_URI)
        )
        client.online_endpoints.get = self.get_endpoint
        client.online_endpoints.begin_create_or_update = self.put_endpoint
        client.online_deployments.list = lambda name: list(self.deployments.values())
        client.online_deployments.get = self.get_deployment
        client.online_deployments.begin_create_or_update = self.put_deployment
        client.online_deployments.begin_delete = self.delete_deployment
        client.environments.create_or_update = self.put_environment

    def get_endpoint(self, name):
        if self.endpoint is None:
            raise ResourceNotFoundError("endpoint not found")
        return SimpleNamespace(**vars(self.endpoint))

    def put_endpoint(self, endpoint):
        self.calls.append(("endpoint", endpoint.name, dict(endpoint.traffic or {})))
        self.endpoint = SimpleNamespace(
            name=endpoint.name,
            traffic=dict(endpoint.traffic or {}),
            scoring_uri=SCORING_URI,
            identity=SimpleNamespace(principal_id="11111111-aaaa-bbbb-cccc-222222222222"),
        )
        return poller(self.endpoint)

    def put_environment(self, environment):
        self.calls.append(("environment", environment.name))
        return SimpleNamespace(name=environment.name, version="7", id="azureml:env:7")

    def put_deployment(self, deployment):
        self.calls.append(("deployment", deployment.name, deployment.tags["classifier"]))
        self.created = deployment
        if self.fail_create:
            raise HttpResponseError("ResourceNotReady: User container has crashed or terminated")
        stored = SimpleNamespace(
            name=deployment.name, tags=dict(deployment.tags), provisioning_state="Succeeded"
        )
        self.deployments[deployment.name] = stored
        return poller(stored)

    def get_deployment(self, name, endpoint_name):
        return self.deployments[name]

    def delete_deployment(self, name, endpoint_name):
        self.calls.append(("delete", name))
        del self.deployments[name]
        return poller()


def existing(slot, versions=OLD_VERSIONS, state="Succeeded"):
    tags = deploy.model_versions(LOCATION, versions).tags()
    return SimpleNamespace(name=slot, tags=tags, provisioning_state=state)


@pytest.fixture
def client():
    return offline_client(WORKSPACE)


def deploy_v2(client, **env):
    return deploy.deploy_models(
        settings(), azure(), LOCATION, VERSIONS, "azureml-v2", client=client, environ=env
    )


def test_v2_first_deployment_creates_the_endpoint_then_blue(client):
    fake = FakeWorkspace(client)
    line = deploy_v2(client)
    assert fake.calls == [
        ("endpoint", f"va-{SLUG}", {}),
        ("environment", "videoanom-env-serving"),
        ("deployment", "blue", VERSIONS["classifier"]),
        ("endpoint", f"va-{SLUG}", {"blue": 100}),
    ]
    assert fake.created.environment.version == "7", "the registered serving environment"
    assert fake.created.environment_variables["MLFLOW_TRACKING_URI"] == TRACKING_URI
    assert "\n" not in line and f"va-{SLUG}" in line and SCORING_URI in line
    assert "created deployment blue" in line


def test_v2_new_version_goes_to_the_idle_slot_and_the_old_one_is_deleted_after(client):
    fake = FakeWorkspace(client, deployments=[existing("blue")], traffic={"blue": 100})
    line = deploy_v2(client)
    assert fake.calls == [
        ("environment", "videoanom-env-serving"),
        ("deployment", "green", VERSIONS["classifier"]),
        ("endpoint", f"va-{SLUG}", {"blue": 0, "green": 100}),
        ("delete", "blue"),
    ]
    assert "deployment green" in line and "blue deleted" in line
    # and the next version goes back to blue
    fake.calls.clear()
    again = deploy.deploy_models(
        settings(), azure(), LOCATION, OLD_VERSIONS, "azureml-v2", client=client, environ={}
    )
    assert [c[:2] for c in fake.calls] == [
        ("environment", "videoanom-env-serving"),
        ("deployment", "blue"),
        ("endpoint", f"va-{SLUG}"),
        ("delete", "green"),
    ]
    assert "deployment blue" in again


def test_v2_keeps_the_previous_deployment_for_rollback_when_asked(client):
    fake = FakeWorkspace(client, deployments=[existing("green")], traffic={"green": 100})
    line = deploy_v2(client, AML_ONLINE_KEEP_PREVIOUS="true")
    assert ("delete", "green") not in fake.calls
    assert fake.calls[-1] == ("endpoint", f"va-{SLUG}", {"green": 0, "blue": 100})
    assert "green kept at 0% traffic" in line
    # rolling back to the kept versions is a traffic switch: nothing is rebuilt
    fake.calls.clear()
    back = deploy.deploy_models(
        settings(),
        azure(),
        LOCATION,
        OLD_VERSIONS,
        "azureml-v2",
        client=client,
        environ={"AML_ONLINE_KEEP_PREVIOUS": "1"},
    )
    assert fake.calls == [("endpoint", f"va-{SLUG}", {"blue": 0, "green": 100})]
    assert "switched to the existing deployment green" in back


def test_v2_deploying_what_already_serves_changes_nothing(client):
    fake = FakeWorkspace(client, deployments=[existing("blue", VERSIONS)], traffic={"blue": 100})
    line = deploy_v2(client)
    assert fake.calls == []
    assert "unchanged" in line and SCORING_URI in line


def test_v2_a_failed_deployment_leaves_the_traffic_where_it_was(client):
    fake = FakeWorkspace(
        client, deployments=[existing("blue")], traffic={"blue": 100}, fail_create=True
    )
    with pytest.raises(AzureServiceError) as caught:
        deploy_v2(client)
    message = str(caught.value)
    assert "\n" not in message and "deployment green" in message
    assert "blue keeps the traffic" in message and "get-logs --name green" in message
    assert [c[0] for c in fake.calls] == ["environment", "deployment"]  # no traffic, no delete
    assert fake.endpoint.traffic == {"blue": 100}


def test_v2_a_failed_first_deployment_names_the_identity_to_grant(client):
    fake = FakeWorkspace(client, fail_create=True)
    with pytest.raises(AzureServiceError) as caught:
        deploy_v2(client)
    message = str(caught.value)
    assert "the endpoint has no traffic" in message
    assert "11111111-aaaa-bbbb-cccc-222222222222 the AzureML Data Scientist role" in message
    assert fake.endpoint.traffic == {}


def test_v2_a_deployment_that_is_not_provisioned_takes_no_traffic(client):
    fake = FakeWorkspace(client, deployments=[existing("blue")], traffic={"blue": 100})
    fake.deployments["green"] = existing("green", VERSIONS, state="Failed")
    original = fake.put_deployment

    def stays_failed(deployment):
        result = original(deployment)
        fake.deployments[deployment.name].provisioning_state = "Failed"
        return result

    client.online_deployments.begin_create_or_update = stays_failed
    with pytest.raises(AzureServiceError, match=r"green of endpoint .* is Failed"):
        deploy_v2(client)
    assert fake.endpoint.traffic == {"blue": 100}


def test_v2_sign_in_failure_is_one_line(client):
    # the real workspaces.get: the SDK asks the credential for a token first
    with pytest.raises(AuthError) as caught:
        deploy_v2(client)
    assert "\n" not in str(caught.value) and "az login" in str(caught.value)


def test_v2_service_errors_are_one_line(client):
    FakeWorkspace(client)
    client.environments.create_or_update = mock.Mock(
        side_effect=HttpResponseError("Conflict\nline two\nline three")
    )
    with pytest.raises(AzureServiceError) as caught:
        deploy_v2(client)
    assert "\n" not in str(caught.value) and "Conflict" in str(caught.value)


def test_missing_workspace_settings_say_which():
    empty = AzureSettings.load(env_file=None, environ={})
    for target in deploy.TARGETS:
        with pytest.raises(SettingsError, match=r"AZURE_SUBSCRIPTION_ID.*AML_WORKSPACE_NAME"):
            deploy.deploy_models(settings(), empty, LOCATION, VERSIONS, target)


# --- v1: the objects and Model.deploy -------------------------------------------------------


@pytest.fixture
def workspace():
    from azureml.core import Workspace

    ws = mock.MagicMock(spec=Workspace)
    ws.name = WORKSPACE["AML_WORKSPACE_NAME"]
    ws.get_mlflow_tracking_uri.return_value = TRACKING_URI
    return ws


class V1Service:
    """Model and Webservice of azureml.core replaced: records Model.deploy's arguments."""

    def __init__(self, monkeypatch, existing=None, state="Healthy"):
        import azureml.core
        from azureml.exceptions import WebserviceException

        self.deployed: dict = {}
        self.state = state

        def webservice(workspace, name):
            if existing is None:
                raise WebserviceException(
                    f"WebserviceNotFound: Webservice with name {name} not found"
                )
            return existing

        model = mock.MagicMock(name="Model")
        model.side_effect = lambda ws, name, version: SimpleNamespace(name=name, version=version)
        model.deploy.side_effect = self.deploy
        monkeypatch.setattr(azureml.core, "Model", model)
        monkeypatch.setattr(azureml.core, "Webservice", webservice)
        self.model = model

    def deploy(self, workspace, name, models, **kwargs):
        self.deployed = {"workspace": workspace, "name": name, "models": models, **kwargs}
        return SimpleNamespace(
            state=self.state,
            error=None if self.state == "Healthy" else {"message": "Container crashed"},
            scoring_uri="http://aci.example/score",
            wait_for_deployment=lambda show_output=False: None,
        )


def deploy_v1(workspace, **env):
    return deploy.deploy_models(
        settings(), azure(), LOCATION, VERSIONS, "azureml-v1", workspace=workspace, environ=env
    )


def test_v1_deploys_the_two_models_with_the_entry_script_on_aci(monkeypatch, workspace):
    from azureml.core.model import InferenceConfig
    from azureml.core.webservice.aci import AciServiceDeploymentConfiguration

    service = V1Service(monkeypatch)
    line = deploy_v1(workspace)
    sent = service.deployed
    assert sent["workspace"] is workspace and sent["name"] == f"va-{SLUG}"
    assert [(m.name, m.version) for m in sent["models"]] == [
        (f"anomaly-classifier-{SLUG}", 3),
        (f"prednet-{SLUG}", 2),
    ]
    assert sent["overwrite"] is True and sent["deployment_target"] is None
    inference = sent["inference_config"]
    assert isinstance(inference, InferenceConfig)
    assert inference.entry_script == deploy.SCORING_SCRIPT
    assert Path(inference.source_directory) == specs.SOURCE_DIR.resolve()
    assert (Path(inference.source_directory) / inference.entry_script).is_file()
    environment = inference.environment
    assert environment.name == "videoanom-env-serving"
    assert environment.docker.base_image == specs.BASE_IMAGE
    pip = list(environment.python.conda_dependencies.pip_packages)
    assert set(deploy.SERVING_PACKAGES) <= set(pip) and "keras==3.15.1" in pip
    assert environment.environment_variables["VIDEOANOM_LOCATION"] == LOCATION
    assert environment.environment_variables["VIDEOANOM_CLASSIFIER_VERSION"] == "3"
    assert environment.environment_variables["MLFLOW_TRACKING_URI"] == TRACKING_URI
    config = sent["deployment_config"]
    assert isinstance(config, AciServiceDeploymentConfiguration)
    assert (config.cpu_cores, config.memory_gb) == (1, 4)
    assert config.auth_enabled is True and config.enable_app_insights is True
    assert config.tags["classifier"] == VERSIONS["classifier"]
    assert "\n" not in line and "created" in line and "http://aci.example/score" in line


def test_v1_on_an_attached_aks_cluster(monkeypatch, workspace):
    import azureml.core.compute
    from azureml.core.compute import AksCompute
    from azureml.core.webservice.aks import AksServiceDeploymentConfiguration

    service = V1Service(monkeypatch)
    cluster = mock.MagicMock(spec=AksCompute)
    monkeypatch.setattr(azureml.core.compute, "ComputeTarget", lambda workspace, name: cluster)
    line = deploy_v1(workspace, AML_AKS_CLUSTER="aks-serving")
    assert service.deployed["deployment_target"] is cluster
    config = service.deployed["deployment_config"]
    assert isinstance(config, AksServiceDeploymentConfiguration)
    assert config.scoring_timeout_ms == deploy.REQUEST_TIMEOUT_MS and config.auth_enabled
    assert "AKS cluster aks-serving" in line


def test_v1_a_missing_aks_cluster_is_a_settings_error(monkeypatch, workspace):
    import azureml.core.compute
    from azureml.exceptions import ComputeTargetException

    V1Service(monkeypatch)

    def missing(workspace, name):
        raise ComputeTargetException("ComputeTargetNotFound")

    monkeypatch.setattr(azureml.core.compute, "ComputeTarget", missing)
    with pytest.raises(SettingsError, match="AML_AKS_CLUSTER='aks-x'"):
        deploy_v1(workspace, AML_AKS_CLUSTER="aks-x")


def test_v1_same_versions_on_a_healthy_service_changes_nothing(monkeypatch, workspace):
    tags = deploy.model_versions(LOCATION, VERSIONS).tags()
    running = SimpleNamespace(tags=tags, state="Healthy", scoring_uri="http://aci.example/score")
    service = V1Service(monkeypatch, existing=running)
    line = deploy_v1(workspace)
    assert service.deployed == {} and "unchanged" in line


def test_v1_an_unhealthy_service_is_a_service_error(monkeypatch, workspace):
    V1Service(monkeypatch, state="Unhealthy")
    with pytest.raises(AzureServiceError, match=r"Unhealthy.*Container crashed"):
        deploy_v1(workspace)


def test_v1_sdk_errors_are_one_line(monkeypatch, workspace):
    from azureml.exceptions import WebserviceException

    service = V1Service(monkeypatch)
    service.model.deploy.side_effect = WebserviceException("Quota exceeded\nmore detail")
    with pytest.raises(AzureServiceError, match="Quota exceeded") as caught:
        deploy_v1(workspace)
    assert "\n" not in str(caught.value)


def test_describe_works_offline_for_both_targets(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("describe_deployment tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    empty = AzureSettings.load(env_file=None, environ={})
    v2 = deploy.describe_deployment(settings(), empty, LOCATION, VERSIONS, "azureml-v2")
    assert f"endpoint va-{SLUG}" in v2 and "scoring_script: ml_service/azure/online_score.py" in v2
    assert "auth_mode: key" in v2 and "instance_type: Standard_DS3_v2" in v2
    v1 = deploy.describe_deployment(
        settings(), empty, LOCATION, VERSIONS, "azureml-v1", environ={"AML_AKS_CLUSTER": "aks"}
    )
    assert f"web service va-{SLUG} on AKS cluster aks" in v1
    assert "VIDEOANOM_CLASSIFIER_VERSION=3" in v1 and "azureml-inference-server-http" in v1


# --- the scoring script ---------------------------------------------------------------------


def png(frame: np.ndarray) -> str:
    ok, data = cv2.imencode(".png", frame)
    assert ok
    return base64.b64encode(data.tobytes()).decode()


def square_frames(n: int, size: int = 16) -> list[np.ndarray]:
    frames = []
    for t in range(n):
        frame = np.full((size, size, 3), 90, np.uint8)
        x = t % (size - 4)
        frame[4:8, x : x + 4] = 220
        frames.append(frame)
    return frames


def batch(frames) -> str:
    return json.dumps({"frames": [png(f) for f in frames]})


@pytest.fixture
def scoring(monkeypatch):
    """online_score initialised with stand-in models; returns what score_frames received."""
    import videoanom.scoring.inference as inference

    received: dict = {}
    models = LocationModels(LOCATION, prednet=None, detector=None, versions=dict(VERSIONS))

    def load(location, version=None):
        received["load"] = (location, version)
        return models

    def score(m, frames, name="clip"):
        frames = list(frames)
        received["frames"] = frames
        if any(f.shape[0] < 8 for f in frames):
            raise ValueError("frames smaller than the model's input")
        return np.linspace(0, 1, len(frames)), (np.arange(len(frames)) % 2)

    monkeypatch.setattr(inference, "load_location_models", load)
    monkeypatch.setattr(inference, "score_frames", score)
    monkeypatch.setenv("VIDEOANOM_LOCATION", LOCATION)
    monkeypatch.setenv("VIDEOANOM_CLASSIFIER_VERSION", "3")
    monkeypatch.setenv("VIDEOANOM_PREDNET_VERSION", "2")
    monkeypatch.setenv("VIDEOANOM_MAX_FRAMES", "5")
    monkeypatch.delenv("AZUREML_MODEL_DIR", raising=False)
    monkeypatch.setattr(online_score, "_state", {"models": None, "max_frames": 1})
    online_score.init()
    return received


def test_run_scores_a_json_batch(scoring):
    assert scoring["load"] == (LOCATION, 3)
    answer = online_score.run(batch(square_frames(4)))
    assert answer["location"] == LOCATION and answer["models"] == VERSIONS
    assert [f["frame"] for f in answer["frames"]] == [1, 2, 3, 4]
    assert answer["frames"][3] == {"frame": 4, "anomaly_score": 1.0, "is_anomaly": 1}
    assert len(scoring["frames"]) == 4 and scoring["frames"][0].shape == (16, 16, 3)
    json.dumps(answer)


@pytest.mark.parametrize(
    "body, status, words",
    [
        ("not json", 400, "not JSON"),
        ("", 400, "not JSON"),
        (b"\xff\xfe", 400, "not JSON"),
        ("[1, 2]", 422, "must be an object"),
        ('{"frames": []}', 422, "empty"),
        ('{"frames": ["%%% not base64 %%%"]}', 422, "base64"),
        ('{"frames": ["aGVsbG8="]}', 422, "PNG or JPEG"),
        ('{"frames": [1]}', 422, "frames[0]"),
    ],
)
def test_bad_input_is_a_4xx_error_object_never_an_exception(scoring, body, status, words):
    answer = online_score.run(body)
    assert answer["status_code"] == status and words in answer["detail"]
    assert "frames" not in scoring


def test_too_many_frames_is_413_and_unscorable_frames_422(scoring):
    answer = online_score.run(batch(square_frames(6)))
    assert answer["status_code"] == 413 and "at most 5 frames" in answer["detail"]
    tiny = [np.zeros((4, 4, 3), np.uint8)] * 2
    answer = online_score.run(batch(tiny))
    assert answer["status_code"] == 422 and "smaller" in answer["detail"]


def test_run_before_init_is_503(monkeypatch):
    monkeypatch.setattr(online_score, "_state", {"models": None, "max_frames": 5})
    assert online_score.run(batch(square_frames(1)))["status_code"] == 503


def test_under_the_inference_server_errors_are_aml_responses(scoring, monkeypatch):
    """With azureml-inference-server-http the error is AMLResponse(body, status, json_str)."""
    import types

    made = []

    class AMLResponse:
        def __init__(self, message, status_code, response_headers=None, json_str=False):
            made.append((message, status_code, json_str))

    module = types.ModuleType("azureml.contrib.services.aml_response")
    module.AMLResponse = AMLResponse
    monkeypatch.setitem(sys.modules, "azureml.contrib.services.aml_response", module)
    assert isinstance(online_score.run("{oops"), AMLResponse)
    assert made[0][1:] == (400, True) and "not JSON" in made[0][0]["detail"]


def test_init_refuses_a_bad_configuration(monkeypatch, scoring):
    monkeypatch.delenv("VIDEOANOM_LOCATION")
    with pytest.raises(RuntimeError, match="VIDEOANOM_LOCATION"):
        online_score.init()
    monkeypatch.setenv("VIDEOANOM_LOCATION", LOCATION)
    monkeypatch.setenv("VIDEOANOM_CLASSIFIER_VERSION", "anomaly-classifier-other/3")
    with pytest.raises(RuntimeError, match="not a version of"):
        online_score.init()
    monkeypatch.setenv("VIDEOANOM_CLASSIFIER_VERSION", f"anomaly-classifier-{SLUG}/3")
    monkeypatch.setenv("VIDEOANOM_PREDNET_VERSION", "7")
    with pytest.raises(RuntimeError, match=r"trained on prednet-north-gate-2/2, not .*/7"):
        online_score.init()
    monkeypatch.setenv("VIDEOANOM_PREDNET_VERSION", "2")
    monkeypatch.setenv("VIDEOANOM_MAX_FRAMES", "lots")
    with pytest.raises(RuntimeError, match="VIDEOANOM_MAX_FRAMES"):
        online_score.init()


def test_the_server_can_load_the_script_from_its_file(tmp_path):
    """azureml-inference-server-http loads the entry script by path as ``entry_module``
    (no package): the script puts the repository's root and code/ on sys.path itself. Run
    with no site-packages (-S), so nothing but the script's own path entries can find them."""
    script = specs.SOURCE_DIR / deploy.SCORING_SCRIPT
    probe = (
        "import importlib.util as u, sys\n"
        f"spec = u.spec_from_file_location('entry_module', {str(script)!r})\n"
        "module = u.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "assert callable(module.init) and callable(module.run)\n"
        f"assert sys.path[:2] == [{str(specs.SOURCE_DIR)!r}, {str(specs.SOURCE_DIR / 'code')!r}]\n"
        "import ml_service.util, videoanom.names\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.stdout.strip() == "ok", result.stderr


# --- the scoring script with a tiny real PredNet and detector -------------------------------


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A tiny untrained PredNet and a detector fitted on its features, saved as registered
    models are (prednet.keras; detector.json and its files)."""
    from videoanom.prednet import with_output_mode
    from videoanom.scoring.detector import Detector
    from videoanom.scoring.features import FeatureSet, extract_features

    size = 16
    net = tiny_prednet(size)
    scorer = with_output_mode(net, "all")

    def clip(n, seed, anomaly=False):
        rng = np.random.default_rng(seed)
        background = rng.integers(60, 120, size=(size, size, 1))
        frames = []
        for t in range(n):
            frame = background.copy()
            x = t % (size - 4)
            frame[4:8, x : x + 4] = 220
            if anomaly and 10 <= t < 20:
                frame[10:14, 2:6] = 255
            noisy = np.clip(frame + rng.normal(0, 3, frame.shape), 0, 255)
            frames.append(noisy.astype(np.uint8))
        return np.stack(frames)

    val = FeatureSet.concat([extract_features(scorer, clip(24, s), f"v{s}") for s in range(2)])
    tests = []
    for s in range(4):
        anomalous = bool(s % 2)
        labels = np.array([int(anomalous and 10 <= i < 20) for i in range(24)])
        features = extract_features(
            scorer, clip(24, 10 + s, anomalous), f"t{s}", labels=labels, kind="a" * anomalous
        )
        tests.append(features)
    detector = Detector.fit(val, FeatureSet.concat(tests), seed=0)
    root = tmp_path_factory.mktemp("tiny")
    (root / "prednet").mkdir()
    net.save(root / "prednet" / "prednet.keras")
    detector.save(root / "detector")
    grey = [np.repeat(frame, 3, axis=2) for frame in clip(12, 99, anomaly=True)]
    from videoanom.scoring.inference import score_frames

    expected = score_frames(LocationModels(LOCATION, scorer, detector, dict(VERSIONS)), grey)
    return root, grey, expected


def configure(monkeypatch, **env):
    monkeypatch.setattr(online_score, "_state", {"models": None, "max_frames": 1})
    for name in ("AZUREML_MODEL_DIR", "VIDEOANOM_MAX_FRAMES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        "VIDEOANOM_LOCATION": LOCATION,
        "VIDEOANOM_CLASSIFIER_VERSION": "3",
        "VIDEOANOM_PREDNET_VERSION": "2",
        **env,
    }.items():
        monkeypatch.setenv(name, value)


@pytest.mark.slow
def test_real_models_mounted_as_a_v1_web_service_mounts_them(tiny_models, tmp_path, monkeypatch):
    import shutil

    root, frames, (scores, flags) = tiny_models
    mounted = tmp_path / "azureml-models"
    # <name>/<version>/<artifact folder>/...: the files may sit one folder down
    shutil.copytree(root / "detector", mounted / f"anomaly-classifier-{SLUG}" / "3" / "detector")
    shutil.copytree(root / "prednet", mounted / f"prednet-{SLUG}" / "2")
    configure(monkeypatch, AZUREML_MODEL_DIR=str(mounted))
    online_score.init()
    assert online_score._state["max_frames"] == 20000
    answer = online_score.run(batch(frames))
    assert answer["models"] == VERSIONS and len(answer["frames"]) == len(frames)
    np.testing.assert_allclose([f["anomaly_score"] for f in answer["frames"]], scores, atol=1e-6)
    assert [f["is_anomaly"] for f in answer["frames"]] == [int(f) for f in flags]


@pytest.mark.slow
def test_real_models_from_an_mlflow_registry(tiny_models, tmp_path, monkeypatch):
    """The v2 path: no mounted models, init() reads the registry MLFLOW_TRACKING_URI names."""
    import mlflow

    from videoanom.registry import register_version

    root, frames, (scores, _) = tiny_models
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        for _ in (1, 2):
            prednet = register_version(f"prednet-{SLUG}", str(root / "prednet"), None, {})
        assert prednet == 2
        for _ in (1, 2, 3):
            classifier = register_version(
                f"anomaly-classifier-{SLUG}",
                str(root / "detector"),
                None,
                {"prednet": f"models:/prednet-{SLUG}/2", "location": LOCATION},
            )
        assert classifier == 3
        configure(monkeypatch, MLFLOW_TRACKING_URI=uri, AZUREML_MODEL_DIR=str(tmp_path / "none"))
        online_score.init()
        answer = online_score.run(batch(frames))
    finally:
        mlflow.set_tracking_uri("")
    assert answer["models"] == VERSIONS
    np.testing.assert_allclose([f["anomaly_score"] for f in answer["frames"]], scores, atol=1e-6)
