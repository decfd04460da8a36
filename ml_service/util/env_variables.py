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
    """A setting with a value of the wrong type, or a required one that is missing."""


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
    max_upload_mb: int = dataclasses.field(
        default=200,
        metadata=_env("VIDEOANOM_MAX_UPLOAD_MB", "serve: largest request body accepted (MB)"),
    )
    max_frames: int = dataclasses.field(
        default=20000,
        metadata=_env("VIDEOANOM_MAX_FRAMES", "serve: most frames scored in one request"),
    )
    release_margin: float = dataclasses.field(
        default=0.02,
        metadata=_env(
            "VIDEOANOM_RELEASE_MARGIN",
            "release gate: how much lower the candidate's AUC may be than the champion's",
        ),
    )
    release_min_auc: float = dataclasses.field(
        default=0.80,
        metadata=_env(
            "VIDEOANOM_RELEASE_MIN_AUC", "release gate: the AUC a first model (no champion) needs"
        ),
    )

    @classmethod
    def load(
        cls,
        overrides: Mapping[str, Any] | None = None,
        env_file: str | Path | None = ".env",
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Build settings from flags (``overrides``, None = not given), env, ``.env``, defaults."""
        settings = cls(**_read_fields(cls, overrides, env_file, environ))
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


SDK_VERSIONS = ("v1", "v2")
SAMPLINGS = ("random", "bayesian")
PRIORITIES = ("dedicated", "lowpriority")


@dataclass(frozen=True)
class AzureSettings:
    """Where and how the pipelines run on Azure Machine Learning (``videoanom azure ...``).

    Identity is not here: :class:`azure.identity.DefaultAzureCredential` reads
    ``AZURE_CLIENT_ID`` / ``AZURE_TENANT_ID`` (and a federated token or ``az login``) itself,
    so no secret ever passes through these settings or a file in the repository.
    """

    sdk: str = dataclasses.field(
        default="v1",
        metadata=_env(
            "AML_SDK", "Azure ML SDK to build with: v1 (azureml-sdk) or v2 (azure-ai-ml)"
        ),
    )
    subscription_id: str = dataclasses.field(
        default="", metadata=_env("AZURE_SUBSCRIPTION_ID", "Azure subscription id (required)")
    )
    resource_group: str = dataclasses.field(
        default="", metadata=_env("AZURE_RESOURCE_GROUP", "resource group (required)")
    )
    workspace_name: str = dataclasses.field(
        default="", metadata=_env("AML_WORKSPACE_NAME", "Azure ML workspace (required)")
    )
    region: str = dataclasses.field(
        default="westeurope",
        metadata=_env("AZURE_LOCATION", "Azure region for the infrastructure template"),
    )
    cpu_cluster: str = dataclasses.field(
        default="cpu-cluster", metadata=_env("AML_CPU_CLUSTER", "CPU compute cluster name")
    )
    cpu_vm_size: str = dataclasses.field(
        default="Standard_DS3_v2", metadata=_env("AML_CPU_VM_SIZE", "CPU cluster VM size")
    )
    cpu_min_nodes: int = dataclasses.field(
        default=0,
        metadata=_env("AML_CPU_MIN_NODES", "CPU cluster minimum nodes (0 = scale to zero)"),
    )
    cpu_max_nodes: int = dataclasses.field(
        default=4, metadata=_env("AML_CPU_MAX_NODES", "CPU cluster maximum nodes")
    )
    gpu_cluster: str = dataclasses.field(
        default="gpu-cluster", metadata=_env("AML_GPU_CLUSTER", "GPU compute cluster name")
    )
    gpu_vm_size: str = dataclasses.field(
        default="Standard_NC4as_T4_v3", metadata=_env("AML_GPU_VM_SIZE", "GPU cluster VM size")
    )
    gpu_min_nodes: int = dataclasses.field(
        default=0,
        metadata=_env("AML_GPU_MIN_NODES", "GPU cluster minimum nodes (0 = scale to zero)"),
    )
    gpu_max_nodes: int = dataclasses.field(
        default=4, metadata=_env("AML_GPU_MAX_NODES", "GPU cluster maximum nodes")
    )
    vm_priority: str = dataclasses.field(
        default="dedicated",
        metadata=_env("AML_VM_PRIORITY", "dedicated or lowpriority (cheaper, can be preempted)"),
    )
    datastore_name: str = dataclasses.field(
        default="workspaceblobstore",
        metadata=_env("AML_DATASTORE_NAME", "workspace datastore holding the location folders"),
    )
    datastore_path: str = dataclasses.field(
        default="videoanom",
        metadata=_env(
            "AML_DATASTORE_PATH", "folder in that datastore whose subfolders are the locations"
        ),
    )
    state_path: str = dataclasses.field(
        default="videoanom-state",
        metadata=_env(
            "AML_STATE_PATH", "folder in that datastore for the master's records (never data)"
        ),
    )
    environment_name: str = dataclasses.field(
        default="videoanom-env",
        metadata=_env("AML_ENVIRONMENT_NAME", "Azure ML environment built from environment_setup/"),
    )
    training_experiment: str = dataclasses.field(
        default="videoanom-training",
        metadata=_env("AML_TRAINING_EXPERIMENT", "experiment of the training pipeline runs"),
    )
    master_experiment: str = dataclasses.field(
        default="videoanom-master",
        metadata=_env("AML_MASTER_EXPERIMENT", "experiment of the master pipeline runs"),
    )
    training_pipeline_prefix: str = dataclasses.field(
        default="prednet",
        metadata=_env(
            "AML_TRAINING_PIPELINE_PREFIX", "training pipelines are named <prefix>-<location>"
        ),
    )
    master_pipeline_name: str = dataclasses.field(
        default="prednet-master",
        metadata=_env("AML_MASTER_PIPELINE_NAME", "name of the published master pipeline"),
    )
    polling_interval_minutes: int = dataclasses.field(
        default=5,
        metadata=_env(
            "AML_POLLING_INTERVAL_MINUTES", "how often the master's schedule checks the datastore"
        ),
    )
    search_max_runs: int = dataclasses.field(
        default=8, metadata=_env("AML_SEARCH_MAX_RUNS", "hyperparameter search: trials in all")
    )
    search_max_concurrent: int = dataclasses.field(
        default=4,
        metadata=_env("AML_SEARCH_MAX_CONCURRENT", "hyperparameter search: trials at once"),
    )
    search_sampling: str = dataclasses.field(
        default="random",
        metadata=_env(
            "AML_SEARCH_SAMPLING",
            "random (with a bandit early-termination policy) or bayesian (no early termination)",
        ),
    )
    bandit_slack_factor: str = dataclasses.field(
        default="0.15",
        metadata=_env(
            "AML_BANDIT_SLACK_FACTOR", "bandit policy: stop trials this much worse than the best"
        ),
    )

    REQUIRED = ("subscription_id", "resource_group", "workspace_name")

    @classmethod
    def load(
        cls,
        overrides: Mapping[str, Any] | None = None,
        env_file: str | Path | None = ".env",
        environ: Mapping[str, str] | None = None,
    ) -> AzureSettings:
        """Build Azure settings (same precedence as :class:`Settings`) and check their values."""
        settings = cls(**_read_fields(cls, overrides, env_file, environ))
        settings.check_values()
        return settings

    def check_values(self) -> None:
        """Reject values no SDK would accept, naming the variable."""
        for name, value, allowed in (
            ("AML_SDK", self.sdk, SDK_VERSIONS),
            ("AML_SEARCH_SAMPLING", self.search_sampling, SAMPLINGS),
            ("AML_VM_PRIORITY", self.vm_priority, PRIORITIES),
        ):
            if value not in allowed:
                raise SettingsError(f"{name}={value!r}: use one of {', '.join(allowed)}")
        for prefix in ("cpu", "gpu"):
            low, high = getattr(self, f"{prefix}_min_nodes"), getattr(self, f"{prefix}_max_nodes")
            if not 0 <= low <= high or high < 1:
                raise SettingsError(
                    f"AML_{prefix.upper()}_MIN_NODES={low}, AML_{prefix.upper()}_MAX_NODES={high}: "
                    "need 0 <= min <= max and max >= 1"
                )
        if not 1 <= self.search_max_concurrent <= self.search_max_runs:
            raise SettingsError(
                f"AML_SEARCH_MAX_CONCURRENT={self.search_max_concurrent} must be between 1 and "
                f"AML_SEARCH_MAX_RUNS={self.search_max_runs}"
            )
        if self.polling_interval_minutes < 1:
            raise SettingsError("AML_POLLING_INTERVAL_MINUTES must be at least 1")
        try:
            slack = float(self.bandit_slack_factor)
        except ValueError:
            slack = -1.0
        if not 0 < slack < 1:
            raise SettingsError(
                f"AML_BANDIT_SLACK_FACTOR={self.bandit_slack_factor!r}: need a number in (0, 1)"
            )

    def require_workspace(self) -> AzureSettings:
        """Self, or one clear error naming every missing workspace setting."""
        missing = [
            fields_by_name(AzureSettings)[name].metadata["env"]
            for name in self.REQUIRED
            if not getattr(self, name)
        ]
        if missing:
            raise SettingsError(
                f"missing Azure settings: {', '.join(missing)} (set them in the environment "
                "or in .env; .env.example describes each)"
            )
        return self

    def training_pipeline_name(self, location: str) -> str:
        """``prednet-<location slug>``: one published training pipeline per location."""
        from videoanom.names import normalise_location

        return f"{self.training_pipeline_prefix}-{normalise_location(location)}"


def fields_by_name(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in fields(cls)}


def describe_settings() -> list[tuple[str, str, str]]:
    """(variable, default, help) for every setting, for ``.env.example`` and the docs."""
    return [
        (f.metadata["env"], str(f.default), f.metadata["help"])
        for cls in (Settings, AzureSettings)
        for f in fields(cls)
    ]


def _read_fields(
    cls: type,
    overrides: Mapping[str, Any] | None,
    env_file: str | Path | None,
    environ: Mapping[str, str] | None,
) -> dict[str, Any]:
    """The fields of ``cls`` given by flags, the environment or ``.env`` (converted)."""
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
    return values


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
    if kind_name == "float":
        try:
            return float(text)
        except ValueError:
            raise SettingsError(f"{name}={text!r} is not a number") from None
    if kind_name == "bool":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise SettingsError(f"{name}={text!r} is not a boolean (use true or false)")
    if kind_name == "Path":
        return Path(text).expanduser()
    return text
