"""The training pipeline compiled to backend-neutral step specs for the Azure ML builders.

The local runner calls ``python code/<script> <Step.arguments(...)>``. On Azure ML the same
scripts run with the same arguments; only where the data lives changes: a step's inputs and
outputs become SDK data objects, the datastore becomes a mounted input, and the train step
runs once per trial of the SDK's search (HyperDrive or a sweep job) with the hyperparameter
flags of :mod:`videoanom.training.search_space`. A builder walks :meth:`StepSpec.tokens` and
replaces each :class:`Ref` with its SDK's object, so both SDKs and the local runner cannot
drift apart (``tests/test_azure_spec.py`` checks that).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ml_service.pipelines.definition import Step, pipeline_params, training_pipeline
from ml_service.util.env_variables import AzureSettings, Settings
from videoanom.training.search_space import SEARCH_SPACE, search_flag

# The step parameter that names the datastore: a mounted data input on Azure ML.
DATASTORE = "datastore"
# The step that the hyperparameter search runs once per trial.
SEARCH_STEP = "train"
# What the search optimises: the train step logs it (MLflow) on its run.
PRIMARY_METRIC = "val_loss"
# The source directory both SDKs upload (the repository root, less what .amlignore lists);
# step scripts are given relative to it.
SOURCE_DIR = Path(__file__).resolve().parents[2]
# The job environment (one for CPU and GPU steps), defined in environment_setup/.
ENV_DIR = SOURCE_DIR / "environment_setup"
CONDA_FILE = ENV_DIR / "conda.yml"
DOCKERFILE = ENV_DIR / "Dockerfile"
BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"
# The master step, run by the published master pipeline.
MASTER_SCRIPT = "ml_service/azure/master_step.py"


@dataclass(frozen=True)
class Ref:
    """A placeholder in a step's arguments: ``kind`` is input, output or search."""

    kind: str
    name: str


@dataclass(frozen=True)
class StepSpec:
    """One step as every backend runs it: script, data, fixed values, compute, search."""

    name: str
    script: str  # relative to SOURCE_DIR, e.g. code/train.py
    inputs: tuple[str, ...]  # data inputs, the mounted datastore included
    outputs: tuple[str, ...]
    params: dict[str, object]  # values fixed when the pipeline is built
    compute: str  # "cpu" or "gpu": the builder maps it to a cluster
    allow_reuse: bool = True
    searched: tuple[str, ...] = ()  # hyperparameters the SDK's search supplies
    order: tuple[str, ...] = field(default=(), repr=False)  # params in argument order

    def tokens(self) -> list[str | Ref]:
        """The script's arguments with :class:`Ref` where an SDK object goes.

        The order is that of :meth:`Step.arguments` (inputs, outputs, parameters), then the
        searched hyperparameters.
        """
        tokens: list[str | Ref] = []
        for name in self.inputs:
            if name != DATASTORE:
                tokens += [_flag(name), Ref("input", name)]
        for name in self.outputs:
            tokens += [_flag(name), Ref("output", name)]
        for name in self.order:
            if name == DATASTORE:
                tokens += [_flag(name), Ref("input", DATASTORE)]
            elif str(self.params[name]) != "":  # as Step.arguments: empty = script default
                tokens += [_flag(name), str(self.params[name])]
        for name in self.searched:
            tokens += [search_flag(name), Ref("search", name)]
        return tokens

    def render(self, resolve: dict[str, str]) -> list[str]:
        """The arguments with every Ref replaced by ``resolve[name]`` (tests, dry runs)."""
        return [t if isinstance(t, str) else resolve[t.name] for t in self.tokens()]


def training_specs(
    settings: Settings, location: str, init_from: str = "", freeze_layers: str = ""
) -> list[StepSpec]:
    """The training pipeline of one location, in run order, as Azure ML runs it.

    ``settings`` supplies the same budget and image size as a local run; ``trials`` becomes
    the search's budget (AzureSettings), so the train step itself runs one trial.
    """
    values = pipeline_params(settings, location, DATASTORE, init_from, freeze_layers)
    return [_spec(step, values) for step in training_pipeline().ordered()]


def _spec(step: Step, values: dict[str, object]) -> StepSpec:
    searched = tuple(SEARCH_SPACE) if step.name == SEARCH_STEP else ()
    params = {name: values[name] for name in step.params if name != DATASTORE}
    if searched:
        params["trials"] = 1  # one trial per job; the SDK's search runs the others
    inputs = ((DATASTORE,) if DATASTORE in step.params else ()) + step.inputs
    return StepSpec(
        name=step.name,
        script=f"code/{step.script}",
        inputs=inputs,
        outputs=step.outputs,
        params=params,
        compute=step.compute,
        # Azure ML reuses a step's output when its inputs' *paths* are unchanged; the datastore
        # path stays the same while new clips arrive, so a step reading it always runs.
        allow_reuse=step.allow_reuse and DATASTORE not in inputs,
        searched=searched,
        order=step.params,
    )


def master_spec(quiet_seconds: float = 300.0, max_retries: int = 3) -> StepSpec:
    """The master pipeline's one step: the datastore mounted read-only, the records
    folder (``AML_STATE_PATH``) mounted read-write at a fixed place so it persists."""
    params: dict[str, object] = {"quiet_seconds": quiet_seconds, "max_retries": max_retries}
    return StepSpec(
        name="master",
        script=MASTER_SCRIPT,
        inputs=(DATASTORE,),
        outputs=("state",),
        params=params,
        compute="cpu",
        allow_reuse=False,  # every trigger must look again
        order=(DATASTORE, *params),
    )


def job_environment(settings: Settings, azure: AzureSettings) -> dict[str, str]:
    """Environment variables for every Azure ML step: the non-secret settings.

    The master step needs the workspace coordinates to submit; the training steps need the
    budget and image size. No credential is ever among them (identity comes from the
    compute's managed identity or the job's own token).
    """
    from ml_service.util.env_variables import fields_by_name

    env: dict[str, str] = {}
    for cls, values in ((Settings, settings), (AzureSettings, azure)):
        for name, f in fields_by_name(cls).items():
            if name in ("home", "datastore", "tracking_uri", "claims_container"):
                continue  # local paths and URIs: on Azure ML the service sets these
            env[f.metadata["env"]] = str(getattr(values, name))
    return env


def compute_name(spec: StepSpec, azure: AzureSettings) -> str:
    """The cluster a step runs on."""
    return azure.gpu_cluster if spec.compute == "gpu" else azure.cpu_cluster


def search_budget(settings: Settings, azure: AzureSettings) -> tuple[int, int]:
    """(max total trials, max concurrent trials) for the SDK's search."""
    return azure.search_max_runs, min(azure.search_max_concurrent, azure.search_max_runs)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")
