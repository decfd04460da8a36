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


ALIAS_TAG_PREFIX = "alias."


def set_alias(name: str, alias: str, version: int) -> str:
    """Point ``alias`` (e.g. ``champion``) of model ``name`` at ``version``.

    Uses MLflow's registered-model aliases where the store supports them (local SQLite,
    an MLflow server). Azure ML's MLflow endpoint does not, so there the alias becomes a
    version tag ``alias.<alias>=true`` that is moved off the other versions. Returns the
    mechanism used: ``"alias"`` or ``"tag"``.
    """
    client = mlflow.MlflowClient()
    try:
        client.set_registered_model_alias(name, alias, str(version))
        return "alias"
    except MlflowException as error:
        logger.info("%s: aliases not supported here (%s); using a version tag", name, error)
    tag = ALIAS_TAG_PREFIX + alias
    for other in client.search_model_versions(f"name = '{name}'"):
        if other.tags.get(tag) and int(other.version) != int(version):
            client.delete_model_version_tag(name, other.version, tag)
    client.set_model_version_tag(name, str(version), tag, "true")
    return "tag"


def version_by_alias(name: str, alias: str) -> int | None:
    """The version ``alias`` points at (an alias, or the tag fallback of :func:`set_alias`)."""
    client = mlflow.MlflowClient()
    try:
        return int(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        pass
    tag = ALIAS_TAG_PREFIX + alias
    try:
        tagged = [v for v in client.search_model_versions(f"name = '{name}'") if v.tags.get(tag)]
    except MlflowException:
        return None
    return max((int(v.version) for v in tagged), default=None)


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
