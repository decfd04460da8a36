"""Typed settings, read once at the command-line boundary and passed down.

Precedence (CONTRACT section 3): command-line flags, then environment variables, then a
``.env`` file, then the defaults below. Nothing is read at import time, so tests and long
running processes always see the values they were given. Secrets (connection strings,
API keys) are never part of :class:`Settings`: they are read where used and never logged.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from dotenv import dotenv_values


class SettingsError(ValueError):
    """A setting with a value of the wrong type."""


def _env(name: str, help_text: str) -> dict[str, str]:
    return {"env": name, "help": help_text}


@dataclass(frozen=True)
class Settings:
    """Every setting of the local pipeline; the field metadata names its variable."""

    home: Path = dataclasses.field(
        default=Path(".videoanom"),
        metadata=_env("VIDEOANOM_HOME", "local state: tracking database, models, step outputs"),
    )
    datastore: str = dataclasses.field(
        default="./data/datastore",
        metadata=_env(
            "VIDEOANOM_DATASTORE", "datastore: a folder or azureblob://container[/prefix]"
        ),
    )
    claims_container: str = dataclasses.field(
        default="videoanom-claims",
        metadata=_env(
            "VIDEOANOM_CLAIMS_CONTAINER",
            "blob container for master claims (leases) of an azureblob:// datastore",
        ),
    )
    claim_lease_seconds: int = dataclasses.field(
        default=60,
        metadata=_env(
            "VIDEOANOM_CLAIM_LEASE_SECONDS",
            "blob lease of a claim, 15-60 s: how soon a dead master's location is free again",
        ),
    )
    tracking_uri: str = dataclasses.field(
        default="",
        metadata=_env(
            "MLFLOW_TRACKING_URI", "MLflow tracking/registry URI; default SQLite in home"
        ),
    )
    trials: int = dataclasses.field(
        default=4, metadata=_env("VIDEOANOM_TRIALS", "hyperparameter search trials per location")
    )
    max_epochs: int = dataclasses.field(
        default=12, metadata=_env("VIDEOANOM_MAX_EPOCHS", "maximum epochs per trial")
    )
    windows_per_epoch: int = dataclasses.field(
        default=320, metadata=_env("VIDEOANOM_WINDOWS_PER_EPOCH", "training sequences per epoch")
    )
    nt: int = dataclasses.field(
        default=10, metadata=_env("VIDEOANOM_NT", "frames per PredNet training sequence")
    )
    image_height: int = dataclasses.field(
        default=64, metadata=_env("VIDEOANOM_IMAGE_HEIGHT", "model input height (pixels)")
    )
    image_width: int = dataclasses.field(
        default=80, metadata=_env("VIDEOANOM_IMAGE_WIDTH", "model input width (pixels)")
    )
    image_channels: int = dataclasses.field(
        default=1, metadata=_env("VIDEOANOM_IMAGE_CHANNELS", "1 for grey, 3 for colour")
    )
    seed: int = dataclasses.field(default=0, metadata=_env("VIDEOANOM_SEED", "random seed"))

    @classmethod
    def load(
        cls,
        overrides: Mapping[str, Any] | None = None,
        env_file: str | Path | None = ".env",
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Build settings from flags (``overrides``, None = not given), env, ``.env``, defaults."""
        environ = os.environ if environ is None else environ
        dotenv = dotenv_values(env_file) if env_file and Path(env_file).is_file() else {}
        values: dict[str, Any] = {}
        for field in fields(cls):
            name = field.metadata["env"]
            raw = (overrides or {}).get(field.name)
            if raw is None:
                raw = environ.get(name) or dotenv.get(name) or None
            if raw is not None:
                values[field.name] = _convert(field.type, raw, name)
        settings = cls(**values)
        if not settings.tracking_uri:
            db = (settings.home / "mlflow.db").resolve()
            settings = dataclasses.replace(settings, tracking_uri=f"sqlite:///{db}")
        return settings

    @property
    def artifact_root(self) -> Path:
        """Where MLflow stores artifacts for experiments this project creates."""
        return (self.home / "mlartifacts").resolve()

    def step_environment(self) -> dict[str, str]:
        """Variables a step process needs to track to the same place as this process."""
        return {
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "VIDEOANOM_ARTIFACT_ROOT": self.artifact_root.as_uri(),
            "VIDEOANOM_BLOB_CACHE": str((self.home / "cache" / "blob").resolve()),
        }


def describe_settings() -> list[tuple[str, str, str]]:
    """(variable, default, help) for every setting, for ``.env.example`` and the docs."""
    return [(f.metadata["env"], str(f.default), f.metadata["help"]) for f in fields(Settings)]


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(kind: Any, raw: Any, name: str) -> Any:
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    kind_name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    if kind_name == "int":
        try:
            return int(text)
        except ValueError:
            raise SettingsError(f"{name}={text!r} is not a whole number") from None
    if kind_name == "bool":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise SettingsError(f"{name}={text!r} is not a boolean (use true or false)")
    if kind_name == "Path":
        return Path(text).expanduser()
    return text
