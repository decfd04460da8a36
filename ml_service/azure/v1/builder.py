"""The training and master pipelines as azureml-sdk (v1) step objects, built offline.

Everything here builds SDK objects without talking to a workspace: the data wiring, the
HyperDrive search and the step configurations are compiled from
:func:`ml_service.azure.spec.training_specs` (each :class:`~ml_service.azure.spec.Ref`
becomes a ``PipelineData`` between steps or the mounted datastore), and read back from the
built objects by :func:`step_summary` for ``describe``, the publish fingerprint and tests.

How the best HyperDrive trial's model reaches ``register_prednet``
------------------------------------------------------------------
A ``HyperDriveStep`` runs every trial with the same arguments, so a ``PipelineData`` output
of the step is one folder shared by all trials (the last to finish wins, not the best), and
its ``TrainingOutput("Model", model_file=...)`` copies one *file* of the best child, while
``register_prednet`` reads a *folder* (``train_result.json`` beside ``prednet.keras``). So:

1. ``train`` (the HyperDriveStep) runs ``code/train.py --trained-model outputs/trained_model``:
   each trial writes its model into its own ``./outputs``, which Azure ML uploads as that
   trial's run artifacts; the step's ``metrics_output`` (``hyperdrive_metrics``) records
   every trial's logged metrics, keyed by child run id.
2. ``best_trial`` (``ml_service/azure/v1/best_trial.py``, CPU) reads those metrics, takes the
   completed trial with the lowest final ``val_loss`` and copies its ``outputs/trained_model``
   artifacts into the ``trained_model`` PipelineData.
3. ``register_prednet`` and the later steps read ``trained_model`` as they do locally.

So the v1 pipeline has one step more than the local one, and the train step's
``--trained-model`` is the fixed path ``outputs/trained_model`` (:data:`TRIAL_FOLDER`), not a
data object; every other argument is the local runner's.

Bayesian sampling accepts only choice/uniform/quniform, so a log-uniform hyperparameter is
sampled uniformly between the same bounds there (random sampling keeps ``loguniform``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azureml.core import Environment, ScriptRunConfig
from azureml.core.runconfig import RunConfiguration
from azureml.data import OutputFileDatasetConfig
from azureml.data.azure_storage_datastore import AzureBlobDatastore
from azureml.data.data_reference import DataReference
from azureml.pipeline.core import Pipeline, PipelineData
from azureml.pipeline.steps import HyperDriveStep, PythonScriptStep
from azureml.train.hyperdrive import (
    BanditPolicy,
    BayesianParameterSampling,
    HyperDriveConfig,
    PrimaryMetricGoal,
    RandomParameterSampling,
    choice,
    loguniform,
    uniform,
)

from ml_service.azure import spec as spec_module
from ml_service.azure.spec import (
    DATASTORE,
    PRIMARY_METRIC,
    SOURCE_DIR,
    Ref,
    StepSpec,
    compute_name,
    job_environment,
    master_spec,
    search_budget,
    training_specs,
)
from ml_service.azure.v1.best_trial import TRIAL_FOLDER
from ml_service.util.env_variables import AzureSettings, Settings, SettingsError
from videoanom.training.search_space import (
    SEARCH_SPACE,
    Choice,
    Distribution,
    LogUniform,
    Uniform,
    search_flag,
)

logger = logging.getLogger(__name__)

BEST_TRIAL_STEP = "best_trial"
BEST_TRIAL_SCRIPT = "ml_service/azure/v1/best_trial.py"
METRICS_OUTPUT = "hyperdrive_metrics"
STATE_OUTPUT = "state"
# Code whose change means a published pipeline must be published again (its snapshot; the
# conda file counts through the environment).
SNAPSHOT_FOLDERS = ("code", "ml_service")
# HyperDrive's names for the samplings, as AML_SEARCH_SAMPLING spells them.
SAMPLING_NAMES = {"RANDOM": "random", "BayesianOptimization": "bayesian"}
# Where the description shows a location's name.
ANY_LOCATION = "<location>"


@dataclass
class BuildContext:
    """What every step shares: settings, the datastore object and the job environment."""

    settings: Settings
    azure: AzureSettings
    datastore: Any  # an azureml datastore (the workspace's, or an offline stand-in)
    environment: Environment

    @property
    def env_vars(self) -> dict[str, str]:
        return job_environment(self.settings, self.azure)


@dataclass
class BuiltPipeline:
    """A pipeline's steps in run order, ready for ``azureml.pipeline.core.Pipeline``."""

    name: str
    description: str
    steps: list[Any]
    context: BuildContext

    def pipeline(self, workspace: Any) -> Pipeline:
        """The SDK pipeline (needs a workspace: the graph resolves computes and snapshots)."""
        return Pipeline(workspace=workspace, steps=self.steps, description=self.description)

    def summaries(self) -> list[dict[str, Any]]:
        return [step_summary(step) for step in self.steps]

    def fingerprint(self) -> str:
        """Changes when anything a published copy would run differs (steps, code, env)."""
        payload = {
            "name": self.name,
            "steps": self.summaries(),
            "environment": environment_summary(self.context.environment),
            "snapshot": snapshot_hash(),
        }
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode())
        return digest.hexdigest()[:16]


# ---------------------------------------------------------------- shared objects


def offline_datastore(azure: AzureSettings) -> AzureBlobDatastore:
    """A stand-in for the workspace datastore when building without a workspace."""
    return AzureBlobDatastore(
        None, azure.datastore_name, container_name="offline", account_name="offline"
    )


def make_environment(azure: AzureSettings) -> Environment:
    """The one job environment: environment_setup/conda.yml on the Azure ML base image."""
    conda_file = Path(spec_module.CONDA_FILE)
    if not conda_file.is_file():
        raise SettingsError(f"{conda_file} is missing: it defines the Azure ML job environment")
    environment = Environment.from_conda_specification(azure.environment_name, str(conda_file))
    environment.docker.base_image = spec_module.BASE_IMAGE
    return environment


def environment_summary(environment: Environment) -> dict[str, Any]:
    conda = environment.python.conda_dependencies
    return {
        "name": environment.name,
        "base_image": environment.docker.base_image,
        "conda": conda.serialize_to_string() if conda is not None else "",
    }


def check_paths(azure: AzureSettings) -> None:
    """The master's records must live outside the folder whose changes trigger it."""
    data = azure.datastore_path.strip("/")
    state = azure.state_path.strip("/")
    if not state or state == data or state.startswith(data + "/") or not data:
        raise SettingsError(
            f"AML_STATE_PATH={azure.state_path!r} must be a folder outside "
            f"AML_DATASTORE_PATH={azure.datastore_path!r}: the master's own records would "
            "trigger its schedule (and look like a location)"
        )


def datastore_input(context: BuildContext) -> DataReference:
    """The location folders (``AML_DATASTORE_PATH`` of ``AML_DATASTORE_NAME``), mounted."""
    return DataReference(
        context.datastore,
        data_reference_name=DATASTORE,
        path_on_datastore=context.azure.datastore_path,
        mode="mount",
    )


def run_configuration(context: BuildContext, compute: str) -> RunConfiguration:
    """A step's run configuration: its cluster, the job environment, the settings."""
    config = RunConfiguration()
    config.target = compute
    config.environment = context.environment
    config.environment_variables = dict(context.env_vars)
    return config


# ---------------------------------------------------------------- the search


def distribution(dist: Distribution, sampling: str) -> list:
    """One SEARCH_SPACE entry as a HyperDrive parameter expression."""
    if isinstance(dist, Choice):
        return choice(*dist.values)
    if isinstance(dist, LogUniform):
        if sampling == "bayesian":  # Bayesian sampling has no loguniform
            return uniform(dist.low, dist.high)
        return loguniform(math.log(dist.low), math.log(dist.high))  # natural-log bounds
    if isinstance(dist, Uniform):
        return uniform(dist.low, dist.high)
    raise TypeError(f"unknown distribution {dist!r}")


def parameter_sampling(sampling: str, names: tuple[str, ...]) -> Any:
    """The search over ``names`` of SEARCH_SPACE, keyed by the train step's flags."""
    space = {search_flag(name): distribution(SEARCH_SPACE[name], sampling) for name in names}
    if sampling == "bayesian":
        return BayesianParameterSampling(space)
    return RandomParameterSampling(space)


def hyperdrive_config(
    context: BuildContext, spec: StepSpec, arguments: list[Any]
) -> HyperDriveConfig:
    azure = context.azure
    script = ScriptRunConfig(
        source_directory=str(SOURCE_DIR),
        script=spec.script,
        arguments=arguments,
        compute_target=compute_name(spec, azure),
        environment=context.environment,
    )
    script.run_config.environment_variables = dict(context.env_vars)
    policy = None
    if azure.search_sampling == "random":
        policy = BanditPolicy(
            slack_factor=float(azure.bandit_slack_factor), evaluation_interval=1, delay_evaluation=2
        )
    total, concurrent = search_budget(context.settings, azure)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # the SDK prints advice; keep stdout for output
        config = HyperDriveConfig(
            run_config=script,
            hyperparameter_sampling=parameter_sampling(azure.search_sampling, spec.searched),
            policy=policy,
            primary_metric_name=PRIMARY_METRIC,
            primary_metric_goal=PrimaryMetricGoal.MINIMIZE,
            max_total_runs=total,
            max_concurrent_runs=concurrent,
        )
    for line in printed.getvalue().splitlines():
        if line.strip():
            logger.info("HyperDrive: %s", line.strip())
    return config


# ---------------------------------------------------------------- pipelines


def build_training(context: BuildContext, location: str, init_from: str = "") -> BuiltPipeline:
    """One location's training pipeline: the spec's steps plus ``best_trial``."""
    azure = context.azure
    specs = training_specs(context.settings, location, init_from)
    data: dict[str, Any] = {DATASTORE: datastore_input(context)}
    for spec in specs:
        for name in spec.outputs:
            data[name] = PipelineData(name)
    steps: list[Any] = []
    for spec in specs:
        if spec.searched:
            steps += _search_steps(context, spec, data)
        else:
            steps.append(_script_step(context, spec, data))
    name = (
        azure.training_pipeline_name(location)
        if location != ANY_LOCATION
        else f"{azure.training_pipeline_prefix}-{ANY_LOCATION}"
    )
    return BuiltPipeline(name, f"videoanom training pipeline for {location}", steps, context)


def build_master(context: BuildContext) -> BuiltPipeline:
    """The master pipeline: one step over the mounted datastore and state folder."""
    azure = context.azure
    check_paths(azure)
    spec = master_spec()
    state = OutputFileDatasetConfig(
        name=STATE_OUTPUT, destination=(context.datastore, azure.state_path)
    ).as_mount()
    data = {DATASTORE: datastore_input(context), STATE_OUTPUT: state}
    step = _script_step(context, spec, data)
    return BuiltPipeline(
        azure.master_pipeline_name,
        "videoanom master: trains a detector for every location that needs one",
        [step],
        context,
    )


def _script_step(context: BuildContext, spec: StepSpec, data: dict[str, Any]) -> PythonScriptStep:
    return PythonScriptStep(
        name=spec.name,
        script_name=spec.script,
        source_directory=str(SOURCE_DIR),
        arguments=[t if isinstance(t, str) else data[t.name] for t in spec.tokens()],
        inputs=[data[name] for name in spec.inputs],
        outputs=[data[name] for name in spec.outputs],
        compute_target=compute_name(spec, context.azure),
        runconfig=run_configuration(context, compute_name(spec, context.azure)),
        allow_reuse=spec.allow_reuse,
    )


def _search_steps(context: BuildContext, spec: StepSpec, data: dict[str, Any]) -> list[Any]:
    """The HyperDriveStep and the step that hands its best trial's model on."""
    if len(spec.outputs) != 1:
        raise ValueError(f"{spec.name}: the searched step must have one output folder")
    (output,) = spec.outputs
    tokens = spec.tokens()
    arguments: list[Any] = []
    for flag, value in zip(tokens[::2], tokens[1::2], strict=True):
        if isinstance(value, Ref) and value.kind == "search":
            continue  # HyperDrive appends the sampled value
        if isinstance(value, Ref) and value.kind == "output":
            value = TRIAL_FOLDER  # each trial's own ./outputs (see the module docstring)
        elif isinstance(value, Ref):
            value = data[value.name]
        arguments += [flag, value]
    metrics = PipelineData(METRICS_OUTPUT)
    search = HyperDriveStep(
        name=spec.name,
        hyperdrive_config=hyperdrive_config(context, spec, arguments),
        inputs=[data[name] for name in spec.inputs],
        metrics_output=metrics,
        allow_reuse=spec.allow_reuse,
    )
    best = PythonScriptStep(
        name=BEST_TRIAL_STEP,
        script_name=BEST_TRIAL_SCRIPT,
        source_directory=str(SOURCE_DIR),
        arguments=[
            "--metrics",
            metrics,
            "--" + output.replace("_", "-"),
            data[output],
            "--trial-folder",
            TRIAL_FOLDER,
            "--primary-metric",
            PRIMARY_METRIC,
            "--goal",
            "minimize",
            "--search-step",
            spec.name,
        ],
        inputs=[metrics],
        outputs=[data[output]],
        compute_target=context.azure.cpu_cluster,
        runconfig=run_configuration(context, context.azure.cpu_cluster),
        allow_reuse=spec.allow_reuse,
    )
    return [search, best]


# ---------------------------------------------------------------- reading built steps back


def data_name(obj: Any) -> str:
    """The name of an SDK data object as the pipeline wires it."""
    if isinstance(obj, DataReference):
        return obj.data_reference_name
    name = getattr(obj, "name", None)
    if isinstance(name, str):
        return name
    raise TypeError(f"not a data object: {obj!r}")


def _is_output(obj: Any, outputs: list[Any]) -> bool:
    return any(obj is o for o in outputs) or isinstance(obj, OutputFileDatasetConfig)


def render_argument(arg: Any, outputs: list[Any], inputs: list[Any] = ()) -> str:
    """An argument as text: data objects become ``<input:NAME>`` / ``<output:NAME>``.

    The SDK replaces an output dataset in a step's arguments by its placeholder string
    (``arg_val``, e.g. ``DatasetOutputConfig:state``); that string is matched back too.
    """
    if isinstance(arg, str):
        for kind, objects in (("output", outputs), ("input", inputs)):
            for obj in objects:
                if getattr(obj, "arg_val", None) == arg:
                    return f"<{kind}:{data_name(obj)}>"
        return arg
    if isinstance(arg, (int, float)):
        return str(arg)
    kind = "output" if _is_output(arg, outputs) else "input"
    return f"<{kind}:{data_name(arg)}>"


def data_location(obj: Any) -> str:
    """Where a data object lives: ``datastore:path (mode)`` or ``pipeline data``."""
    if isinstance(obj, DataReference):
        return f"{obj.datastore.name}:{obj.path_on_datastore} ({obj.mode})"
    if isinstance(obj, OutputFileDatasetConfig):
        destination = obj.destination
        mode = getattr(obj, "mode", "")
        if destination:
            return f"{destination[0].name}:{destination[1]} (read-write {mode or 'mount'})"
        return f"output dataset ({mode})"
    return "pipeline data (mount)"


def step_summary(step: Any) -> dict[str, Any]:
    """What a built step runs, read back from the SDK object (never from the spec)."""
    outputs = list(step._outputs)
    arguments = [render_argument(a, outputs, list(step._inputs)) for a in step._arguments]
    summary: dict[str, Any] = {"name": step.name}
    if isinstance(step, HyperDriveStep):
        config = step._hyperdrive_config
        script = config.run_config  # the ScriptRunConfig of every trial
        space = config._generator_config["parameter_space"]
        for flag in space:
            arguments += [flag, f"<search:{flag[2:].replace('-', '_')}>"]
        policy = config._policy_config
        summary |= {
            "kind": "hyperdrive",
            "script": script.script,
            "compute": script.run_config.target,
            "environment_variables": dict(script.run_config.environment_variables or {}),
            "search": {
                "sampling": config._generator_config["name"],
                "space": {flag: list(expr) for flag, expr in space.items()},
                "policy": {"name": policy["name"], **(policy.get("properties") or {})},
                "primary_metric": dict(config._primary_metric_config),
                "max_total_runs": config._max_total_runs,
                "max_concurrent_runs": config._max_concurrent_runs,
            },
        }
    else:
        compute = step._compute_target
        summary |= {
            "kind": "script",
            "script": step._script_name,
            "compute": compute if isinstance(compute, str) else compute.name,
            "environment_variables": dict(step._runconfig.environment_variables or {}),
        }
    summary |= {
        "arguments": arguments,
        "inputs": {data_name(i): data_location(i) for i in step._inputs},
        "outputs": {data_name(o): data_location(o) for o in outputs},
        "allow_reuse": step._allow_reuse,
    }
    return summary


def snapshot_hash(root: Path = SOURCE_DIR) -> str:
    """Hash of the code a published pipeline's snapshot runs (steps, builders, master)."""
    digest = hashlib.sha256()
    for folder in SNAPSHOT_FOLDERS:
        for path in sorted((root / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                digest.update(path.relative_to(root).as_posix().encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------- describe


def describe_pipeline(built: BuiltPipeline, header: str) -> list[str]:
    lines = [header]
    for number, summary in enumerate(built.summaries(), start=1):
        lines.append(f"  {number}. {summary['name']} on {summary['compute']}: {summary['script']}")
        if summary["kind"] == "hyperdrive":
            lines[-1] += " (HyperDrive, one trial per run)"
        lines.append(f"       args: {' '.join(summary['arguments'])}")
        for kind in ("inputs", "outputs"):
            if summary[kind]:
                items = ", ".join(f"{n} = {where}" for n, where in summary[kind].items())
                lines.append(f"       {kind}: {items}")
        lines.append(f"       reuse: {'yes' if summary['allow_reuse'] else 'no'}")
        if summary["kind"] == "hyperdrive":
            lines += _describe_search(summary["search"])
    return lines


def _describe_search(search: dict[str, Any]) -> list[str]:
    metric = search["primary_metric"]
    policy = search["policy"]
    if policy["name"].lower() == "bandit":
        policy_text = (
            f"bandit (slack factor {policy.get('slack_factor')}, every "
            f"{policy.get('evaluation_interval')} after {policy.get('delay_evaluation')})"
        )
    else:
        policy_text = "none (every trial runs to the end)"
    sampling = SAMPLING_NAMES.get(search["sampling"], search["sampling"])
    lines = [
        f"       search: {sampling} sampling, {search['max_total_runs']} trials, "
        f"{search['max_concurrent_runs']} at once, {metric['goal']} {metric['name']}, "
        f"early termination: {policy_text}"
    ]
    for flag, (kind, values) in search["space"].items():
        if kind == "choice":
            text = ", ".join(str(v) for v in values[0])
        elif kind == "loguniform":
            text = f"{math.exp(values[0]):.4g} .. {math.exp(values[1]):.4g} (ln {values[0]:.4f}"
            text += f" .. {values[1]:.4f})"
        else:
            text = f"{values[0]} .. {values[1]}"
        lines.append(f"         {flag}: {kind}({text})")
    return lines
