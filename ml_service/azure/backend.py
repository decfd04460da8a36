"""One interface over both Azure ML SDKs, chosen by ``AML_SDK`` (v1 default, or v2).

``videoanom azure ...`` and the master step only talk to a :class:`Backend`; the SDK
modules (:mod:`ml_service.azure.v1`, :mod:`ml_service.azure.v2`) implement it and are
imported only when chosen, so neither SDK is needed for anything else.
"""

from __future__ import annotations

from typing import Any, Protocol

from ml_service.azure.submit import Submission
from ml_service.util.env_variables import AzureSettings, Settings, SettingsError

SDK_EXTRAS = {"v1": "azure-v1", "v2": "azure-v2"}


class Backend(Protocol):
    """What the CLI and the master step need from an SDK."""

    sdk: str

    def describe(self) -> str:
        """The pipelines (and schedule) that ``publish`` would create, built offline."""
        ...

    def publish(self) -> list[str]:
        """Create or update the environment, clusters and master pipeline; idempotent.

        Returns one line per object published (name, version or id).
        """
        ...

    def schedule(self) -> str:
        """(Re)create the master's schedule, replacing an older one of the same name."""
        ...

    def submit(self, location: str, init_from: str = "") -> Submission:
        """Publish (idempotently) and submit one location's training pipeline."""
        ...

    def submit_master(self) -> Submission:
        """Run the master pipeline once now."""
        ...

    def run_status(self, run_id: str) -> str:
        """The service's status of one submitted run."""
        ...

    def active_run(self, location: str) -> str | None:
        """A training run of ``location`` that has not finished (see submit.Submitter)."""
        ...

    def status(self) -> list[dict[str, Any]]:
        """Recent training and master runs: name, location, run id, status, started."""
        ...


def backend_for(settings: Settings, azure: AzureSettings, connect: bool = True) -> Backend:
    """The chosen SDK's backend; ``connect=False`` builds offline (``--dry-run``)."""
    module = _sdk_module(azure.sdk)
    if connect:
        azure.require_workspace()
    return module.make_backend(settings, azure, connect=connect)


def backend_in_job(settings: Settings, azure: AzureSettings) -> Backend:
    """The backend inside an Azure ML job, authenticated as the job (master step)."""
    return _sdk_module(azure.sdk).backend_in_job(settings, azure)


def _sdk_module(sdk: str) -> Any:
    if sdk not in SDK_EXTRAS:
        raise SettingsError(f"AML_SDK={sdk!r}: use v1 or v2")
    try:
        if sdk == "v1":
            from ml_service.azure import v1 as module
        else:
            from ml_service.azure import v2 as module
    except ImportError as error:
        raise SettingsError(
            f"AML_SDK={sdk} needs the {SDK_EXTRAS[sdk]} extra: "
            f"pip install -e '.[{SDK_EXTRAS[sdk]}]' ({error})"
        ) from None
    return module
