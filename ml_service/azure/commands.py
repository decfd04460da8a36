"""``videoanom azure publish | schedule | submit | status``: thin commands over a Backend.

Every command builds the same pipelines from the same definition; only ``--dry-run``
works without a workspace (and without either SDK's service), which is what CI and a
reviewer use to see what a merge would publish.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from typing import Any

from ml_service.azure.backend import Backend, backend_for
from ml_service.util.env_variables import SDK_VERSIONS, AzureSettings, Settings

logger = logging.getLogger(__name__)

BackendFactory = Callable[[Settings, AzureSettings, bool], Backend]


class AzureServiceError(RuntimeError):
    """The workspace answered with an error (or could not be reached); the message says which."""


def publish(
    settings: Settings,
    azure: AzureSettings,
    dry_run: bool,
    sdk: str | None = None,
    factory: BackendFactory = backend_for,
) -> str:
    """Publish the environment, clusters and master pipeline, or (dry run) describe them.

    A dry run with no ``sdk`` describes both SDKs' pipelines.
    """
    if dry_run:
        chosen = (sdk,) if sdk else SDK_VERSIONS
        parts = []
        for name in chosen:
            backend = factory(settings, dataclasses.replace(azure, sdk=name), False)
            parts.append(f"=== AML_SDK={name} (dry run: nothing was sent to Azure)\n")
            parts.append(backend.describe().rstrip() + "\n")
        return "\n".join(parts)
    backend = _connected(settings, azure, sdk, factory)
    return "\n".join(_service(backend.publish))


def schedule(
    settings: Settings, azure: AzureSettings, sdk: str | None = None, factory=backend_for
) -> str:
    return _service(_connected(settings, azure, sdk, factory).schedule)


def submit(
    settings: Settings,
    azure: AzureSettings,
    location: str | None,
    init_from: str = "",
    sdk: str | None = None,
    factory: BackendFactory = backend_for,
) -> str:
    """Submit one location's training pipeline, or (no location) the master pipeline."""
    backend = _connected(settings, azure, sdk, factory)
    if location:
        from videoanom.names import validate_location

        validate_location(location)
        submission = _service(lambda: backend.submit(location, init_from))
    else:
        submission = _service(backend.submit_master)
    lines = [submission.outcome]
    if submission.url:
        lines.append(submission.url)
    return "\n".join(lines)


def status(
    settings: Settings,
    azure: AzureSettings,
    as_json: bool = False,
    sdk: str | None = None,
    factory: BackendFactory = backend_for,
) -> str:
    rows = _service(_connected(settings, azure, sdk, factory).status)
    if as_json:
        return json.dumps(rows, indent=2, default=str)
    return render_runs(rows)


def render_runs(rows: list[dict[str, Any]]) -> str:
    """A plain table of runs, newest first as the service returned them."""
    columns = ("name", "location", "status", "started", "run_id")
    if not rows:
        return "no videoanom runs in the workspace yet"
    table = [columns] + [tuple(str(r.get(c, "") or "") for c in columns) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    )


def _connected(
    settings: Settings, azure: AzureSettings, sdk: str | None, factory: BackendFactory
) -> Backend:
    if sdk:
        azure = dataclasses.replace(azure, sdk=sdk)
    azure.require_workspace()
    return _service(lambda: factory(settings, azure, True))


def _service(call: Callable[[], Any]) -> Any:
    """Run a call that talks to Azure; an SDK's error becomes one readable line."""
    try:
        return call()
    except (ValueError, KeyboardInterrupt, AzureServiceError):
        raise
    except Exception as error:
        module = type(error).__module__ or ""
        if module.split(".")[0] in ("azure", "azureml", "msrest", "msal", "requests", "urllib3"):
            message = f"Azure ML: {type(error).__name__}: {_first_line(error)}"
            raise AzureServiceError(message) from error
        raise


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else repr(error)
