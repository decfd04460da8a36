"""Per-location pipeline state under ``<home>/locations/<slug>/state.json``.

Small JSON records that ``videoanom status`` can read without importing TensorFlow or
MLflow, written atomically so a crash never leaves a truncated record.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from videoanom.names import normalise_location

STATE_FILE = "state.json"


def state_path(home: Path, location: str) -> Path:
    return Path(home) / "locations" / normalise_location(location) / STATE_FILE


def write_state(home: Path, location: str, state: str, **details: Any) -> dict[str, Any]:
    """Record ``state`` (running, succeeded, failed) and details for a location."""
    path = state_path(home, location)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "location": location,
        "state": state,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **details,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    tmp.replace(path)
    return record


def read_state(home: Path, location: str) -> dict[str, Any]:
    """The recorded state of one location, or an empty dict if none (or unreadable)."""
    try:
        return json.loads(state_path(home, location).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def read_states(home: Path) -> list[dict[str, Any]]:
    """Every recorded location state, sorted by location."""
    root = Path(home) / "locations"
    records = []
    for path in sorted(root.glob(f"*/{STATE_FILE}")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return sorted(records, key=lambda r: r.get("location", ""))
