"""Aliases (``champion``) on a store that has them, and the tag fallback for Azure ML's
MLflow, which has none."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from videoanom.registry import register_version, set_alias, version_by_alias


@pytest.fixture
def registry(tmp_path: Path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    source = tmp_path / "model"
    source.mkdir()
    for _ in range(3):
        register_version("prednet-gate", str(source), None, {"location": "gate"})
    yield mlflow.MlflowClient()
    mlflow.set_tracking_uri("")


def test_alias_where_the_store_supports_it(registry) -> None:
    assert version_by_alias("prednet-gate", "champion") is None
    assert set_alias("prednet-gate", "champion", 2) == "alias"
    assert version_by_alias("prednet-gate", "champion") == 2
    set_alias("prednet-gate", "champion", 3)
    assert version_by_alias("prednet-gate", "champion") == 3


def test_tag_fallback_where_aliases_are_missing(registry, monkeypatch) -> None:
    def unsupported(*args, **kwargs):
        raise MlflowException("aliases are not supported by this store")

    monkeypatch.setattr(mlflow.MlflowClient, "set_registered_model_alias", unsupported)
    monkeypatch.setattr(mlflow.MlflowClient, "get_model_version_by_alias", unsupported)
    assert set_alias("prednet-gate", "champion", 1) == "tag"
    assert set_alias("prednet-gate", "champion", 3) == "tag"
    assert version_by_alias("prednet-gate", "champion") == 3
    tagged = [
        int(v.version)
        for v in registry.search_model_versions("name = 'prednet-gate'")
        if v.tags.get("alias.champion")
    ]
    assert tagged == [3], "the tag moved: exactly one version carries it"
