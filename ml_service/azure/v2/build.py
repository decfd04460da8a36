"""The azure-ai-ml (v2) objects, built offline from :mod:`ml_service.azure.spec`.

Nothing here talks to Azure: every function returns SDK entities (environment, clusters,
command components, pipeline jobs, the master's schedule) that
:mod:`ml_service.azure.v2.backend` sends to the workspace, and that ``describe`` and the
tests validate with the SDK's own validation and dump to YAML.

How the spec maps to v2:

* every step is a ``command()`` component running ``python <script> <arguments>`` from the
  uploaded repository root (:data:`~ml_service.azure.spec.SOURCE_DIR`, less what
  ``.amlignore`` lists), the arguments being :meth:`StepSpec.tokens` with ``${{inputs.x}}``
  and ``${{outputs.x}}`` where data goes; fixed values are written into the command;
* the datastore is a pipeline input ``azureml://datastores/<name>/paths/<path>`` mounted
  read-only; data between steps are ``uri_folder`` outputs wired to the next steps' inputs;
* the train step is a sweep node: its component takes each searched hyperparameter as an
  input, the sweep samples them, and the sweep node's outputs are those of its best trial
  (lowest ``val_loss``), which is what ``register_prednet`` reads;
* the master is a one-node pipeline job whose state folder is an output bound to a fixed
  datastore path (``rw_mount``) so its records persist between runs, started by a
  :class:`~azure.ai.ml.entities.JobSchedule` with a recurrence trigger.
"""

from __future__ import annotations

import io
import logging
import math
import re
import shlex
from typing import Any

from azure.ai.ml import Input, Output, command, dsl
from azure.ai.ml.entities import (
    AmlCompute,
    Environment,
    IdentityConfiguration,
    JobSchedule,
    ManagedIdentityConfiguration,
    PipelineJob,
    RecurrenceTrigger,
)
from azure.ai.ml.entities._builders import Command, Sweep
from azure.ai.ml.sweep import BanditPolicy, Choice, LogUniform, Uniform

from ml_service.azure import spec as specs
from ml_service.azure.spec import (
    DATASTORE,
    PRIMARY_METRIC,
    Ref,
    StepSpec,
    compute_name,
    job_environment,
    master_spec,
    search_budget,
    training_specs,
)
from ml_service.util.env_variables import AzureSettings, Settings
from videoanom.training import search_space as space

# Clusters release an idle node after this long. AzureSettings has no setting for it: ten
# minutes covers the gap between a pipeline's steps (so a step finds a warm node) without
# keeping nodes for long; the master's recurrence, when shorter, keeps one CPU node warm.
IDLE_SECONDS_BEFORE_SCALE_DOWN = 600
# AML_VM_PRIORITY -> AmlCompute tier.
TIERS = {"dedicated": "dedicated", "lowpriority": "low_priority"}
# Registered component names: ``videoanom_<step>`` (v2 allows [a-z][a-z0-9_]* only).
COMPONENT_PREFIX = "videoanom_"
# The early-termination policy of a random search (AML_BANDIT_SLACK_FACTOR sets the slack).
BANDIT_EVALUATION_INTERVAL = 1
BANDIT_DELAY_EVALUATION = 2
# The location a dry run (``describe``) builds the training pipeline for.
EXAMPLE_LOCATION = "example-location"
# A placeholder word of a command: ${{inputs.NAME}} or ${{outputs.NAME}}.
_PLACEHOLDER = re.compile(r"^\$\{\{(inputs|outputs)\.([A-Za-z_][A-Za-z0-9_]*)\}\}$")
# Log lines of the SDK that only mislead here: its schema warns, whenever it validates or
# dumps a job, that an inline environment's name is not used for an anonymous registration
# (the named environment is registered as such on submission), and it announces its own
# internal experimental schema classes (``Class AutoDeleteSettingSchema: ...``).
_SDK_NOISE = re.compile(
    r"will not be used for anonymous registration|^Class \w+Schema: This is an experimental"
)


class _DropSdkNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _SDK_NOISE.search(record.getMessage()) is None


for _name in (
    "azure.ai.ml._schema.assets.environment",
    "azure.ai.ml._schema.assets.asset",
    "azure.ai.ml._utils._experimental",
):
    logging.getLogger(_name).addFilter(_DropSdkNoise())


class BuildError(RuntimeError):
    """The SDK's own validation rejected a job this module built (a bug here, not a setting)."""


# --- data locations -------------------------------------------------------------------------


def datastore_uri(azure: AzureSettings, path: str) -> str:
    """``azureml://datastores/<AML_DATASTORE_NAME>/paths/<path>``."""
    return f"azureml://datastores/{azure.datastore_name}/paths/{path.strip('/')}"


def datastore_input(azure: AzureSettings) -> Input:
    """The location folders (``AML_DATASTORE_PATH``), mounted read-only."""
    return Input(
        type="uri_folder", path=datastore_uri(azure, azure.datastore_path), mode="ro_mount"
    )


def state_output(azure: AzureSettings) -> Output:
    """The master's records (``AML_STATE_PATH``), mounted read-write at a fixed path."""
    return Output(type="uri_folder", path=datastore_uri(azure, azure.state_path), mode="rw_mount")


# --- environment and compute ----------------------------------------------------------------


def job_environment_asset(azure: AzureSettings) -> Environment:
    """The one environment of every step: the conda file on the Azure ML base image.

    No version: the SDK updates the latest version when the definition is unchanged and
    creates the next one when it changed, so publishing twice is a no-op.
    """
    return Environment(
        name=azure.environment_name,
        image=specs.BASE_IMAGE,
        conda_file=str(specs.CONDA_FILE),
        description="videoanom: PredNet training and the master step (environment_setup/)",
    )


def clusters(azure: AzureSettings) -> list[AmlCompute]:
    """The CPU and GPU clusters, with a system-assigned identity (the master step submits
    training pipelines as the CPU cluster's identity)."""
    tier = TIERS[azure.vm_priority]
    return [
        AmlCompute(
            name=getattr(azure, f"{kind}_cluster"),
            size=getattr(azure, f"{kind}_vm_size"),
            min_instances=getattr(azure, f"{kind}_min_nodes"),
            max_instances=getattr(azure, f"{kind}_max_nodes"),
            tier=tier,
            idle_time_before_scale_down=IDLE_SECONDS_BEFORE_SCALE_DOWN,
            identity=IdentityConfiguration(type="system_assigned"),
            description=f"videoanom {kind.upper()} cluster",
        )
        for kind in ("cpu", "gpu")
    ]


# --- components -----------------------------------------------------------------------------


def render_command(spec: StepSpec) -> str:
    """``python <script> <arguments>`` with ``${{inputs.x}}``/``${{outputs.x}}`` for the data
    and the searched hyperparameters; fixed values are shell-quoted into the command."""
    parts = ["python", shlex.quote(spec.script)]
    for token in spec.tokens():
        if isinstance(token, Ref):
            kind = "outputs" if token.kind == "output" else "inputs"
            parts.append(f"${{{{{kind}.{token.name}}}}}")
        else:
            parts.append(shlex.quote(token))
    return " ".join(parts)


def component_name(spec: StepSpec) -> str:
    return COMPONENT_PREFIX + re.sub(r"[^a-z0-9_]", "_", spec.name.lower())


def reusable(spec: StepSpec) -> bool:
    """Whether Azure ML may reuse the step's last output (``is_deterministic``).

    A step that reads the datastore never is: Azure ML keys reuse on the input's path, not
    on its content, and the datastore path stays the same while new clips arrive. Steps
    downstream get fresh outputs of that step, so they rerun too.
    """
    return spec.allow_reuse and DATASTORE not in spec.inputs


def step_component(
    spec: StepSpec,
    settings: Settings,
    azure: AzureSettings,
    environment: Environment | None = None,
) -> Command:
    """One step as a ``command()`` component (callable to make a pipeline node)."""
    inputs = {name: Input(type="uri_folder", mode="ro_mount") for name in spec.inputs}
    for name in spec.searched:
        inputs[name] = _search_input(name, space.SEARCH_SPACE[name])
    outputs = {name: Output(type="uri_folder", mode="rw_mount") for name in spec.outputs}
    return command(
        name=component_name(spec),
        display_name=spec.name,
        description=f"videoanom step {spec.name}: python {spec.script}",
        command=render_command(spec),
        inputs=inputs,
        outputs=outputs,
        code=str(specs.SOURCE_DIR),
        environment=environment or job_environment_asset(azure),
        environment_variables=job_environment(settings, azure),
        compute=compute_name(spec, azure),
        is_deterministic=reusable(spec),
    )


def _search_input(name: str, dist: space.Distribution) -> Input:
    default = space.DEFAULTS.get(name)
    if isinstance(dist, space.Choice):
        kind = "integer" if all(isinstance(v, int) for v in dist.values) else "string"
        if kind == "string":
            default = None if default is None else str(default)
        return Input(type=kind, default=default)
    return Input(type="number", default=default)


# --- the sweep ------------------------------------------------------------------------------


def search_space(sampling: str) -> dict[str, Any]:
    """The project's SEARCH_SPACE as a sweep search space.

    A sweep's ``LogUniform(min_value, max_value)`` samples ``exp(uniform(min, max))``: its
    bounds are natural logarithms. Bayesian sampling accepts only choice, uniform and
    quniform, so with ``bayesian`` a log-uniform range is searched uniformly over the same
    bounds.
    """
    result: dict[str, Any] = {}
    for name, dist in space.SEARCH_SPACE.items():
        if isinstance(dist, space.Choice):
            result[name] = Choice(values=list(dist.values))
        elif isinstance(dist, space.LogUniform):
            if sampling == "bayesian":
                result[name] = Uniform(min_value=dist.low, max_value=dist.high)
            else:
                result[name] = LogUniform(
                    min_value=math.log(dist.low), max_value=math.log(dist.high)
                )
        elif isinstance(dist, space.Uniform):
            result[name] = Uniform(min_value=dist.low, max_value=dist.high)
        else:
            raise TypeError(f"unknown distribution for {name}: {dist!r}")
    return result


def early_termination(azure: AzureSettings) -> BanditPolicy | None:
    """Bandit for random sampling; none for bayesian (which supports no early termination).

    Bandit compares the values of ``val_loss`` each trial has logged on its own run so far.
    It can stop a trial early only if the train step logs ``val_loss`` on that run while it
    trains (per epoch); a value logged once at the end makes the policy a no-op.
    """
    if azure.search_sampling == "bayesian":
        return None
    return BanditPolicy(
        slack_factor=float(azure.bandit_slack_factor),
        evaluation_interval=BANDIT_EVALUATION_INTERVAL,
        delay_evaluation=BANDIT_DELAY_EVALUATION,
    )


def _sweep(node: Command, settings: Settings, azure: AzureSettings) -> Any:
    total, concurrent = search_budget(settings, azure)
    return node.sweep(
        primary_metric=PRIMARY_METRIC,
        goal="minimize",
        sampling_algorithm=azure.search_sampling,
        max_total_trials=total,
        max_concurrent_trials=concurrent,
        early_termination_policy=early_termination(azure),
        search_space=search_space(azure.search_sampling),
    )


# --- pipelines ------------------------------------------------------------------------------


def training_components(
    settings: Settings, azure: AzureSettings, location: str, init_from: str = ""
) -> list[tuple[StepSpec, Command]]:
    """Every step of the location's training pipeline with its component, in run order."""
    environment = job_environment_asset(azure)
    return [
        (spec, step_component(spec, settings, azure, environment))
        for spec in training_specs(settings, location, init_from)
    ]


def shared_components(settings: Settings, azure: AzureSettings) -> list[Command]:
    """The components ``publish`` registers: every training step whose command is the same
    for every location (``data_prep`` names its location, so it is registered, by content,
    with each location's job), then the master's, named after the master pipeline."""
    first, second = (
        training_components(settings, azure, probe) for probe in ("location-a", "location-b")
    )
    shared = [
        component
        for (_, component), (_, other) in zip(first, second, strict=True)
        if component.component.command == other.component.command
    ]
    return [*shared, master_component(settings, azure)]


def training_pipeline_job(
    settings: Settings, azure: AzureSettings, location: str, init_from: str = ""
) -> PipelineJob:
    """The location's training pipeline: six nodes named after the steps, train a sweep."""
    steps = training_components(settings, azure, location, init_from)
    pipeline_name = azure.training_pipeline_name(location)

    @dsl.pipeline(
        name=_identifier(pipeline_name),
        display_name=pipeline_name,
        description=f"videoanom training pipeline of location {location!r}",
        experiment_name=azure.training_experiment,
        default_compute=azure.cpu_cluster,
    )
    def training(datastore):  # no annotations: dsl reads them as SDK types
        produced: dict[str, Any] = {}
        for spec, component in steps:
            bindings = {
                name: datastore if name == DATASTORE else produced[name] for name in spec.inputs
            }
            node = component(**bindings)
            if spec.searched:
                node = _sweep(node, settings, azure)
            node.name = spec.name
            for name in spec.outputs:
                produced[name] = node.outputs[name]

    job = training(datastore=datastore_input(azure))
    job.settings.continue_on_step_failure = False
    job.tags = training_tags(location)
    return job


def training_tags(location: str) -> dict[str, str]:
    return {"videoanom": "training", "location": location}


def master_component(settings: Settings, azure: AzureSettings) -> Command:
    """The master step's component (``ml_service/azure/master_step.py``), named after the
    master pipeline."""
    component = step_component(master_spec(), settings, azure)
    component.component.name = _identifier(azure.master_pipeline_name)
    return component


def master_pipeline_job(settings: Settings, azure: AzureSettings) -> PipelineJob:
    """The master pipeline: one node, datastore read-only, state folder persistent.

    The node runs as the CPU cluster's managed identity, which is what
    :func:`ml_service.azure.v2.backend.backend_in_job` authenticates with to submit.
    """
    component = master_component(settings, azure)
    spec = master_spec()

    @dsl.pipeline(
        name=_identifier(azure.master_pipeline_name),
        display_name=azure.master_pipeline_name,
        description="videoanom master: submit a training pipeline for every location that "
        "needs a detector",
        experiment_name=azure.master_experiment,
        default_compute=azure.cpu_cluster,
    )
    def master(datastore):  # no annotations: dsl reads them as SDK types
        node = component(datastore=datastore)
        node.name = spec.name
        node.outputs.state = state_output(azure)
        node.identity = ManagedIdentityConfiguration()

    job = master(datastore=datastore_input(azure))
    job.tags = master_tags()
    return job


def master_tags() -> dict[str, str]:
    return {"videoanom": "master"}


def schedule_name(azure: AzureSettings) -> str:
    return f"{azure.master_pipeline_name}-schedule"


def master_schedule(settings: Settings, azure: AzureSettings) -> JobSchedule:
    """Run the master pipeline every ``AML_POLLING_INTERVAL_MINUTES`` minutes.

    azure-ai-ml has no datastore-change trigger (v1's ``Schedule(datastore=...)``): a v2
    schedule is a recurrence or a cron expression, so the master polls. A poll that finds
    nothing new only reads the datastore and exits.
    """
    return JobSchedule(
        name=schedule_name(azure),
        display_name=schedule_name(azure),
        description=f"run {azure.master_pipeline_name} every "
        f"{azure.polling_interval_minutes} minutes",
        trigger=RecurrenceTrigger(frequency="minute", interval=azure.polling_interval_minutes),
        create_job=master_pipeline_job(settings, azure),
        tags=master_tags(),
    )


def _identifier(name: str) -> str:
    """A v2 component name ([a-z][a-z0-9_]*) from a display name such as prednet-my-camera."""
    slug = re.sub(r"[^a-z0-9_]", "_", name.lower())
    return slug if slug[:1].isalpha() else f"p_{slug}"


# --- validation, YAML, arguments ------------------------------------------------------------


def validate(entity: Any) -> Any:
    """The SDK's own offline validation of a job or a schedule (and the job it holds);
    returns the entity, or raises :class:`BuildError` naming every problem."""
    result = entity._validate()
    if not result.passed:
        problems = "; ".join(f"{k}: {v}" for k, v in result.error_messages.items())
        raise BuildError(
            f"azure-ai-ml rejects {type(entity).__name__} {entity.display_name}: {problems}"
        )
    return entity


def to_yaml(entity: Any) -> str:
    """The entity as the SDK dumps it (what ``az ml job create -f`` would read)."""
    stream = io.StringIO()
    entity.dump(stream)
    return stream.getvalue()


def node_command(node: Any) -> tuple[str, set[str]]:
    """A node's command string and the names its sweep searches (empty for a command)."""
    if isinstance(node, Sweep):  # the command is the trial component's
        return node.trial.command, set(node.search_space or {})
    return node.component.command, set()


def parse_command(command_line: str, searched: set[str]) -> tuple[str, list[str]]:
    """``python <script> <args>`` -> (script, args) with placeholders rendered as
    ``<input:NAME>``, ``<output:NAME>`` and ``<search:NAME>``."""
    words = shlex.split(command_line)
    if len(words) < 2 or words[0] != "python":
        raise BuildError(f"not a python command: {command_line!r}")
    rendered = []
    for word in words[2:]:
        match = _PLACEHOLDER.match(word)
        if match is None:
            rendered.append(word)
        elif match[1] == "outputs":
            rendered.append(f"<output:{match[2]}>")
        elif match[2] in searched:
            rendered.append(f"<search:{match[2]}>")
        else:
            rendered.append(f"<input:{match[2]}>")
    return words[1], rendered


def built_step_arguments(
    settings: Settings, azure: AzureSettings, location: str, init_from: str = ""
) -> dict[str, tuple[str, list[str]]]:
    """For every training step (run order): the script (relative to the repository root) and
    its arguments, read back from the built pipeline job's command strings."""
    job = training_pipeline_job(settings, azure, location, init_from)
    order = [spec.name for spec in training_specs(settings, location, init_from)]
    return {name: parse_command(*node_command(job.jobs[name])) for name in order}
