"""The one PredNet hyperparameter search space, for Optuna here and HyperDrive/sweeps on Azure.

The space is data (a name -> distribution mapping), so each backend only translates it:
:func:`suggest` for Optuna, and the Azure builders map the same objects to HyperDrive's
``choice``/``uniform``/``loguniform`` or a sweep job's search space. Ranges follow the
seed's HyperDrive space (batch size, filter sizes, stack sizes, learning rate, decay),
scaled down to what trains in minutes on a 2-core CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Choice:
    """One of a few values (strings for tuples, so every backend can hold them)."""

    values: tuple[Any, ...]


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float


@dataclass(frozen=True)
class LogUniform:
    low: float
    high: float


Distribution = Choice | Uniform | LogUniform

# Stack sizes are the channels of layers 1..L-1; layer 0 always has the image's channels.
SEARCH_SPACE: dict[str, Distribution] = {
    "batch_size": Choice((4, 8)),
    "filter_sizes": Choice(("3,3,3", "5,3,3")),
    "stack_sizes": Choice(("16,32,64", "12,24,48", "24,48,96")),
    "learning_rate": LogUniform(1e-3, 6e-3),
    "lr_decay": Uniform(0.0, 0.3),
}

# What a trial uses when no search runs (also the first trial Optuna tries).
DEFAULTS: dict[str, Any] = {
    "batch_size": 4,
    "filter_sizes": "3,3,3",
    "stack_sizes": "16,32,64",
    "learning_rate": 3e-3,
    "lr_decay": 0.1,
}

# Parameters that define the network's shape: fixed by the source model when warm-starting.
ARCHITECTURE_PARAMS = ("filter_sizes", "stack_sizes")


def suggest(trial: Any, space: dict[str, Distribution] | None = None) -> dict[str, Any]:
    """Ask an Optuna trial for one value of every parameter in ``space``."""
    params = {}
    for name, dist in (space or SEARCH_SPACE).items():
        if isinstance(dist, Choice):
            params[name] = trial.suggest_categorical(name, list(dist.values))
        elif isinstance(dist, LogUniform):
            params[name] = trial.suggest_float(name, dist.low, dist.high, log=True)
        elif isinstance(dist, Uniform):
            params[name] = trial.suggest_float(name, dist.low, dist.high)
        else:
            raise TypeError(f"unknown distribution for {name}: {dist!r}")
    return params


def search_flag(name: str) -> str:
    """The train step's flag that fixes one hyperparameter: ``lr_decay`` -> ``--lr-decay``."""
    return "--" + name.replace("_", "-")


def without(names: tuple[str, ...] | list[str]) -> dict[str, Distribution]:
    """The search space less some parameters (e.g. the architecture when warm-starting)."""
    return {k: v for k, v in SEARCH_SPACE.items() if k not in names}


def parse_int_list(text: str | tuple | list) -> tuple[int, ...]:
    """``"16,32,64"`` -> ``(16, 32, 64)``; tuples pass through."""
    if isinstance(text, (tuple, list)):
        return tuple(int(v) for v in text)
    try:
        return tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of whole numbers") from None
