"""The azure-ai-ml (v2) :class:`~ml_service.azure.backend.Backend`: what ``videoanom azure``
and the master step ask of the workspace, over an :class:`~azure.ai.ml.MLClient`.

Identity is :class:`~azure.identity.DefaultAzureCredential`: ``az login`` on a laptop, OIDC
federation (``AZURE_CLIENT_ID``/``AZURE_TENANT_ID``) in CI, the compute's managed identity
inside a job. No secret passes through the settings or a file.

In v2 there is no "published pipeline": a training pipeline is a pipeline job built and
submitted per location (its components and environment are registered by the SDK on
submission, by content, so an unchanged definition is reused), and the master runs from a
:class:`~azure.ai.ml.entities.JobSchedule` that holds its pipeline job.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from azure.ai.ml import MLClient
from azure.ai.ml.exceptions import MlException
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError

from ml_service.azure import spec as specs
from ml_service.azure.commands import AzureServiceError
from ml_service.azure.spec import (
    BASE_IMAGE,
    PRIMARY_METRIC,
    SOURCE_DIR,
    master_spec,
    search_budget,
)
from ml_service.azure.submit import Submission, is_active
from ml_service.azure.v2 import build
from ml_service.util.env_variables import AzureSettings, Settings, SettingsError

# How many of the workspace's newest jobs ``status`` looks through.
STATUS_SCAN_LIMIT = 200


class AuthError(SettingsError):
    """Azure refused (or could not find) a credential: the message says how to get one."""


def auth_hint(azure: AzureSettings, error: BaseException) -> str:
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return (
        f"cannot authenticate to Azure ML workspace {azure.workspace_name!r}: sign in with "
        "`az login` (locally), set up OIDC federation with AZURE_CLIENT_ID and "
        "AZURE_TENANT_ID (CI), or give the compute cluster a managed identity with access to "
        f"the workspace (inside a job) [{type(error).__name__}: {first}]"
    )


def one_line(error: BaseException) -> str:
    """An SDK error in one line; its validation errors (a JSON report) as ``path: message``."""
    text = str(error).strip()
    try:
        report = json.loads(text, strict=False)
        problems = [f"{e.get('path', '*')}: {e.get('message', '')}" for e in report["errors"]]
    except (ValueError, KeyError, TypeError, AttributeError):
        lines = [line for line in text.splitlines() if line.strip()]
        return lines[0] if lines else type(error).__name__
    return "; ".join(" ".join(p.split()) for p in problems)


def credential(in_job: bool = False) -> Any:
    """DefaultAzureCredential; inside a job it prefers the cluster's managed identity
    (``DEFAULT_IDENTITY_CLIENT_ID`` names a user-assigned one; none = system-assigned)."""
    from azure.identity import DefaultAzureCredential

    if in_job:
        client_id = os.environ.get("DEFAULT_IDENTITY_CLIENT_ID") or None
        return DefaultAzureCredential(managed_identity_client_id=client_id)
    return DefaultAzureCredential()


def connect_client(azure: AzureSettings, in_job: bool = False) -> MLClient:
    """An MLClient for the workspace the settings name (no request is made yet)."""
    azure.require_workspace()
    return MLClient(
        credential(in_job),
        subscription_id=azure.subscription_id,
        resource_group_name=azure.resource_group,
        workspace_name=azure.workspace_name,
    )


class V2Backend:
    """:class:`~ml_service.azure.backend.Backend` over azure-ai-ml; ``client=None`` = offline."""

    sdk = "v2"

    def __init__(
        self, settings: Settings, azure: AzureSettings, client: MLClient | None = None
    ) -> None:
        self.settings = settings
        self.azure = azure
        self.client = client

    # --- offline ----------------------------------------------------------------------------

    def describe(self) -> str:
        """Build, validate and dump everything ``publish``/``schedule``/``submit`` send."""
        azure = self.azure
        lines = [
            "azure-ai-ml (v2): built and validated offline",
            f"environment {azure.environment_name}: {BASE_IMAGE} + {_relative(specs.CONDA_FILE)}",
        ]
        for cluster in build.clusters(azure):
            lines.append(
                f"cluster {cluster.name}: {cluster.size}, {cluster.min_instances}-"
                f"{cluster.max_instances} nodes, {cluster.tier}, scale down after "
                f"{cluster.idle_time_before_scale_down} s idle"
            )
        components = build.training_components(self.settings, azure, build.EXAMPLE_LOCATION)
        components.append((master_spec(), build.master_component(self.settings, azure)))
        for spec, component in components:
            lines.append(
                f"component {component.component.name} ({spec.compute}): {component.command}"
            )
        total, concurrent = search_budget(self.settings, azure)
        policy = build.early_termination(azure)
        lines.append(
            f"sweep of train: {azure.search_sampling} sampling, {total} trials "
            f"({concurrent} at once), minimize {PRIMARY_METRIC}, early termination "
            f"{'bandit slack ' + azure.bandit_slack_factor if policy else 'none'}; the best "
            "trial's trained_model goes to register_prednet"
        )
        training = build.validate(
            build.training_pipeline_job(self.settings, azure, build.EXAMPLE_LOCATION)
        )
        schedule = build.validate(build.master_schedule(self.settings, azure))
        lines += [
            "",
            f"--- training pipeline job for location {build.EXAMPLE_LOCATION!r} "
            f"(experiment {azure.training_experiment})",
            build.to_yaml(training).rstrip(),
            "",
            f"--- master schedule {schedule.name}: every {azure.polling_interval_minutes} "
            "minutes (v2 has no datastore-change trigger)",
            build.to_yaml(schedule).rstrip(),
        ]
        return "\n".join(lines) + "\n"

    # --- the workspace ----------------------------------------------------------------------

    def publish(self) -> list[str]:
        """Environment, clusters (created if missing), the step components and the master
        component; each create_or_update is a no-op when nothing changed."""
        client = self._client()
        lines: list[str] = []
        with self._service():
            env = client.environments.create_or_update(build.job_environment_asset(self.azure))
            lines.append(f"environment {env.name}:{env.version}")
            for cluster in build.clusters(self.azure):
                lines.append(self._ensure_cluster(cluster))
            for component in build.shared_components(self.settings, self.azure):
                registered = client.components.create_or_update(
                    component.component, skip_if_no_change=True
                )
                lines.append(f"component {registered.name}:{registered.version}")
        master = build.validate(build.master_pipeline_job(self.settings, self.azure))
        lines.append(
            f"master pipeline {self.azure.master_pipeline_name} ({', '.join(master.jobs)}): "
            f"validated; `videoanom azure schedule` runs it every "
            f"{self.azure.polling_interval_minutes} minutes as {build.schedule_name(self.azure)}"
        )
        return lines

    def _ensure_cluster(self, cluster: Any) -> str:
        client = self._client()
        try:
            existing = client.compute.get(cluster.name)
        except ResourceNotFoundError:
            created = client.compute.begin_create_or_update(cluster).result()
            return f"cluster {created.name}: created ({cluster.size}, {cluster.tier})"
        size = getattr(existing, "size", "")
        note = (
            ""
            if not size or size.lower() == cluster.size.lower()
            else (f"; its size {size} differs from {cluster.size}: delete it to resize")
        )
        return f"cluster {existing.name}: exists{note}"

    def schedule(self) -> str:
        """Create or replace the master's schedule (same name: the new one replaces it)."""
        client = self._client()
        schedule = build.validate(build.master_schedule(self.settings, self.azure))
        with self._service():
            self._require_clusters(self.azure.cpu_cluster)
            created = client.schedules.begin_create_or_update(schedule).result()
        return (
            f"schedule {created.name}: {self.azure.master_pipeline_name} every "
            f"{self.azure.polling_interval_minutes} minutes"
        )

    def submit(self, location: str, init_from: str = "") -> Submission:
        """Submit the location's training pipeline job (its environment and components are
        registered by the SDK with it; the clusters come from ``publish``)."""
        client = self._client()
        job = build.validate(
            build.training_pipeline_job(self.settings, self.azure, location, init_from)
        )
        with self._service():
            self._require_clusters(self.azure.cpu_cluster, self.azure.gpu_cluster)
            created = client.jobs.create_or_update(
                job,
                experiment_name=self.azure.training_experiment,
                tags=build.training_tags(location),
            )
        return Submission(
            location=location,
            pipeline_name=self.azure.training_pipeline_name(location),
            run_id=created.name,
            url=created.studio_url or "",
        )

    def submit_master(self) -> Submission:
        """Run the master pipeline once now (the schedule runs the same job)."""
        client = self._client()
        job = build.validate(build.master_pipeline_job(self.settings, self.azure))
        with self._service():
            self._require_clusters(self.azure.cpu_cluster)
            created = client.jobs.create_or_update(
                job, experiment_name=self.azure.master_experiment, tags=build.master_tags()
            )
        return Submission(
            location="",
            pipeline_name=self.azure.master_pipeline_name,
            run_id=created.name,
            url=created.studio_url or "",
        )

    def run_status(self, run_id: str) -> str:
        """The job's status (e.g. Running, Completed, Failed, Canceled)."""
        client = self._client()
        with self._service():
            return str(client.jobs.get(run_id).status)

    def active_run(self, location: str) -> str | None:
        """The newest unfinished training job of ``location`` among the recent jobs.

        The jobs API has no tag filter, so this scans the newest STATUS_SCAN_LIMIT jobs.
        """
        client = self._client()
        with self._service():
            for job in itertools.islice(client.jobs.list(), STATUS_SCAN_LIMIT):
                if job is None or getattr(job, "experiment_name", None) != (
                    self.azure.training_experiment
                ):
                    continue
                if (job.tags or {}).get("location") == location and is_active(str(job.status)):
                    return str(job.name)
        return None

    def status(self) -> list[dict[str, Any]]:
        """The newest training and master jobs, as the service lists them (newest first)."""
        client = self._client()
        experiments = {self.azure.training_experiment, self.azure.master_experiment}
        rows: list[dict[str, Any]] = []
        with self._service():
            for job in itertools.islice(client.jobs.list(), STATUS_SCAN_LIMIT):
                if job is None or getattr(job, "experiment_name", None) not in experiments:
                    continue
                tags = job.tags or {}
                created = getattr(job.creation_context, "created_at", None)
                rows.append(
                    {
                        "name": job.display_name or job.name,
                        "location": tags.get("location", ""),
                        "run_id": job.name,
                        "status": job.status,
                        "started": created.isoformat() if created else "",
                    }
                )
        return rows

    # --- helpers ----------------------------------------------------------------------------

    def _client(self) -> MLClient:
        if self.client is None:
            raise SettingsError(
                "this v2 backend was built offline (dry run): it cannot talk to the workspace"
            )
        return self.client

    def _require_clusters(self, *names: str) -> None:
        """Fail clearly, before submitting, when a cluster a job runs on does not exist (the
        SDK would report it inside a multi-line validation report)."""
        for name in dict.fromkeys(names):
            try:
                self._client().compute.get(name)
            except ResourceNotFoundError:
                raise SettingsError(
                    f"compute cluster {name!r} does not exist in workspace "
                    f"{self.azure.workspace_name!r}: run `videoanom azure publish` (or set "
                    "AML_CPU_CLUSTER / AML_GPU_CLUSTER to existing clusters)"
                ) from None

    @contextmanager
    def _service(self) -> Iterator[None]:
        """A credential failure becomes one line that says what to do; an SDK error (often a
        multi-line validation report) one line that says what was rejected."""
        try:
            yield
        except ClientAuthenticationError as error:
            raise AuthError(auth_hint(self.azure, error)) from None
        except MlException as error:
            raise AzureServiceError(f"Azure ML: {one_line(error)}") from error


def make_backend(settings: Settings, azure: AzureSettings, connect: bool) -> V2Backend:
    """The v2 backend; ``connect=False`` builds offline (``describe`` only)."""
    return V2Backend(settings, azure, connect_client(azure) if connect else None)


def backend_in_job(settings: Settings, azure: AzureSettings) -> V2Backend:
    """The backend inside an Azure ML job: the compute's managed identity, and the workspace
    coordinates from the AZURE_*/AML_* variables every step carries."""
    return V2Backend(settings, azure, connect_client(azure, in_job=True))


def _relative(path: Any) -> str:
    try:
        return str(path.relative_to(SOURCE_DIR))
    except ValueError:
        return str(path)
