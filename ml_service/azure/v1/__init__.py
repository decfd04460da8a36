"""The azureml-sdk (v1) backend: PythonScriptSteps, a HyperDriveStep and published pipelines.

- :mod:`.builder` compiles :mod:`ml_service.azure.spec` into SDK step objects offline (and
  explains how the best HyperDrive trial's model reaches ``register_prednet``);
- :mod:`.service` signs in, creates the clusters and environment, publishes idempotently,
  schedules the master on datastore changes, submits and reports runs;
- :mod:`.best_trial` is the step script that picks the best trial's model folder.

Imported only when ``AML_SDK=v1`` (:func:`ml_service.azure.backend.backend_for`): importing
it needs the ``azure-v1`` extra.
"""

from __future__ import annotations

from ml_service.azure.v1.best_trial import TRIAL_FOLDER
from ml_service.azure.v1.builder import (
    BEST_TRIAL_SCRIPT,
    BEST_TRIAL_STEP,
    METRICS_OUTPUT,
    BuildContext,
    BuiltPipeline,
    build_master,
    build_training,
    make_environment,
    offline_datastore,
    step_summary,
)
from ml_service.azure.v1.service import V1Backend, backend_in_job, connect_workspace, make_backend
from ml_service.util.env_variables import AzureSettings, Settings


def built_step_arguments(
    settings: Settings, azure: AzureSettings, location: str, init_from: str = ""
) -> dict[str, tuple[str, list[str]]]:
    """{step: (script relative to the repo root, its arguments)} in run order, read from the
    built SDK step objects with no workspace: data objects as ``<input:NAME>`` or
    ``<output:NAME>``, HyperDrive's sampled hyperparameters as ``<search:NAME>``.

    Differs from the local runner by design in two places (see :mod:`.builder`): the train
    step's ``--trained-model`` is ``outputs/trained_model`` (:data:`TRIAL_FOLDER`, each
    trial's own artifacts) and one step more, ``best_trial``, produces ``trained_model``.
    """
    context = BuildContext(settings, azure, offline_datastore(azure), make_environment(azure))
    built = build_training(context, location, init_from)
    return {s["name"]: (s["script"], s["arguments"]) for s in built.summaries()}


__all__ = [
    "BEST_TRIAL_SCRIPT",
    "BEST_TRIAL_STEP",
    "METRICS_OUTPUT",
    "TRIAL_FOLDER",
    "BuildContext",
    "BuiltPipeline",
    "V1Backend",
    "backend_in_job",
    "build_master",
    "build_training",
    "built_step_arguments",
    "connect_workspace",
    "make_backend",
    "step_summary",
]
