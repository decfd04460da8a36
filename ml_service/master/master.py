"""``videoanom master``: find locations that need a detector and train them, safely.

One poll lists the datastore's locations and, for each, decides whether it needs a
training pipeline: not yet trained (or, with ``retrain_changed``, its files changed since
the last success), its upload complete (``_READY`` marker or a quiet period), not given up
on after repeated failures, not inside its retry back-off, and not claimed by another
master. Chosen locations train in parallel up to ``workers``; one failing location never
stops the others. The datastore is only ever read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ml_service.master.claims import ClaimError, claims_for
from ml_service.master.readiness import DEFAULT_QUIET_SECONDS, check_ready, load_seen, save_seen
from ml_service.model_index import latest_versions
from ml_service.pipelines.local_runner import StepFailed
from ml_service.pipelines.run_location import listing_salt, run_location
from ml_service.state import read_state, read_states
from ml_service.util.env_variables import Settings
from videoanom.data.datastore import Datastore, DatastoreError, open_datastore
from videoanom.names import classifier_model_name, prednet_model_name

logger = logging.getLogger(__name__)

RunLocation = Callable[..., Any]
ALREADY_TRAINED = "already trained"


@dataclass(frozen=True)
class MasterConfig:
    """How eagerly the master starts pipelines and how it treats failures."""

    quiet_seconds: float = DEFAULT_QUIET_SECONDS
    max_retries: int = 3
    backoff_seconds: float = 600.0
    workers: int = 1
    retrain_changed: bool = False
    transfer: bool = True


@dataclass
class Decision:
    """What one poll decided for one location, and why (shown to the user)."""

    location: str
    action: str  # "train", "skip", "refuse" (an unsafe name, never used in a path)
    reason: str
    outcome: str = ""
    # The location's record when the decision was made: a different one under the claim
    # means another master ran the pipeline in between.
    record_seen: str = ""


class Master:
    """Polls a datastore and runs the training pipeline for locations that need one."""

    def __init__(
        self,
        settings: Settings,
        config: MasterConfig | None = None,
        run: RunLocation = run_location,
        datastore: Datastore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.config = config or MasterConfig()
        self.run_location = run
        self.clock = clock
        home = Path(settings.home)
        self.datastore = datastore or open_datastore(
            settings.datastore, cache_dir=home / "cache" / "blob"
        )
        self.claims = claims_for(settings)
        self._registered: dict[str, int] | None = None

    def poll_once(self) -> list[Decision]:
        """Decide for every location, train the chosen ones, return every decision."""
        now = self.clock()
        seen = load_seen(self.settings.home)
        self._registered: dict[str, int] | None = None
        decisions = [
            self._decide_safely(location, now, seen) for location in self.datastore.list_locations()
        ]
        save_seen(self.settings.home, seen)
        for name, why in sorted(getattr(self.datastore, "refused", {}).items()):
            decisions.append(Decision(repr(name), "refuse", why))
        chosen = [d for d in decisions if d.action == "train"]
        for decision in decisions:
            if decision.action == "skip":
                # Thousands of trained locations would flood the log on every poll.
                level = logging.DEBUG if decision.reason == ALREADY_TRAINED else logging.INFO
                logger.log(level, "%s: %s", decision.location, decision.reason)
        logger.info(
            "poll of %s: %d locations, %d to train, %d already trained, %d refused",
            self.datastore.uri,
            len(decisions),
            len(chosen),
            sum(d.reason == ALREADY_TRAINED for d in decisions),
            sum(d.action == "refuse" for d in decisions),
        )
        if chosen:
            with ThreadPoolExecutor(max_workers=max(1, self.config.workers)) as pool:
                for decision, outcome in zip(chosen, pool.map(self._train, chosen), strict=True):
                    decision.outcome = outcome
        return decisions

    def watch(self, interval: float, stop: threading.Event) -> None:
        """Poll every ``interval`` seconds until ``stop`` is set (after the current poll)."""
        while not stop.is_set():
            try:
                self.poll_once()
            except (DatastoreError, ClaimError, OSError) as error:
                # Storage unreachable for a while: report it and try again next poll.
                logger.error("poll failed, retrying in %.0f s: %s", interval, error)
            stop.wait(interval)

    # ------------------------------------------------------------------ decisions
    def _decide_safely(self, location: str, now: float, seen: dict[str, Any]) -> Decision:
        """:meth:`_decide`, but a location that cannot be read is skipped, not fatal."""
        try:
            return self._decide(location, now, seen)
        except (DatastoreError, ValueError, OSError) as error:
            logger.warning("%s: cannot decide: %s", location, error)
            return Decision(location, "skip", f"cannot read: {error}")

    def _decide(self, location: str, now: float, seen: dict[str, Any]) -> Decision:
        state = read_state(self.settings.home, location)
        status = state.get("state")
        if status == "submitted":  # on Azure ML: a training pipeline is queued or running
            return Decision(location, "skip", f"pipeline {state.get('pipeline_id')} submitted")
        if status == "succeeded":
            if not self.config.retrain_changed:
                return Decision(location, "skip", ALREADY_TRAINED)
            if listing_salt(self.datastore, location) == state.get("listing"):
                return Decision(location, "skip", "trained on the current data")
        elif not status and self._has_models(location):
            return Decision(location, "skip", "models already registered (trained elsewhere)")
        if status == "failed":
            attempts = int(state.get("attempts", 1))
            if attempts >= self.config.max_retries:
                return Decision(
                    location, "skip", f"gave up after {attempts} failures: {state.get('reason')}"
                )
            wait_until = _timestamp(state) + self.config.backoff_seconds * 2 ** (attempts - 1)
            if now < wait_until:
                return Decision(location, "skip", f"retry after {wait_until - now:.0f} s")
        readiness, seen[location] = check_ready(
            self.datastore.list_files(location), now, self.config.quiet_seconds, seen.get(location)
        )
        if not readiness.ready:
            return Decision(location, "skip", f"not ready: {readiness.reason}")
        holder = self.claims.holder(location)
        if holder is not None:
            return Decision(
                location, "skip", f"claimed by pid {holder.get('pid')} on {holder.get('host')}"
            )
        return Decision(location, "train", readiness.reason, record_seen=_record_id(state))

    def _train(self, decision: Decision) -> str:
        location = decision.location
        claim = self.claims.try_claim(location)
        if claim is None:
            return "skipped: claimed by another master"
        with claim:
            done_meanwhile = self._done_meanwhile(decision)
            if done_meanwhile:
                return f"skipped: {done_meanwhile}"
            init_from = self.transfer_source(location) if self.config.transfer else ""
            try:
                logger.info("%s: training%s", location, f" from {init_from}" if init_from else "")
                result = self.run_location(self.settings, location, init_from=init_from)
            except (StepFailed, ValueError) as error:
                logger.error("%s failed: %s", location, error)
                return f"failed: {error}"
            except Exception as error:  # a bug: logged in full, the other locations go on
                logger.exception("%s failed unexpectedly", location)
                return f"failed: {type(error).__name__}: {error}"
            if claim.lost:
                logger.error(
                    "%s: the claim was lost while training (%s); another master may have "
                    "trained it too",
                    location,
                    claim.lost_reason,
                )
        # A local run returns its models; an Azure ML submission says what it submitted.
        outcome = getattr(result, "outcome", "")
        return outcome or f"succeeded: {getattr(result, 'classifier_uri', '')}".rstrip(": ")

    def _done_meanwhile(self, decision: Decision) -> str:
        """Why the location no longer needs this run (checked under its claim), or ""."""
        state = read_state(self.settings.home, decision.location)
        if _record_id(state) != decision.record_seen and state.get("state") in (
            "succeeded",
            "failed",
        ):
            return f"{state['state']} meanwhile in pipeline {state.get('pipeline_id')}"
        fresh = latest_versions(self.settings.tracking_uri) if not state else {}
        if fresh and _both_registered(decision.location, fresh):
            return "models registered meanwhile by another master"
        return ""

    def transfer_source(self, location: str) -> str:
        """The PredNet of the trained location whose model beats copy-last by the most."""
        best, best_ratio = "", float("inf")
        for state in read_states(self.settings.home):
            metrics = state.get("metrics", {})
            if state.get("location") == location or state.get("state") != "succeeded":
                continue
            if not metrics.get("copy_last_mae") or not state.get("prednet"):
                continue
            ratio = metrics["val_mae"] / metrics["copy_last_mae"]
            if ratio < best_ratio:
                best, best_ratio = state["prednet"], ratio
        return best

    def _has_models(self, location: str) -> bool:
        """Both models registered: trained by another master or before local records existed.

        The registry is read once per poll, and only when some location has no record.
        """
        if self._registered is None:
            self._registered = latest_versions(self.settings.tracking_uri)
        return _both_registered(location, self._registered)


def _both_registered(location: str, versions: dict[str, int]) -> bool:
    """Whether both of a location's models have a version in ``versions``."""
    return all(
        name in versions for name in (prednet_model_name(location), classifier_model_name(location))
    )


def _record_id(state: dict[str, Any]) -> str:
    """What identifies one version of a location's record."""
    return f"{state.get('pipeline_id', '')}@{state.get('updated', '')}@{state.get('state', '')}"


def _timestamp(state: dict[str, Any]) -> float:
    """When a state record was written, as a Unix time (0 if unknown)."""
    try:
        return datetime.strptime(state["updated"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except (KeyError, ValueError):
        return 0.0
