"""The rows of ``videoanom status``: recorded pipeline state joined with the registry."""

from __future__ import annotations

import logging
from typing import Any

from ml_service.state import read_states
from ml_service.util.env_variables import Settings
from videoanom.names import classifier_model_name, prednet_model_name

logger = logging.getLogger(__name__)

COLUMNS = (
    "location",
    "state",
    "prednet",
    "classifier",
    "scorer",
    "val_mae",
    "copy_last_mae",
    "auc",
    "unsup_auc",
    "framediff_auc",
    "updated",
)


def location_rows(settings: Settings) -> list[dict[str, Any]]:
    """One row per location seen in the datastore or in the local state."""
    states = {s["location"]: s for s in read_states(settings.home)}
    locations = set(states)
    try:
        from videoanom.data.datastore import open_datastore

        locations |= set(open_datastore(settings.datastore).list_locations())
    except ValueError as error:
        logger.warning("cannot list the datastore: %s", error)
    registry = _registry_versions(settings)
    rows = []
    for location in sorted(locations):
        state = states.get(location, {})
        metrics = state.get("metrics", {})
        rows.append(
            {
                "location": location,
                "state": state.get("state", "new"),
                "prednet": registry.get(prednet_model_name(location), "-"),
                "classifier": registry.get(classifier_model_name(location), "-"),
                "scorer": state.get("scorer", "-"),
                "val_mae": _fmt(metrics.get("val_mae")),
                "copy_last_mae": _fmt(metrics.get("copy_last_mae")),
                "auc": _fmt(metrics.get("auc"), 3),
                "unsup_auc": _fmt(metrics.get("unsupervised_auc"), 3),
                "framediff_auc": _fmt(metrics.get("baseline_auc"), 3),
                "updated": state.get("updated", "-"),
            }
        )
    return rows


def _registry_versions(settings: Settings) -> dict[str, str]:
    """Latest version per registered model name ("v3"), or empty if no registry yet."""
    db = settings.tracking_uri.removeprefix("sqlite:///")
    if settings.tracking_uri.startswith("sqlite:///") and not _exists(db):
        return {}
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri)
    result = {}
    for model in client.search_registered_models(max_results=1000):
        versions = client.search_model_versions(f"name = '{model.name}'")
        if versions:
            result[model.name] = "v" + str(max(int(v.version) for v in versions))
    return result


def _exists(path: str) -> bool:
    from pathlib import Path

    return Path(path).is_file()


def _fmt(value: Any, digits: int = 5) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


def render_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width text table of the rows."""
    if not rows:
        return "no locations found"
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS).rstrip()]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in COLUMNS).rstrip() for r in rows]
    return "\n".join(lines)
