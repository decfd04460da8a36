"""The v1 backend's half that talks to the workspace: sign-in, clusters, publish, submit.

Publishing is idempotent. A published pipeline's version is the fingerprint of what it runs
(:meth:`BuiltPipeline.fingerprint`: the built steps, the job environment and the files of
the snapshot), so publishing the same definition twice reuses the active copy, and publishing
a changed one disables every older active copy of the same name and their schedules (the
master's datastore trigger is then re-created for the new copy): re-publishing never stacks
duplicates and never leaves two triggers.

Sign-in: ``AZURE_CLIENT_ID`` with ``MSI_ENDPOINT`` or ``IDENTITY_ENDPOINT`` (a managed
identity) uses ``MsiAuthentication``; anything else uses the Azure CLI's login (``az login``
on a workstation, ``azure/login`` with OIDC in CI). azureml-core's own
``AzureCliAuthentication`` imports the azure-cli package into this Python environment
(measured: it refuses without it), so the CLI login is read through
``azure.identity.AzureCliCredential`` (which runs the ``az`` executable) behind azureml-core's
``TokenAuthentication``. No secret is read from or written to a file.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from azureml.core import Datastore, Experiment, Run, Workspace
from azureml.core.authentication import MsiAuthentication, TokenAuthentication
from azureml.core.compute import AmlCompute, ComputeTarget
from azureml.exceptions import AuthenticationException, ComputeTargetException
from azureml.pipeline.core import PublishedPipeline, Schedule

from ml_service.azure.submit import Submission, is_active
from ml_service.azure.v1.builder import (
    ANY_LOCATION,
    BuildContext,
    BuiltPipeline,
    build_master,
    build_training,
    check_paths,
    describe_pipeline,
    make_environment,
    offline_datastore,
)
from ml_service.util.env_variables import AzureSettings, Settings, SettingsError

logger = logging.getLogger(__name__)

# Idle nodes scale down after this long (the clusters scale to AML_*_MIN_NODES).
IDLE_SECONDS_BEFORE_SCALEDOWN = 1200
# How many recent runs of each experiment ``status`` lists.
RECENT_RUNS = 20
TRAINING_TAG = {"videoanom": "training"}
MASTER_TAG = {"videoanom": "master"}
SIGN_IN_HELP = (
    "run `az login` (or, in CI, sign in with OIDC first: azure/login with AZURE_CLIENT_ID, "
    "AZURE_TENANT_ID and AZURE_SUBSCRIPTION_ID)"
)


# ---------------------------------------------------------------- workspace


class CliToken:
    """Tokens from the Azure CLI's login, kept until five minutes before they expire."""

    def __init__(self, credential: Any = None) -> None:
        if credential is None:
            from azure.identity import AzureCliCredential

            credential = AzureCliCredential()
        self._credential = credential
        self._tokens: dict[str, Any] = {}

    def __call__(self, resource: str) -> str:
        token = self._tokens.get(resource)
        if token is None or token.expires_on - 300 < time.time():
            token = self._credential.get_token(resource.rstrip("/") + "/.default")
            self._tokens[resource] = token
        return token.token


def authentication(environ: Mapping[str, str] | None = None) -> tuple[Any, str]:
    """(azureml authentication, how it signs in) for this process."""
    environ = os.environ if environ is None else environ
    client_id = environ.get("AZURE_CLIENT_ID", "")
    if client_id and (environ.get("MSI_ENDPOINT") or environ.get("IDENTITY_ENDPOINT")):
        return (
            MsiAuthentication(identity_config={"client_id": client_id}),
            f"managed identity {client_id}",
        )
    return TokenAuthentication(CliToken()), "Azure CLI login"


def connect_workspace(azure: AzureSettings, environ: Mapping[str, str] | None = None) -> Any:
    """The workspace named by the settings, or one clear SettingsError saying what to do."""
    azure.require_workspace()
    auth, how = authentication(environ)
    where = (
        f"Azure ML workspace {azure.workspace_name} (resource group {azure.resource_group}, "
        f"subscription {azure.subscription_id})"
    )
    try:
        return Workspace(
            subscription_id=azure.subscription_id,
            resource_group=azure.resource_group,
            workspace_name=azure.workspace_name,
            auth=auth,
        )
    except Exception as error:
        if _is_sign_in_error(error):
            raise SettingsError(
                f"cannot sign in to {where} with the {how}: {_first_line(error)}; {SIGN_IN_HELP}"
            ) from None
        if _is_network_error(error):
            raise SettingsError(
                f"cannot reach {where}: {_first_line(error)}; check this machine's network "
                "access to Azure Resource Manager (management.azure.com)"
            ) from None
        if _from_azure(error):
            raise SettingsError(
                f"cannot open {where} with the {how}: {_first_line(error)}; check "
                "AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP and AML_WORKSPACE_NAME, and that "
                "this identity may read the workspace"
            ) from None
        raise


def _is_sign_in_error(error: BaseException) -> bool:
    from azure.core.exceptions import ClientAuthenticationError

    return isinstance(error, (AuthenticationException, ClientAuthenticationError))


def _is_network_error(error: BaseException) -> bool:
    from msrest.exceptions import ClientRequestError
    from requests.exceptions import ConnectionError as RequestsConnectionError

    return isinstance(error, (ClientRequestError, RequestsConnectionError, ConnectionError))


def _from_azure(error: BaseException) -> bool:
    module = type(error).__module__ or ""
    return module.split(".")[0] in ("azure", "azureml", "msrest", "adal", "msal", "requests")


def _first_line(error: BaseException) -> str:
    """The message of an SDK error on one line (azureml's put it after ``Message:``)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("Message:"):
            return line[len("Message:") :].strip()
    return lines[0] if lines else type(error).__name__


# ---------------------------------------------------------------- the backend


class V1Backend:
    """The :class:`~ml_service.azure.backend.Backend` built with azureml-sdk (v1)."""

    sdk = "v1"

    def __init__(self, settings: Settings, azure: AzureSettings, workspace: Any = None) -> None:
        self.settings = settings
        self.azure = azure
        self.workspace = workspace
        self._context: BuildContext | None = None
        self._clusters_ready = False

    # ------------------------------------------------------------ building

    def context(self) -> BuildContext:
        """Settings, datastore and environment shared by every pipeline this backend builds."""
        if self._context is None:
            if self.workspace is None:
                datastore = offline_datastore(self.azure)
            else:
                datastore = self._workspace_datastore()
            self._context = BuildContext(
                self.settings, self.azure, datastore, make_environment(self.azure)
            )
        return self._context

    def training(self, location: str, init_from: str = "") -> BuiltPipeline:
        return build_training(self.context(), location, init_from)

    def master(self) -> BuiltPipeline:
        return build_master(self.context())

    @property
    def schedule_name(self) -> str:
        return f"{self.azure.master_pipeline_name}-schedule"

    def describe(self, location: str = ANY_LOCATION) -> str:
        """Both pipelines and the schedule as ``publish``/``submit`` would create them."""
        azure = self.azure
        context = self.context()
        environment = context.environment
        training = self.training(location)
        master = self.master()
        lines = [
            f"environment {environment.name}: {_conda_file()} on {environment.docker.base_image}",
            f"clusters: {azure.cpu_cluster} ({azure.cpu_vm_size}, {azure.cpu_min_nodes}-"
            f"{azure.cpu_max_nodes} nodes, {azure.vm_priority}), {azure.gpu_cluster} "
            f"({azure.gpu_vm_size}, {azure.gpu_min_nodes}-{azure.gpu_max_nodes} nodes, "
            f"{azure.vm_priority})",
            "",
        ]
        lines += describe_pipeline(
            training,
            f"training pipeline {training.name}: published and submitted per location to "
            f"experiment {azure.training_experiment}",
        )
        lines.append("")
        lines += describe_pipeline(
            master,
            f"master pipeline {master.name}: published by `publish`, experiment "
            f"{azure.master_experiment}",
        )
        lines += [
            "",
            f"schedule {self.schedule_name}: runs {master.name} when files under "
            f"{azure.datastore_name}:{azure.datastore_path} change, polled every "
            f"{azure.polling_interval_minutes} min",
            f"every step's environment variables: {', '.join(sorted(context.env_vars))}",
        ]
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------ the service

    def publish(self) -> list[str]:
        """Register the environment, create the clusters, publish the master pipeline."""
        workspace = self._require_workspace()
        check_paths(self.azure)
        environment = self.context().environment.register(workspace)
        lines = [f"environment {environment.name} version {environment.version}"]
        lines += self.ensure_clusters()
        published, published_lines, moved = self._publish(self.master())
        lines += published_lines
        if moved:
            lines.append(self._create_schedule(published.id))
        return lines

    def schedule(self) -> str:
        """(Re)create the master's datastore trigger for the current master pipeline."""
        self._require_workspace()
        check_paths(self.azure)
        published, _, _ = self._publish(self.master())
        return self._create_schedule(published.id)

    def submit(self, location: str, init_from: str = "") -> Submission:
        """Publish the location's pipeline (idempotently) and submit it."""
        workspace = self._require_workspace()
        self.ensure_clusters()
        built = self.training(location, init_from)
        published, _, _ = self._publish(built)
        tags = {**TRAINING_TAG, "location": location}
        run = published.submit(workspace, self.azure.training_experiment)
        run.set_tags(tags)
        logger.info("%s: submitted %s as run %s", location, built.name, run.id)
        return Submission(location, built.name, run.id, run.get_portal_url())

    def submit_master(self) -> Submission:
        workspace = self._require_workspace()
        self.ensure_clusters()
        built = self.master()
        published, _, _ = self._publish(built)
        run = published.submit(workspace, self.azure.master_experiment)
        run.set_tags(dict(MASTER_TAG))
        return Submission("", built.name, run.id, run.get_portal_url())

    def run_status(self, run_id: str) -> str:
        return Run.get(self._require_workspace(), run_id).get_status()

    def active_run(self, location: str) -> str | None:
        """The newest unfinished training run of ``location`` (runs are tagged on submit)."""
        workspace = self._require_workspace()
        experiment = Experiment(workspace=workspace, name=self.azure.training_experiment)
        runs = experiment.get_runs(tags={"location": location})
        for count, run in enumerate(runs):
            if count >= RECENT_RUNS:
                break
            if is_active(run.get_status()):
                return run.id
        return None

    def status(self) -> list[dict[str, Any]]:
        """Recent runs of the training and master experiments, newest first."""
        workspace = self._require_workspace()
        azure = self.azure
        rows: list[dict[str, Any]] = []
        for experiment_name in (azure.training_experiment, azure.master_experiment):
            experiment = Experiment(workspace=workspace, name=experiment_name)
            for count, run in enumerate(experiment.get_runs()):
                if count >= RECENT_RUNS:
                    break
                rows.append(self._row(experiment_name, run))
        return rows

    def _row(self, experiment_name: str, run: Any) -> dict[str, Any]:
        tags = run.get_tags() or {}
        location = tags.get("location", "")
        if experiment_name == self.azure.master_experiment:
            name = self.azure.master_pipeline_name
        else:
            name = self.azure.training_pipeline_name(location) if location else experiment_name
        details = run.get_details() or {}
        return {
            "name": name,
            "location": location,
            "run_id": run.id,
            "status": run.get_status(),
            "started": details.get("startTimeUtc", ""),
        }

    # ------------------------------------------------------------ pieces

    def ensure_clusters(self) -> list[str]:
        """The CPU and GPU clusters, created if missing and rescaled if their limits changed."""
        if self._clusters_ready:
            return []
        azure = self.azure
        lines = [
            self._cluster(
                azure.cpu_cluster, azure.cpu_vm_size, azure.cpu_min_nodes, azure.cpu_max_nodes
            ),
            self._cluster(
                azure.gpu_cluster, azure.gpu_vm_size, azure.gpu_min_nodes, azure.gpu_max_nodes
            ),
        ]
        self._clusters_ready = True
        return lines

    def _cluster(self, name: str, vm_size: str, min_nodes: int, max_nodes: int) -> str:
        workspace = self._require_workspace()
        try:
            target = ComputeTarget(workspace=workspace, name=name)
        except ComputeTargetException:
            config = AmlCompute.provisioning_configuration(
                vm_size=vm_size,
                vm_priority=self.azure.vm_priority,
                min_nodes=min_nodes,
                max_nodes=max_nodes,
                idle_seconds_before_scaledown=IDLE_SECONDS_BEFORE_SCALEDOWN,
            )
            target = ComputeTarget.create(workspace, name, config)
            target.wait_for_completion(show_output=False)
            return f"cluster {name}: created ({vm_size}, {min_nodes}-{max_nodes} nodes)"
        scale = getattr(target, "scale_settings", None)
        current = (
            getattr(scale, "minimum_node_count", None),
            getattr(scale, "maximum_node_count", None),
        )
        line = f"cluster {name}: exists"
        if scale is not None and current != (min_nodes, max_nodes):
            target.update(
                min_nodes=min_nodes,
                max_nodes=max_nodes,
                idle_seconds_before_scaledown=IDLE_SECONDS_BEFORE_SCALEDOWN,
            )
            line += f", rescaled {current[0]}-{current[1]} -> {min_nodes}-{max_nodes} nodes"
        size = getattr(target, "vm_size", None)
        if isinstance(size, str) and size.lower() != vm_size.lower():
            line += f" (its VM size {size} differs from {vm_size}: delete it to change that)"
        return line

    def _publish(self, built: BuiltPipeline) -> tuple[Any, list[str], bool]:
        """(active published pipeline, lines, whether a schedule was disabled with an old one).

        Reuses an active copy with the same fingerprint; otherwise publishes, then disables
        every other active copy of the name and their schedules.
        """
        workspace = self._require_workspace()
        version = built.fingerprint()
        same_name = [p for p in PublishedPipeline.list(workspace) if p.name == built.name]
        current = next((p for p in same_name if p.version == version), None)
        if current is None:
            current = built.pipeline(workspace).publish(
                name=built.name, description=built.description, version=version
            )
            lines = [f"pipeline {built.name}: published {current.id} (version {version})"]
            same_name = [p for p in PublishedPipeline.list(workspace) if p.name == built.name]
        else:
            lines = [f"pipeline {built.name}: unchanged, {current.id} (version {version})"]
        moved = False
        for old in same_name:
            if old.id == current.id:
                continue
            for schedule in Schedule.list(workspace, pipeline_id=old.id):
                if schedule.status == "Active":
                    schedule.disable()
                    moved = True
                    lines.append(f"schedule {schedule.name} ({schedule.id}): disabled")
            old.disable()
            lines.append(f"pipeline {built.name}: disabled older {old.id} (version {old.version})")
        return current, lines, moved

    def _create_schedule(self, pipeline_id: str) -> str:
        workspace = self._require_workspace()
        azure = self.azure
        datastore = self.context().datastore
        same_name = [
            s
            for s in Schedule.list(workspace)
            if s.name == self.schedule_name and s.status == "Active"
        ]
        wanted = (pipeline_id, datastore.name, azure.datastore_path, azure.polling_interval_minutes)
        keep = next(
            (
                s
                for s in same_name
                if (s.pipeline_id, s.datastore_name, s.path_on_datastore, s.polling_interval)
                == wanted
            ),
            None,
        )
        for schedule in same_name:
            if schedule is not keep:
                schedule.disable()
        if keep is not None:
            return f"schedule {keep.name}: unchanged ({keep.id})"
        created = Schedule.create(
            workspace,
            name=self.schedule_name,
            pipeline_id=pipeline_id,
            experiment_name=azure.master_experiment,
            datastore=datastore,
            path_on_datastore=azure.datastore_path,
            polling_interval=azure.polling_interval_minutes,
            description=f"runs {azure.master_pipeline_name} when a location's files change",
        )
        return (
            f"schedule {self.schedule_name}: {created.id} runs {azure.master_pipeline_name} "
            f"when {datastore.name}:{azure.datastore_path} changes (polled every "
            f"{azure.polling_interval_minutes} min)"
        )

    def _require_workspace(self) -> Any:
        if self.workspace is None:
            raise SettingsError("this backend was built without a workspace (a dry run)")
        return self.workspace

    def _workspace_datastore(self) -> Any:
        try:
            return Datastore.get(self.workspace, self.azure.datastore_name)
        except Exception as error:
            if not _from_azure(error):
                raise
            raise SettingsError(
                f"AML_DATASTORE_NAME={self.azure.datastore_name!r}: no such datastore in "
                f"workspace {self.azure.workspace_name} ({_first_line(error)})"
            ) from None


def _conda_file() -> str:
    from ml_service.azure import spec

    try:
        return str(spec.CONDA_FILE.relative_to(spec.SOURCE_DIR))
    except ValueError:
        return str(spec.CONDA_FILE)


# ---------------------------------------------------------------- entry points


def make_backend(
    settings: Settings,
    azure: AzureSettings,
    connect: bool = True,
    workspace_factory: Callable[[AzureSettings], Any] = connect_workspace,
) -> V1Backend:
    """The v1 backend; ``connect=False`` builds offline (``describe`` only)."""
    return V1Backend(settings, azure, workspace_factory(azure) if connect else None)


def backend_in_job(settings: Settings, azure: AzureSettings) -> V1Backend:
    """The backend inside an Azure ML job, signed in as the job (the master step)."""
    run = Run.get_context()
    experiment = getattr(run, "experiment", None)
    if experiment is None:
        raise SettingsError(
            "not inside an Azure ML job: the master step runs on Azure ML (locally, use "
            "`videoanom master`)"
        )
    return V1Backend(settings, azure, experiment.workspace)


__all__ = ["V1Backend", "backend_in_job", "connect_workspace", "make_backend"]
