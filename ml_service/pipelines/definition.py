"""The training pipeline, declared once.

A step is a script in ``code/`` with named inputs, outputs and parameters. The names are
the contract between steps: the order comes from a topological sort of who produces what
(never hand-written ``run_after`` chains), and a pipeline's external inputs are derived.
The local runner and the Azure ML builders are both compiled from these objects.
"""

from __future__ import annotations

import graphlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ml_service.util.env_variables import Settings

CODE_DIR = Path(__file__).resolve().parents[2] / "code"


@dataclass(frozen=True)
class Step:
    """One pipeline step: ``python code/<script> --<input> P --<output> P --<param> V``."""

    name: str
    script: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    compute: str = "cpu"  # backend hint: "cpu" or "gpu"
    allow_reuse: bool = True

    def arguments(self, paths: dict[str, Path], params: dict[str, object]) -> list[str]:
        """The script's command-line arguments for given data paths and parameter values."""
        args: list[str] = []
        for name in (*self.inputs, *self.outputs):
            args += [_flag(name), str(paths[name])]
        for name in self.params:
            if str(params[name]) != "":  # an empty value means the script's default
                args += [_flag(name), str(params[name])]
        return args


@dataclass(frozen=True)
class Pipeline:
    name: str
    steps: tuple[Step, ...]
    defaults: dict[str, object] = field(default_factory=dict)

    def ordered(self) -> list[Step]:
        """Steps in an order where every input is produced before it is used."""
        producers = self.producers()
        graph = {
            s.name: {producers[i].name for i in s.inputs if i in producers} for s in self.steps
        }
        by_name = {s.name: s for s in self.steps}
        return [by_name[name] for name in graphlib.TopologicalSorter(graph).static_order()]

    def producers(self) -> dict[str, Step]:
        result: dict[str, Step] = {}
        for step in self.steps:
            for output in step.outputs:
                if output in result:
                    raise ValueError(
                        f"{output!r} is produced by both {result[output].name} and {step.name}"
                    )
                result[output] = step
        return result

    def external_inputs(self) -> set[str]:
        """Data the pipeline needs but no step produces (must be supplied by the caller)."""
        produced = set(self.producers())
        return {i for s in self.steps for i in s.inputs if i not in produced}

    def parameters(self) -> set[str]:
        return {p for s in self.steps for p in s.params}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def training_pipeline() -> Pipeline:
    """The six steps for one location, as in the seed: data_prep -> train (with search) ->
    register_prednet -> batch_scoring -> train_classifier -> register_classifier."""
    return Pipeline(
        name="prednet-training",
        steps=(
            Step(
                "data_prep",
                "data_prep.py",
                outputs=("prepared_data",),
                params=("datastore", "location", "height", "width", "channels", "seed"),
            ),
            Step(
                "train",
                "train.py",
                inputs=("prepared_data",),
                outputs=("trained_model",),
                params=(
                    "trials",
                    "max_epochs",
                    "nt",
                    "windows_per_epoch",
                    "seed",
                    "init_from",
                    "freeze_layers",
                ),
                compute="gpu",
            ),
            Step(
                "register_prednet",
                "register_prednet.py",
                inputs=("prepared_data", "trained_model"),
                outputs=("registered_prednet",),
            ),
            Step(
                "batch_scoring",
                "batch_scoring.py",
                inputs=("prepared_data", "registered_prednet"),
                outputs=("scores",),
                compute="gpu",
            ),
            Step(
                "train_classifier",
                "train_classifier.py",
                inputs=("prepared_data", "scores"),
                outputs=("classifier",),
                params=("seed",),
            ),
            Step(
                "register_classifier",
                "register_classifier.py",
                inputs=("prepared_data", "classifier"),
                outputs=("registered_classifier",),
            ),
        ),
        defaults={"init_from": "", "freeze_layers": "", "seed": 0},
    )


def pipeline_params(
    settings: Settings,
    location: str,
    datastore: str,
    init_from: str = "",
    freeze_layers: str = "",
) -> dict[str, object]:
    """Every parameter value of :func:`training_pipeline` for one location, on any backend."""
    return {
        "datastore": datastore,
        "location": location,
        "height": settings.image_height,
        "width": settings.image_width,
        "channels": settings.image_channels,
        "seed": settings.seed,
        "trials": settings.trials,
        "max_epochs": settings.max_epochs,
        "nt": settings.nt,
        "windows_per_epoch": settings.windows_per_epoch,
        "init_from": init_from,
        "freeze_layers": freeze_layers,
    }
