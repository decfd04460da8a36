"""The models the service scores with: one detector and its PredNet per location.

Loaded once at start-up (TensorFlow makes loading slow): every location with a registered
``anomaly-classifier-<slug>``, or the locations asked for. Each gets the version under the
alias ``champion``, else the latest (logged as a warning). A location that fails to load is
recorded and reported, and never stops the others. Keras models are not safe to call from
two threads at once, so scoring is serialised per location by a lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from videoanom.names import InvalidLocationName, normalise_location

logger = logging.getLogger(__name__)

CLASSIFIER_PREFIX = "anomaly-classifier-"
WARMUP_FRAMES = 3


class UnknownLocation(LookupError):
    """A location this service has no models for."""

    def __init__(self, name: str, known: list[str]) -> None:
        served = ", ".join(known) if known else "none (no location could be loaded)"
        super().__init__(f"unknown location {name!r}: this service scores {served}")
        self.name = name
        self.known = known


class LocationUnavailable(RuntimeError):
    """A registered location whose models failed to load."""


@dataclass
class ServedLocation:
    """One location's loaded models, and the lock that serialises their use."""

    location: str  # the location's name (the ``location`` tag of its detector)
    slug: str  # the name normalised to [a-z0-9-], as in the model names
    models: Any  # videoanom.scoring.inference.LocationModels
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def versions(self) -> dict[str, str]:
        return dict(self.models.versions)

    def score(self, frames: Iterable[np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray]:
        """(anomaly_score, is_anomaly) per frame; blocking, one call at a time per location."""
        from videoanom.scoring.inference import score_frames

        with self.lock:
            return score_frames(self.models, frames, name)

    def describe(self) -> dict[str, Any]:
        versions = self.versions
        return {
            "location": self.location,
            "slug": self.slug,
            "classifier": versions.get("classifier", ""),
            "prednet": versions.get("prednet", ""),
            "selected": self.models.selected,
        }


def registered_locations(tracking_uri: str) -> list[str]:
    """Slugs of every location with a registered detector (``anomaly-classifier-<slug>``)."""
    from ml_service.model_index import latest_versions

    names = latest_versions(tracking_uri)
    return sorted(
        n.removeprefix(CLASSIFIER_PREFIX) for n in names if n.startswith(CLASSIFIER_PREFIX)
    )


def _load_from_registry(location: str) -> Any:
    from videoanom.scoring.inference import load_location_models

    return load_location_models(location)


class ModelStore:
    """Thread-safe map from location slug to its loaded models, and the failures."""

    def __init__(self, loader: Callable[[str], Any] | None = None, warmup: bool = True) -> None:
        self._loader = loader or _load_from_registry
        self._warmup = warmup
        self._lock = threading.Lock()
        self._served: dict[str, ServedLocation] = {}
        self._failed: dict[str, str] = {}
        self.loaded_at: float | None = None

    # ------------------------------------------------------------------ loading
    def load(self, tracking_uri: str, locations: list[str] | None = None) -> None:
        """Load ``locations`` (default: every registered one); failures are recorded."""
        import mlflow

        mlflow.set_tracking_uri(tracking_uri)
        wanted = list(locations) if locations else None
        if wanted is None:
            try:
                wanted = registered_locations(tracking_uri)
            except Exception as error:  # an unreachable registry: serve nothing, report it
                logger.error("cannot list the registered models: %s", error)
                with self._lock:
                    self._failed["*"] = f"cannot list the registered models: {error}"
                wanted = []
            if not wanted:
                logger.warning(
                    "no registered anomaly-classifier-<location> models yet: run 'make demo' "
                    "or 'videoanom run --location NAME' first; /healthz answers 503 until then"
                )
        for name in wanted:
            self.load_one(name)
        self.loaded_at = time.time()
        served = self.served()
        logger.info(
            "serving %d location(s): %s",
            len(served),
            ", ".join(f"{s.location} ({s.models.selected} {s.versions})" for s in served) or "none",
        )
        for name, error in self.failures().items():
            logger.error("not serving %s: %s", name, error)

    def load_one(self, name: str) -> ServedLocation | None:
        """Load one location's models; on failure record it and return None."""
        try:
            slug = normalise_location(name)
        except InvalidLocationName as error:
            self._record_failure(name, str(error))
            return None
        started = time.monotonic()
        try:
            models = self._loader(name)
            served = ServedLocation(_location_name(models, name), slug, models)
            if self._warmup:
                _warm_up(served)
        except Exception as error:
            if not isinstance(error, ValueError):  # not just "no such model": keep the trace
                logger.exception("cannot load the models of location %s", name)
            self._record_failure(slug, f"{type(error).__name__}: {error}")
            return None
        if models.selected == "latest":
            logger.warning(
                "no champion for %s yet: serving latest version %s",
                served.location,
                served.versions.get("classifier", "?").rpartition("/")[2],
            )
        logger.info(
            "loaded %s in %.1f s: %s", served.location, time.monotonic() - started, served.versions
        )
        with self._lock:
            self._served[slug] = served
            self._failed.pop(slug, None)
        return served

    def add(self, models: Any, location: str | None = None) -> ServedLocation:
        """Serve already loaded ``LocationModels`` (tests, or an embedding application)."""
        name = location or models.location
        served = ServedLocation(name, normalise_location(name), models)
        with self._lock:
            self._served[served.slug] = served
            self._failed.pop(served.slug, None)
        return served

    def _record_failure(self, name: str, reason: str) -> None:
        with self._lock:
            self._failed[name] = reason

    # ------------------------------------------------------------------ queries
    def get(self, name: str) -> ServedLocation:
        """The served location for a request's name (any spelling with the same slug)."""
        try:
            slug = normalise_location(name)
        except InvalidLocationName:
            slug = None
        with self._lock:
            served = self._served.get(slug) if slug else None
            failure = self._failed.get(slug) if slug else None
            known = sorted(s.location for s in self._served.values())
        if served is not None:
            return served
        if failure is not None:
            raise LocationUnavailable(
                f"location {name!r} is registered but its models failed to load: {failure}"
            )
        raise UnknownLocation(name, known)

    def served(self) -> list[ServedLocation]:
        with self._lock:
            return sorted(self._served.values(), key=lambda s: s.slug)

    def failures(self) -> dict[str, str]:
        with self._lock:
            return dict(sorted(self._failed.items()))

    @property
    def ready(self) -> bool:
        """True when at least one location can be scored."""
        with self._lock:
            return bool(self._served)


def _location_name(models: Any, fallback: str) -> str:
    """The location's own name, from the ``location`` tag of the detector version."""
    classifier = models.versions.get("classifier", "")
    name, _, version = classifier.rpartition("/")
    if not name or not version:
        return fallback
    try:
        import mlflow

        tags = mlflow.MlflowClient().get_model_version(name, version).tags
    except Exception:  # the tag is a nicety: the slug names the location well enough
        return fallback
    return tags.get("location") or fallback


def _warm_up(served: ServedLocation) -> None:
    """Score a few blank frames once, so the first request does not pay for tracing the
    model's graph, and a model that cannot score is found at start-up, not on a request."""
    height, width, _ = (int(v) for v in served.models.prednet.frame_shape)
    blank = np.zeros((height, width, 3), np.uint8)
    scores, _ = served.score([blank] * WARMUP_FRAMES, "warm-up")
    if len(scores) != WARMUP_FRAMES:
        raise RuntimeError(f"warm-up scored {len(scores)} of {WARMUP_FRAMES} frames")
