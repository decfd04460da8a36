"""How the master hands a location to Azure ML instead of training it here.

On Azure ML the master step runs the same :class:`~ml_service.master.master.Master` as
``videoanom master --once``, with one difference: its ``run`` callable submits the
location's training pipeline (published as ``prednet-<location>``) and returns at once.
The master's records live in a mounted, persistent folder of the datastore
(``AML_STATE_PATH``), so the next poll knows what was submitted; before deciding, it asks
the workspace how those runs ended and records succeeded or failed (the master's usual
retry and give-up rules then apply).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ml_service.state import read_states, write_state
from ml_service.util.env_variables import Settings

logger = logging.getLogger(__name__)

# What the SDKs' run statuses mean to the master.
FINISHED_OK = {"completed", "finished"}
FINISHED_BAD = {"failed", "canceled", "cancelled", "cancelrequested", "notresponding"}


def is_active(status: str) -> bool:
    """Whether a run with this status may still train (queued, preparing, running...)."""
    return str(status).lower() not in FINISHED_OK | FINISHED_BAD


@dataclass(frozen=True)
class Submission:
    """A training pipeline submitted for one location."""

    location: str
    pipeline_name: str
    run_id: str
    url: str = ""

    @property
    def outcome(self) -> str:
        if not self.pipeline_name:  # found running, submitted by an earlier master run
            return f"submitted: already running as run {self.run_id}"
        return f"submitted: {self.pipeline_name} as run {self.run_id}"


class Submitter(Protocol):
    """Builds, publishes and submits training pipelines with one SDK."""

    sdk: str

    def submit(self, location: str, init_from: str = "") -> Submission:
        """Publish (idempotently) and submit the location's training pipeline."""
        ...

    def run_status(self, run_id: str) -> str:
        """The SDK's status of a submitted run (e.g. Running, Completed, Failed)."""
        ...

    def active_run(self, location: str) -> str | None:
        """The id of a training run of ``location`` that has not finished, if any.

        Asked right before submitting: two master runs that overlap (a schedule firing
        while the last run still works) must not both submit the same location.
        """
        ...


def launcher(submitter: Submitter, home: Path) -> Any:
    """A ``run`` callable for :class:`Master` that submits instead of training here."""

    def launch(settings: Settings, location: str, init_from: str = "") -> Submission:
        running = submitter.active_run(location)
        if running:
            submission = Submission(location, "", running)
            logger.info("%s: run %s is already training it; not submitting", location, running)
        else:
            submission = submitter.submit(location, init_from)
        write_state(
            home,
            location,
            "submitted",
            pipeline_id=submission.run_id,
            pipeline=submission.pipeline_name,
            url=submission.url,
            sdk=submitter.sdk,
            attempts=_attempts(home, location),
        )
        logger.info("%s: %s", location, submission.outcome)
        return submission

    return launch


def refresh_submitted(home: Path, submitter: Submitter) -> dict[str, str]:
    """Record how submitted runs ended; returns {location: new state} for those that did.

    A run the workspace cannot report on (deleted, or a transient error) stays submitted
    and is asked about again next poll.
    """
    changed: dict[str, str] = {}
    for record in read_states(home):
        if record.get("state") != "submitted":
            continue
        location, run_id = record["location"], str(record.get("pipeline_id", ""))
        try:
            status = submitter.run_status(run_id).lower()
        except Exception as error:  # the service, not our data: try again next poll
            logger.warning("%s: cannot read the status of run %s: %s", location, run_id, error)
            continue
        details = {k: v for k, v in record.items() if k not in ("location", "state", "updated")}
        if status in FINISHED_OK:
            write_state(home, location, "succeeded", **{**details, "attempts": 0})
            changed[location] = "succeeded"
        elif status in FINISHED_BAD:
            attempts = int(record.get("attempts", 0)) + 1
            reason = f"Azure ML run {run_id} ended {status}"
            write_state(
                home, location, "failed", **{**details, "attempts": attempts}, reason=reason
            )
            changed[location] = "failed"
    return changed


def _attempts(home: Path, location: str) -> int:
    from ml_service.state import read_state

    return int(read_state(home, location).get("attempts", 0))
