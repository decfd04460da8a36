"""What ``videoanom status`` shows: every location, its readiness, pipeline and models.

Joins three sources: the datastore listing (which locations exist and whether their upload
looks complete), the local pipeline records under ``VIDEOANOM_HOME`` (pipeline id, per-step
state, last error) and the model registry (latest versions). It never imports TensorFlow,
and MLflow only when a registry exists.
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from typing import Any

from ml_service.master.claims import pid_alive
from ml_service.master.readiness import DEFAULT_QUIET_SECONDS, check_ready, load_seen
from ml_service.model_index import latest_versions
from ml_service.state import read_states
from ml_service.util.env_variables import Settings
from videoanom.names import classifier_model_name, prednet_model_name

logger = logging.getLogger(__name__)

COLUMNS = (
    "location",
    "ready",
    "state",
    "steps",
    "pipeline",
    "prednet",
    "classifier",
    "scorer",
    "auc",
    "unsup_auc",
    "framediff_auc",
    "error",
)
ERROR_WIDTH = 60


def location_status(
    settings: Settings, quiet_seconds: float = DEFAULT_QUIET_SECONDS
) -> list[dict[str, Any]]:
    """One detailed record per location in the datastore or the local records (``--json``)."""
    states = {s["location"]: s for s in read_states(settings.home)}
    datastore, listed = None, set()
    try:
        from videoanom.data.datastore import open_datastore

        datastore = open_datastore(
            settings.datastore, cache_dir=Path(settings.home) / "cache" / "blob"
        )
        listed = set(datastore.list_locations())
    except ValueError as error:
        logger.warning("cannot list the datastore: %s", error)
    registry = latest_versions(settings.tracking_uri)
    seen = load_seen(settings.home)
    records = []
    for location in sorted(set(states) | listed):
        state = states.get(location, {})
        if location not in listed:
            ready = {"ready": False, "reason": "not in the datastore"}
        elif state.get("state") == "succeeded":
            ready = {"ready": True, "reason": "trained"}
        else:
            ready = _readiness(datastore, location, seen.get(location), quiet_seconds)
        records.append(
            {
                "location": location,
                "in_datastore": location in listed,
                "ready": ready["ready"],
                "ready_reason": ready["reason"],
                "state": _effective_state(state),
                "pipeline_id": state.get("pipeline_id"),
                "steps": state.get("steps", {}),
                "attempts": state.get("attempts", 0),
                "models": {
                    "prednet": registry.get(prednet_model_name(location)),
                    "classifier": registry.get(classifier_model_name(location)),
                },
                "scorer": state.get("scorer"),
                "metrics": state.get("metrics", {}),
                "error": _error(state),
                "report": state.get("report", {}),
                "updated": state.get("updated"),
            }
        )
    for name, why in sorted(getattr(datastore, "refused", {}).items()):
        records.append(_refused_record(name, why))
    return records


def _refused_record(name: str, why: str) -> dict[str, Any]:
    """A top-level name the master will never use (it could escape a folder)."""
    return {
        "location": name,
        "in_datastore": True,
        "ready": False,
        "ready_reason": "unsafe name",
        "state": "refused",
        "pipeline_id": None,
        "steps": {},
        "attempts": 0,
        "models": {"prednet": None, "classifier": None},
        "scorer": None,
        "metrics": {},
        "error": {"step": None, "reason": why, "log": None},
        "report": {},
        "updated": None,
    }


def location_rows(
    settings: Settings, quiet_seconds: float = DEFAULT_QUIET_SECONDS
) -> list[dict[str, str]]:
    """The table's rows: :func:`location_status` flattened to short strings."""
    return [_row(record) for record in location_status(settings, quiet_seconds)]


def _row(record: dict[str, Any]) -> dict[str, str]:
    metrics = record["metrics"]
    error = record["error"] or {}
    error_text = f"{error.get('step') or ''}: {error.get('reason', '')}".lstrip(": ")
    if len(error_text) > ERROR_WIDTH:
        error_text = error_text[: ERROR_WIDTH - 3] + "..."
    name = record["location"]
    return {
        "location": ascii(name) if record["state"] == "refused" else name,
        "ready": "yes" if record["ready"] else f"no ({record['ready_reason']})",
        "state": record["state"],
        "steps": _steps_summary(record["steps"]),
        "pipeline": record["pipeline_id"] or "-",
        "prednet": _version(record["models"]["prednet"]),
        "classifier": _version(record["models"]["classifier"]),
        "scorer": record["scorer"] or "-",
        "auc": _fmt(metrics.get("auc")),
        "unsup_auc": _fmt(metrics.get("unsupervised_auc")),
        "framediff_auc": _fmt(metrics.get("baseline_auc")),
        "error": error_text or "-",
    }


def _steps_summary(steps: dict[str, dict[str, Any]]) -> str:
    """``6/6``, ``2/6 train running`` or ``3/6 batch_scoring failed``: done out of all."""
    if not steps:
        return "-"
    done = sum(1 for s in steps.values() if s.get("state") in ("succeeded", "reused"))
    summary = f"{done}/{len(steps)}"
    for name, step in steps.items():
        if step.get("state") in ("running", "failed"):
            return f"{summary} {name} {step['state']}"
    return summary


def _effective_state(state: dict[str, Any]) -> str:
    """The recorded state, except a "running" record whose process on this host is gone."""
    status = state.get("state", "new")
    on_this_host = state.get("host") == socket.gethostname()
    if status == "running" and on_this_host and not pid_alive(state.get("pid")):
        return "interrupted"
    return status


def _error(state: dict[str, Any]) -> dict[str, Any] | None:
    if state.get("state") != "failed":
        return None
    return {"step": state.get("step"), "reason": state.get("reason"), "log": state.get("log")}


def _readiness(
    datastore: Any, location: str, last_seen: dict[str, Any] | None, quiet_seconds: float
) -> dict[str, Any]:
    """Judge readiness as the master would, from its last observation (read-only here)."""
    try:
        files = datastore.list_files(location)
    except (OSError, ValueError) as error:
        return {"ready": False, "reason": f"cannot list: {error}"}
    verdict, _ = check_ready(files, time.time(), quiet_seconds, last_seen)
    return {"ready": verdict.ready, "reason": verdict.reason}


def _version(version: int | None) -> str:
    return f"v{version}" if version else "-"


def _fmt(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


def render_table(rows: list[dict[str, str]]) -> str:
    """A fixed-width text table of the rows."""
    if not rows:
        return "no locations found"
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS).rstrip()]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in COLUMNS).rstrip() for r in rows]
    return "\n".join(lines)
