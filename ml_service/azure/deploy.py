"""Deploy a location's detector to Azure ML: a v2 managed online endpoint or a v1 web service.

The release gate calls :func:`deploy_models` after it promoted a detector
(``videoanom release --location X --deploy azureml-v2|azureml-v1``); :func:`describe_deployment`
builds the same SDK objects offline and renders them (dry runs, tests).

Both targets run :mod:`ml_service.azure.online_score` from the repository root (``SOURCE_DIR``,
less ``.amlignore``) in the serving environment: ``environment_setup/conda.yml`` on
``BASE_IMAGE`` plus azureml-inference-server-http (the training environment has no HTTP
server), registered as ``<AML_ENVIRONMENT_NAME>-serving``.

**v2** (azure-ai-ml): one endpoint per location, ``<prefix>-<location slug>``, key auth, a
system-assigned identity. Blue/green: the new detector goes to the idle slot of ``blue`` and
``green``; only when that deployment is provisioned (its ``init()`` loaded the models and
its readiness probe passed) does the endpoint's traffic move to it, 100%. A failed deployment
changes nothing for callers (the old one keeps the traffic; the failed one stays, at 0%, for
its logs, and the next deploy overwrites it). The previous deployment is then deleted (one
instance billed), or with ``AML_ONLINE_KEEP_PREVIOUS=true`` kept at 0% traffic: a rollback to
it is then a traffic switch, which deploying its versions again does without rebuilding
anything. Deploying the versions that already serve all traffic changes nothing.

**v1** (azureml-sdk): one web service per location with the same name, on ACI or, with
``AML_AKS_CLUSTER``, on that attached AKS cluster; key auth and Application Insights. The
detector and PredNet versions are deployed as the service's models (the MLflow-registered
models are Azure ML model assets of the same name and version), so the container reads them
from ``AZUREML_MODEL_DIR`` without registry access. An update replaces the service in place
(``overwrite=True``: no blue/green in v1); the same versions on a healthy service change
nothing.

Settings beyond :class:`AzureSettings` (read here, from the environment or ``.env``):
``AML_ONLINE_INSTANCE_TYPE`` (v2 VM size, default ``Standard_DS3_v2``),
``AML_ONLINE_KEEP_PREVIOUS`` (v2), ``AML_AKS_CLUSTER`` (v1), ``AML_ONLINE_ENDPOINT_PREFIX``
(default ``va``; endpoint names are unique per Azure region, so two workspaces in one region
need different prefixes).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import yaml

from ml_service.azure.commands import AzureServiceError, _service
from ml_service.azure.spec import BASE_IMAGE, CONDA_FILE, SOURCE_DIR
from ml_service.util.env_variables import AzureSettings, Settings, SettingsError
from videoanom.names import classifier_model_name, normalise_location, prednet_model_name

logger = logging.getLogger(__name__)

TARGETS = ("azureml-v2", "azureml-v1")
SCORING_SCRIPT = "ml_service/azure/online_score.py"  # relative to SOURCE_DIR
# The HTTP server that runs init()/run() (azureml-defaults: what v1 checks for; it requires
# the server too). conda.yml plus these resolves with no conflict (pip install --dry-run,
# Linux x86-64, Python 3.11).
INFERENCE_SERVER = "azureml-inference-server-http==1.5.1"
SERVING_PACKAGES = ("azureml-defaults==1.62.0", INFERENCE_SERVER)
SERVING_SUFFIX = "-serving"

DEFAULT_INSTANCE_TYPE = "Standard_DS3_v2"  # 4 vCPU, 14 GiB: TensorFlow on CPU
INSTANCE_TYPE_ENV = "AML_ONLINE_INSTANCE_TYPE"
KEEP_PREVIOUS_ENV = "AML_ONLINE_KEEP_PREVIOUS"
AKS_CLUSTER_ENV = "AML_AKS_CLUSTER"
ENDPOINT_PREFIX_ENV = "AML_ONLINE_ENDPOINT_PREFIX"
DEFAULT_ENDPOINT_PREFIX = "va"
SLOTS = ("blue", "green")
INSTANCE_COUNT = 1
# A request scores a whole batch of frames: the service's 5 s default is far too short.
REQUEST_TIMEOUT_MS = 90_000
MAX_CONCURRENT_REQUESTS = 1  # one batch at a time per instance (TensorFlow uses every core)
ACI_CPU_CORES = 1
ACI_MEMORY_GB = 4
NAME_MAX = 32  # endpoint and web service names: 3-32 characters
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # both SDKs' rule, lower case
TRACKING_URI_OFFLINE = "<the workspace's MLflow tracking URI, read at deploy time>"
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class DeployOptions:
    """The deployment settings that are not :class:`AzureSettings` fields."""

    instance_type: str = DEFAULT_INSTANCE_TYPE
    keep_previous: bool = False
    aks_cluster: str = ""
    endpoint_prefix: str = DEFAULT_ENDPOINT_PREFIX

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DeployOptions:
        if environ is None:  # the environment wins over .env, as for every other setting
            from dotenv import dotenv_values

            dotenv = dotenv_values(".env") if os.path.isfile(".env") else {}
            environ = {**{k: v or "" for k, v in dotenv.items()}, **os.environ}
        prefix = environ.get(ENDPOINT_PREFIX_ENV, "").strip() or DEFAULT_ENDPOINT_PREFIX
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,9}", prefix):
            raise SettingsError(
                f"{ENDPOINT_PREFIX_ENV}={prefix!r}: use 1-10 lower-case letters, digits or "
                "hyphens, starting with a letter"
            )
        return cls(
            instance_type=environ.get(INSTANCE_TYPE_ENV, "").strip() or DEFAULT_INSTANCE_TYPE,
            keep_previous=environ.get(KEEP_PREVIOUS_ENV, "").strip().lower() in _TRUE,
            aks_cluster=environ.get(AKS_CLUSTER_ENV, "").strip(),
            endpoint_prefix=prefix,
        )


@dataclass(frozen=True)
class ModelVersions:
    """The two registered models a deployment serves, checked against the location."""

    location: str
    classifier_name: str
    classifier_version: int
    prednet_name: str
    prednet_version: int

    @property
    def classifier(self) -> str:
        return f"{self.classifier_name}/{self.classifier_version}"

    @property
    def prednet(self) -> str:
        return f"{self.prednet_name}/{self.prednet_version}"

    def tags(self) -> dict[str, str]:
        """Tags of the deployment / web service: what it serves (also how idempotency and
        rollback recognise it)."""
        return {
            "videoanom": "detector",
            "location": self.location,
            "classifier": self.classifier,
            "prednet": self.prednet,
        }


def model_versions(location: str, versions: Mapping[str, str]) -> ModelVersions:
    """``{"classifier": "anomaly-classifier-x/3", "prednet": "prednet-x/2"}`` checked: both
    present, both models of ``location``, whole version numbers (``models:/`` allowed)."""
    from videoanom.names import validate_location

    validate_location(location)
    parsed: dict[str, tuple[str, int]] = {}
    for key, expected in (
        ("classifier", classifier_model_name(location)),
        ("prednet", prednet_model_name(location)),
    ):
        value = str(versions.get(key, "")).strip().removeprefix("models:/")
        name, _, number = value.rpartition("/")
        if name != expected or not number.isdigit() or int(number) < 1:
            raise ValueError(
                f"versions[{key!r}]={versions.get(key)!r}: expected '{expected}/<version>' "
                f"for location {location!r}"
            )
        parsed[key] = (name, int(number))
    return ModelVersions(location, *parsed["classifier"], *parsed["prednet"])


# ---------------------------------------------------------------- shared pieces


def endpoint_name(location: str, prefix: str = DEFAULT_ENDPOINT_PREFIX) -> str:
    """``<prefix>-<location slug>``: a valid v2 endpoint and v1 web service name (lower-case
    letters, digits and hyphens, starts with a letter, ends with a letter or digit, 3-32
    characters). Too long, it is cut and a hash of the whole slug is appended, so two long
    locations sharing a beginning still get different names."""
    slug = normalise_location(location)
    name = f"{prefix}-{slug}"
    if len(name) > NAME_MAX:
        digest = hashlib.sha256(slug.encode()).hexdigest()[:6]
        name = f"{name[: NAME_MAX - len(digest) - 1].rstrip('-')}-{digest}"
    if not _NAME.fullmatch(name) or not 3 <= len(name) <= NAME_MAX:  # cannot happen: a guard
        raise ValueError(f"cannot build a valid endpoint name from {location!r}: {name!r}")
    return name


def scoring_environment_variables(
    settings: Settings, models: ModelVersions, tracking_uri: str
) -> dict[str, str]:
    """What :mod:`ml_service.azure.online_score` reads: no secret is among them."""
    return {
        "VIDEOANOM_LOCATION": models.location,
        "VIDEOANOM_CLASSIFIER_VERSION": str(models.classifier_version),
        "VIDEOANOM_PREDNET_VERSION": str(models.prednet_version),
        "VIDEOANOM_MAX_FRAMES": str(settings.max_frames),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def serving_conda() -> dict[str, Any]:
    """``environment_setup/conda.yml`` with :data:`SERVING_PACKAGES` added to its pip list."""
    if not CONDA_FILE.is_file():
        raise SettingsError(f"{CONDA_FILE} is missing: it defines the Azure ML environment")
    conda = yaml.safe_load(CONDA_FILE.read_text())
    added = {_package(p) for p in SERVING_PACKAGES}
    for dependency in conda["dependencies"]:
        if isinstance(dependency, dict) and "pip" in dependency:
            pip = [p for p in dependency["pip"] if _package(p) not in added]
            dependency["pip"] = [*pip, *SERVING_PACKAGES]
            return conda
    raise SettingsError(f"{CONDA_FILE} has no pip list to add the inference server to")


def _package(requirement: str) -> str:
    return re.split(r"[\[=<>!~ ;]", requirement, maxsplit=1)[0].lower()


def serving_environment_name(azure: AzureSettings) -> str:
    return f"{azure.environment_name}{SERVING_SUFFIX}"


# ---------------------------------------------------------------- v2: managed online endpoint


def build_endpoint(location: str, options: DeployOptions) -> Any:
    """The location's managed online endpoint (key auth, system-assigned identity)."""
    from azure.ai.ml.entities import IdentityConfiguration, ManagedOnlineEndpoint

    return ManagedOnlineEndpoint(
        name=endpoint_name(location, options.endpoint_prefix),
        auth_mode="key",
        identity=IdentityConfiguration(type="system_assigned"),
        description=f"videoanom: anomaly detector of location {location}",
        tags={"videoanom": "detector", "location": location},
    )


def serving_environment_v2(azure: AzureSettings) -> Any:
    from azure.ai.ml.entities import Environment

    return Environment(
        name=serving_environment_name(azure),
        image=BASE_IMAGE,
        conda_file=serving_conda(),
        description="videoanom: the job environment plus azureml-inference-server-http",
    )


def build_deployment(
    settings: Settings,
    azure: AzureSettings,
    models: ModelVersions,
    slot: str,
    tracking_uri: str,
    options: DeployOptions,
    environment: Any = None,
) -> Any:
    """One slot (``blue``/``green``) of the endpoint, serving ``models``; ``environment``
    defaults to the serving environment inline (a registered one is passed when deploying)."""
    from azure.ai.ml.entities import (
        CodeConfiguration,
        ManagedOnlineDeployment,
        OnlineRequestSettings,
    )

    if slot not in SLOTS:
        raise ValueError(f"deployment slot {slot!r}: use one of {', '.join(SLOTS)}")
    return ManagedOnlineDeployment(
        name=slot,
        endpoint_name=endpoint_name(models.location, options.endpoint_prefix),
        code_configuration=CodeConfiguration(code=str(SOURCE_DIR), scoring_script=SCORING_SCRIPT),
        environment=environment if environment is not None else serving_environment_v2(azure),
        instance_type=options.instance_type,
        instance_count=INSTANCE_COUNT,
        environment_variables=scoring_environment_variables(settings, models, tracking_uri),
        request_settings=OnlineRequestSettings(
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            max_concurrent_requests_per_instance=MAX_CONCURRENT_REQUESTS,
        ),
        # liveness/readiness probes: the service's defaults (readiness waits for init())
        app_insights_enabled=True,
        tags=models.tags(),
        description=f"{models.classifier} with {models.prednet}",
    )


def live_slot(endpoint: Any) -> str | None:
    """The deployment that takes the endpoint's traffic (the largest share), if any."""
    traffic = {k: int(v) for k, v in (getattr(endpoint, "traffic", None) or {}).items()}
    live = max(traffic, key=lambda k: (traffic[k], k), default=None)
    return live if live is not None and traffic[live] > 0 else None


def idle_slot(live: str | None) -> str:
    """Where a new version goes: the slot that is not live (``blue`` first)."""
    return SLOTS[1] if live == SLOTS[0] else SLOTS[0]


def serves(deployment: Any, models: ModelVersions) -> bool:
    """Whether a deployment runs exactly these versions and was provisioned."""
    tags = getattr(deployment, "tags", None) or {}
    state = str(getattr(deployment, "provisioning_state", "") or "")
    return (
        tags.get("classifier") == models.classifier
        and tags.get("prednet") == models.prednet
        and state.lower() == "succeeded"
    )


def _deploy_v2(
    settings: Settings,
    azure: AzureSettings,
    models: ModelVersions,
    options: DeployOptions,
    client: Any,
) -> str:
    from azure.core.exceptions import ResourceNotFoundError

    name = endpoint_name(models.location, options.endpoint_prefix)
    tracking_uri = client.workspaces.get(azure.workspace_name).mlflow_tracking_uri
    try:
        endpoint = client.online_endpoints.get(name)
    except ResourceNotFoundError:
        endpoint = None
    deployments = {d.name: d for d in client.online_deployments.list(name)} if endpoint else {}
    live = live_slot(endpoint) if endpoint is not None else None

    ready = next((d for d in deployments.values() if serves(d, models)), None)
    if ready is not None and ready.name == live and int(endpoint.traffic[live]) == 100:
        return (
            f"azureml-v2: endpoint {name} already serves {models.classifier} "
            f"({models.prednet}) from deployment {live}: unchanged; {endpoint.scoring_uri}"
        )
    if ready is not None:  # e.g. the previous, kept deployment: a rollback is a traffic switch
        slot, how = ready.name, "switched to the existing"
    else:
        slot, how = idle_slot(live), "created"
        if endpoint is None:
            endpoint = client.online_endpoints.begin_create_or_update(
                build_endpoint(models.location, options)
            ).result()
            logger.info("endpoint %s created", name)
        environment = client.environments.create_or_update(serving_environment_v2(azure))
        deployment = build_deployment(
            settings, azure, models, slot, tracking_uri, options, environment=environment
        )
        _create_deployment(client, deployment, name, live, _principal(endpoint))

    endpoint = client.online_endpoints.get(name)
    endpoint.traffic = {**{k: 0 for k in deployments if k != slot}, slot: 100}
    endpoint = client.online_endpoints.begin_create_or_update(endpoint).result()
    previous = ""
    if live and live != slot:
        if live in SLOTS and not options.keep_previous:
            client.online_deployments.begin_delete(name=live, endpoint_name=name).result()
            previous = f"; previous deployment {live} deleted"
        else:
            previous = f"; previous deployment {live} kept at 0% traffic"
    return (
        f"azureml-v2: endpoint {name}: {how} deployment {slot} serves {models.classifier} "
        f"({models.prednet}) with 100% of the traffic{previous}; {endpoint.scoring_uri}"
    )


def _create_deployment(
    client: Any, deployment: Any, endpoint: str, live: str | None, principal: str = ""
) -> None:
    """Create or update one slot and wait until it is provisioned (init() done, ready)."""
    from azure.core.exceptions import HttpResponseError

    slot = deployment.name
    keeps = f"deployment {live} keeps the traffic" if live else "the endpoint has no traffic"
    logs = f"az ml online-deployment get-logs --name {slot} --endpoint-name {endpoint}"
    see = f"see `{logs}`"
    if principal:  # the usual first-deploy failure: the identity may not read the registry
        see += (
            f" (if they show the registry refusing access: grant the endpoint's identity "
            f"{principal} the AzureML Data Scientist role on the workspace, then deploy again)"
        )
    try:
        client.online_deployments.begin_create_or_update(deployment).result()
    except HttpResponseError as error:
        raise AzureServiceError(
            f"Azure ML: deployment {slot} of endpoint {endpoint} failed: {_one_line(error)}; "
            f"{keeps}; {see}"
        ) from error
    created = client.online_deployments.get(name=slot, endpoint_name=endpoint)
    state = str(getattr(created, "provisioning_state", "") or "")
    if state.lower() != "succeeded":
        raise AzureServiceError(
            f"Azure ML: deployment {slot} of endpoint {endpoint} is {state or 'in no state'}, "
            f"not Succeeded; {keeps}; {see}"
        )


def _principal(endpoint: Any) -> str:
    identity = getattr(endpoint, "identity", None)
    return str(getattr(identity, "principal_id", "") or "")


# ---------------------------------------------------------------- v1: web service


def serving_environment_v1(azure: AzureSettings, variables: Mapping[str, str]) -> Any:
    """The serving environment as an azureml-core Environment, with the scoring variables."""
    from azureml.core import Environment

    if not CONDA_FILE.is_file():
        raise SettingsError(f"{CONDA_FILE} is missing: it defines the Azure ML environment")
    environment = Environment.from_conda_specification(
        serving_environment_name(azure), str(CONDA_FILE)
    )
    environment.docker.base_image = BASE_IMAGE
    for package in SERVING_PACKAGES:
        environment.python.conda_dependencies.add_pip_package(package)
    environment.environment_variables = dict(variables)
    return environment


def inference_config_v1(azure: AzureSettings, variables: Mapping[str, str]) -> Any:
    """The entry script in the uploaded source directory, in the serving environment (the
    SDK checks here that the script exists relative to the source directory)."""
    from azureml.core.model import InferenceConfig

    return InferenceConfig(
        entry_script=SCORING_SCRIPT,
        source_directory=str(SOURCE_DIR),
        environment=serving_environment_v1(azure, variables),
    )


def deployment_config_v1(models: ModelVersions, options: DeployOptions) -> Any:
    """ACI, or AKS when ``AML_AKS_CLUSTER`` names an attached cluster: key auth, App Insights."""
    from azureml.core.webservice import AciWebservice, AksWebservice

    common = {
        "cpu_cores": ACI_CPU_CORES,
        "memory_gb": ACI_MEMORY_GB,
        "auth_enabled": True,
        "enable_app_insights": True,
        "tags": models.tags(),
        "description": f"videoanom: {models.classifier} with {models.prednet}",
    }
    if options.aks_cluster:
        return AksWebservice.deploy_configuration(
            **common, scoring_timeout_ms=REQUEST_TIMEOUT_MS, num_replicas=INSTANCE_COUNT
        )
    return AciWebservice.deploy_configuration(**common)


def _deploy_v1(
    settings: Settings,
    azure: AzureSettings,
    models: ModelVersions,
    options: DeployOptions,
    workspace: Any,
) -> str:
    from azureml.core import Model, Webservice
    from azureml.exceptions import WebserviceException

    name = endpoint_name(models.location, options.endpoint_prefix)
    where = f"AKS cluster {options.aks_cluster}" if options.aks_cluster else "ACI"
    try:
        existing = Webservice(workspace, name)
    except WebserviceException as error:
        if "not found" not in str(error).lower():
            raise
        existing = None
    if (
        existing is not None
        and (existing.tags or {}).get("classifier") == models.classifier
        and (existing.tags or {}).get("prednet") == models.prednet
        and str(existing.state).lower() == "healthy"
    ):
        return (
            f"azureml-v1: web service {name} ({where}) already serves {models.classifier} "
            f"({models.prednet}): unchanged; {existing.scoring_uri}"
        )
    variables = scoring_environment_variables(settings, models, workspace.get_mlflow_tracking_uri())
    target = _aks_target(workspace, options.aks_cluster) if options.aks_cluster else None
    service = Model.deploy(
        workspace,
        name,
        [
            Model(workspace, name=models.classifier_name, version=models.classifier_version),
            Model(workspace, name=models.prednet_name, version=models.prednet_version),
        ],
        inference_config=inference_config_v1(azure, variables),
        deployment_config=deployment_config_v1(models, options),
        deployment_target=target,
        overwrite=True,
    )
    service.wait_for_deployment(show_output=False)
    state = str(service.state)
    if state.lower() != "healthy":
        raise AzureServiceError(
            f"Azure ML: web service {name} is {state} after deploying {models.classifier}: "
            f"{_one_line(service.error) if getattr(service, 'error', None) else 'no error'}; "
            f"see `az ml service get-logs --name {name}` (v1 CLI) or service.get_logs()"
        )
    return (
        f"azureml-v1: web service {name} ({where}) {'updated' if existing else 'created'}: "
        f"serves {models.classifier} ({models.prednet}); {service.scoring_uri}"
    )


def _aks_target(workspace: Any, cluster: str) -> Any:
    from azureml.core.compute import AksCompute, ComputeTarget
    from azureml.exceptions import ComputeTargetException

    try:
        target = ComputeTarget(workspace=workspace, name=cluster)
    except ComputeTargetException:
        raise SettingsError(
            f"{AKS_CLUSTER_ENV}={cluster!r}: no such compute in workspace "
            f"{workspace.name!r} (attach the AKS cluster first, or unset it to use ACI)"
        ) from None
    if not isinstance(target, AksCompute):
        raise SettingsError(f"{AKS_CLUSTER_ENV}={cluster!r} is a {type(target).__name__}, not AKS")
    return target


# ---------------------------------------------------------------- the entry points


def deploy_models(
    settings: Settings,
    azure: AzureSettings,
    location: str,
    versions: Mapping[str, str],
    target: str,
    *,
    client: Any = None,
    workspace: Any = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """Deploy ``versions`` (``{"classifier": "anomaly-classifier-x/3", "prednet":
    "prednet-x/2"}``) of ``location`` to ``target`` (``azureml-v2`` or ``azureml-v1``); one
    line saying what now serves it, and where. Idempotent.

    ``client`` (an MLClient) or ``workspace`` (an azureml Workspace) are made from the
    settings when not given (tests pass mocked ones). Missing workspace settings are one
    :class:`SettingsError`; a service error is one :class:`AzureServiceError` line.
    """
    _check_target(target)
    models = model_versions(location, versions)
    options = DeployOptions.from_env(environ)
    azure.require_workspace()
    if target == "azureml-v2":
        from ml_service.azure.v2.backend import connect_client

        with _v2_errors(azure):
            ml_client = client if client is not None else connect_client(azure)
            return _service(lambda: _deploy_v2(settings, azure, models, options, ml_client))
    from ml_service.azure.v1.service import connect_workspace

    ws = workspace if workspace is not None else connect_workspace(azure)
    with _v1_errors():
        return _deploy_v1(settings, azure, models, options, ws)


def describe_deployment(
    settings: Settings,
    azure: AzureSettings,
    location: str,
    versions: Mapping[str, str],
    target: str,
    environ: Mapping[str, str] | None = None,
) -> str:
    """What :func:`deploy_models` would create, built with the real SDK classes offline (no
    workspace, no settings needed) and rendered as text."""
    _check_target(target)
    models = model_versions(location, versions)
    options = DeployOptions.from_env(environ)
    name = endpoint_name(location, options.endpoint_prefix)
    lines = [
        f"=== {target}: {models.classifier} with {models.prednet} "
        "(dry run: nothing was sent to Azure)",
    ]
    if target == "azureml-v2":
        endpoint = build_endpoint(location, options)
        deployment = build_deployment(
            settings, azure, models, SLOTS[0], TRACKING_URI_OFFLINE, options
        )
        lines += [
            f"endpoint {name}: key auth, system-assigned identity (it reads the registry: give "
            "it AzureML Data Scientist on the workspace)",
            f"deployment: the idle slot of {'/'.join(SLOTS)} ({SLOTS[0]} shown), "
            f"{options.instance_type} x{INSTANCE_COUNT}; traffic moves to it, 100%, once it is "
            "provisioned; the previous slot is then "
            + ("kept at 0%" if options.keep_previous else "deleted"),
            f"scoring script: {SCORING_SCRIPT} in {SOURCE_DIR.name}/ (less .amlignore)",
            "",
            "--- endpoint",
            _dump(endpoint).rstrip(),
            "",
            f"--- deployment {SLOTS[0]}",
            _dump(deployment).rstrip(),
        ]
        return "\n".join(lines) + "\n"
    variables = scoring_environment_variables(settings, models, TRACKING_URI_OFFLINE)
    inference = inference_config_v1(azure, variables)
    config = deployment_config_v1(models, options)
    environment = inference.environment
    kind = f"AKS cluster {options.aks_cluster}" if options.aks_cluster else "ACI"
    lines += [
        f"web service {name} on {kind}: {config.cpu_cores} CPU, {config.memory_gb} GB, "
        f"key auth {config.auth_enabled}, App Insights {config.enable_app_insights}, "
        "replaced in place (overwrite)",
        f"models (mounted at AZUREML_MODEL_DIR): {models.classifier}, {models.prednet}",
        f"entry script: {inference.entry_script} in {inference.source_directory}",
        f"environment {environment.name}: {environment.docker.base_image} + "
        f"{CONDA_FILE.relative_to(SOURCE_DIR)} + {' + '.join(SERVING_PACKAGES)}",
        "environment variables:",
        *(f"  {k}={v}" for k, v in sorted(environment.environment_variables.items())),
        "tags: " + ", ".join(f"{k}={v}" for k, v in sorted(config.tags.items())),
    ]
    return "\n".join(lines) + "\n"


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"deploy target {target!r}: use one of {', '.join(TARGETS)}")


def _dump(entity: Any) -> str:
    """The entity's YAML as the SDK writes it (an endpoint's ``dump`` only returns a dict)."""
    stream = io.StringIO()
    result = entity.dump(stream)
    if stream.getvalue():
        return stream.getvalue()
    return yaml.safe_dump(json.loads(json.dumps(result)), sort_keys=False)


@contextmanager
def _v2_errors(azure: AzureSettings) -> Iterator[None]:
    """A credential failure as one line that says how to sign in (as the v2 backend does)."""
    from azure.core.exceptions import ClientAuthenticationError

    from ml_service.azure.v2.backend import AuthError, auth_hint

    try:
        yield
    except ClientAuthenticationError as error:
        raise AuthError(auth_hint(azure, error)) from None
    except AzureServiceError as error:
        cause = error.__cause__
        if isinstance(cause, ClientAuthenticationError):
            raise AuthError(auth_hint(azure, cause)) from None
        raise


@contextmanager
def _v1_errors() -> Iterator[None]:
    """An azureml-core error as one line: its ``Message:`` line, not the banner before it."""
    from ml_service.azure.v1.service import _first_line, _from_azure

    try:
        yield
    except (ValueError, KeyboardInterrupt, AzureServiceError):
        raise
    except Exception as error:
        if _from_azure(error):
            message = f"Azure ML: {type(error).__name__}: {_first_line(error)}"
            raise AzureServiceError(message) from error
        raise


def _one_line(error: Any) -> str:
    from ml_service.azure.v2.backend import one_line

    return one_line(error) if isinstance(error, BaseException) else " ".join(str(error).split())
