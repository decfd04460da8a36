"""MLflow set-up shared by the steps: one experiment per location, artifacts under home.

The tracking URI comes from ``MLFLOW_TRACKING_URI`` (set by the runner locally, by
azureml-mlflow on Azure ML), so step code never hard-codes where runs go.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import mlflow

from videoanom.names import normalise_location

logger = logging.getLogger(__name__)

ARTIFACT_ROOT_ENV = "VIDEOANOM_ARTIFACT_ROOT"
PIPELINE_ID_ENV = "VIDEOANOM_PIPELINE_ID"
# Set by Azure ML (azureml-mlflow) in a job: the run the job's metrics belong to.
JOB_RUN_ENV = "MLFLOW_RUN_ID"


def experiment_name(location: str) -> str:
    return f"videoanom-{normalise_location(location)}"


def use_location_experiment(location: str) -> str:
    """Select (creating if needed) the location's experiment; returns its id.

    With a local tracking store the artifact location is put under ``VIDEOANOM_HOME``
    rather than MLflow's default ``./mlruns`` in whatever folder the step runs in. Inside
    an Azure ML job (``MLFLOW_RUN_ID`` set by the service) the job's own run and experiment
    are kept: the step's metrics must land on the run that HyperDrive or a sweep reads.
    """
    if os.environ.get(JOB_RUN_ENV):
        experiment_id = mlflow.get_run(os.environ[JOB_RUN_ENV]).info.experiment_id
        mlflow.set_experiment(experiment_id=experiment_id)
        return experiment_id
    name = experiment_name(location)
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        root = os.environ.get(ARTIFACT_ROOT_ENV)
        artifact_location = f"{root.rstrip('/')}/{name}" if root else None
        try:
            experiment_id = mlflow.create_experiment(name, artifact_location=artifact_location)
        except mlflow.exceptions.MlflowException:
            # Another process created it first.
            experiment_id = mlflow.get_experiment_by_name(name).experiment_id
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def pipeline_tags() -> dict[str, str]:
    """``{"pipeline_id": ...}`` when a pipeline runner started this step, else empty.

    Lets a run or model version be traced back to the pipeline run that made it.
    """
    value = os.environ.get(PIPELINE_ID_ENV)
    return {"pipeline_id": value} if value else {}


def git_commit(default: str = "unknown") -> str:
    """The commit of the code being run: ``GIT_COMMIT`` if set, else ``git rev-parse``."""
    value = os.environ.get("GIT_COMMIT")
    if value:
        return value
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip() or default
    except (OSError, subprocess.SubprocessError):
        return default
