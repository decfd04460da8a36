"""Is a location's upload complete enough to start training?

Uploads arrive file by file, so a location is ready when the uploader says so (a
``_READY`` file at its top level) or when its listing has stopped changing for a quiet
period. Blob versions are ETags, not timestamps, so change is detected by comparing a
signature of the whole listing between polls rather than by reading modification times;
the same logic serves local folders.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videoanom.data.datastore import FileInfo
from videoanom.data.layout import discover_layout

logger = logging.getLogger(__name__)

READY_MARKER = "_READY"
DEFAULT_QUIET_SECONDS = 300.0


@dataclass(frozen=True)
class Readiness:
    """Whether to start training now, and a one-line reason for the log and status."""

    ready: bool
    reason: str


def listing_signature(files: list[FileInfo]) -> str:
    """A hash of every (path, size, version): any added, removed or rewritten file changes it."""
    rows = sorted((f.path, int(f.size), str(f.version)) for f in files)
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


def check_ready(
    files: list[FileInfo],
    now: float,
    quiet_seconds: float,
    last_seen: dict[str, Any] | None = None,
) -> tuple[Readiness, dict[str, Any]]:
    """Judge one poll of a location; returns the verdict and the ``last_seen`` to store.

    ``last_seen`` is ``{"signature", "since"}`` from the previous poll: ``since`` is when
    the listing last changed (or was first seen), so the quiet period restarts on any change.
    """
    signature = listing_signature(files)
    previous = last_seen if _valid_last_seen(last_seen) else None
    changed = previous is None or previous["signature"] != signature
    since = now if changed else float(previous["since"])
    new_seen = {"signature": signature, "since": since}

    n_train = len(discover_layout(files).train) if files else 0
    has_marker = any(f.path == READY_MARKER for f in files)
    if has_marker:
        if n_train:
            return Readiness(True, f"has {READY_MARKER} marker ({n_train} train clips)"), new_seen
        return Readiness(False, f"has {READY_MARKER} marker but no train clip"), new_seen
    if not n_train:
        return Readiness(False, "no train clip yet"), new_seen

    quiet = now - since
    if quiet >= quiet_seconds:
        reason = f"ready: {n_train} train clips, unchanged for {quiet:.0f} s"
        return Readiness(True, reason), new_seen
    if previous is None:
        reason = f"first seen now (quiet period {quiet_seconds:.0f} s)"
    elif changed:
        reason = f"changed since last poll (quiet period {quiet_seconds:.0f} s)"
    else:
        reason = f"changed {quiet:.0f} s ago (quiet period {quiet_seconds:.0f} s)"
    return Readiness(False, reason), new_seen


def _valid_last_seen(last_seen: dict[str, Any] | None) -> bool:
    """A stored record from an older or corrupt state file counts as no record."""
    return (
        isinstance(last_seen, dict)
        and isinstance(last_seen.get("signature"), str)
        and isinstance(last_seen.get("since"), int | float)
    )


def seen_path(home: Path) -> Path:
    """Where the master keeps each location's last listing signature between polls."""
    return Path(home) / "master" / "seen.json"


def load_seen(home: Path) -> dict[str, Any]:
    """The stored ``last_seen`` per location; empty if none or unreadable."""
    try:
        seen = json.loads(seen_path(home).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return seen if isinstance(seen, dict) else {}


def save_seen(home: Path, seen: dict[str, Any]) -> None:
    """Write ``seen`` atomically (temporary file, then rename)."""
    path = seen_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(seen, indent=2))
    tmp.replace(path)
