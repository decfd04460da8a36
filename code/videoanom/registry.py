"""The model registry: registering versions with their tags, and loading them back.

Models are plain artifact folders (``prednet.keras`` + ``prednet.json``) registered with
``MlflowClient.create_model_version``: loading one never unpickles anything, and the
same calls work against a local SQLite store and Azure ML's MLflow endpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from videoanom.names import prednet_model_name

logger = logging.getLogger(__name__)

PREDNET_FILE = "prednet.keras"
PREDNET_META = "prednet.json"


class ModelNotFoundError(ValueError):
    """A model reference that does not resolve to a registered version or a file."""


def register_version(
    name: str, source: str, run_id: str | None, tags: dict[str, Any], description: str = ""
) -> int:
    """Create ``name`` if needed and add a version pointing at ``source``; returns the version."""
    client = mlflow.MlflowClient()
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if "RESOURCE_ALREADY_EXISTS" not in str(error.error_code):
            raise
    version = client.create_model_version(
        name,
        source=source,
        run_id=run_id,
        tags={k: _tag_value(v) for k, v in tags.items()},
        description=description,
    )
    return int(version.version)


def latest_version(name: str) -> Any | None:
    """The highest-numbered version of a registered model, or None."""
    client = mlflow.MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    return max(versions, key=lambda v: int(v.version), default=None)


def resolve_prednet_uri(reference: str) -> str:
    """Turn ``models:/...``, ``prednet-<loc>``, a location name or a path into a URI/path."""
    if reference.startswith("models:/") or Path(reference).exists():
        return reference
    name = reference if reference.startswith("prednet-") else prednet_model_name(reference)
    version = latest_version(name)
    if version is None:
        raise ModelNotFoundError(f"no registered model {name!r} (from {reference!r})")
    return f"models:/{name}/{version.version}"


def download_prednet(reference: str) -> Path:
    """Local path of the ``prednet.keras`` file a reference points to."""
    uri = resolve_prednet_uri(reference)
    if Path(uri).exists():
        path = Path(uri)
    else:
        try:
            path = Path(mlflow.artifacts.download_artifacts(uri))
        except MlflowException as error:
            raise ModelNotFoundError(f"cannot fetch {uri}: {error.message}") from None
    if path.is_dir():
        path = path / PREDNET_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"{reference}: no {PREDNET_FILE} found at {path}")
    return path


def load_prednet(reference: str):
    """Load a PredNet from the registry or a file (Keras safe mode: no arbitrary code)."""
    import keras

    import videoanom.prednet  # noqa: F401  (registers the PredNet class with Keras)

    path = download_prednet(reference)
    logger.info("loading PredNet from %s", reference)
    return keras.saving.load_model(path, compile=False, safe_mode=True)


def _tag_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
