"""Local hyperparameter search with Optuna over the one search space.

Each trial is a nested MLflow run with per-epoch metrics; a median pruner stops trials
whose validation loss lags; the best trial is the one with the lowest validation loss.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import mlflow
import optuna

from videoanom.data.dataset import SplitData
from videoanom.prednet import PredNet
from videoanom.training.search_space import ARCHITECTURE_PARAMS, DEFAULTS, SEARCH_SPACE, suggest
from videoanom.training.trainer import (
    TrainConfig,
    TrainResult,
    architecture_params,
    train_prednet,
)

logger = logging.getLogger(__name__)

MODEL_FILE = "prednet.keras"


@dataclass
class SearchResult:
    best: TrainResult
    best_trial: int
    model_path: Path
    trials: list[dict[str, Any]] = field(default_factory=list)


class MlflowEpochLogger(keras.callbacks.Callback):
    """Log every epoch's metrics (loss, mae, val_loss, val_mae, learning rate) to MLflow.

    ``also_run_id``: a second run that gets the same curve. A one-trial search (how every
    HyperDrive or sweep trial runs the train step) logs it on the step's own run too,
    because the services' early-termination policies read that run's ``val_loss``.
    """

    def __init__(self, also_run_id: str | None = None) -> None:
        super().__init__()
        self.also_run_id = also_run_id

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        metrics = {k: float(v) for k, v in (logs or {}).items()}
        mlflow.log_metrics(metrics, step=epoch + 1)
        if self.also_run_id:
            client = mlflow.MlflowClient()
            for key, value in metrics.items():
                client.log_metric(self.also_run_id, key, value, step=epoch + 1)


class OptunaPruning(keras.callbacks.Callback):
    """Report val_loss to Optuna each epoch and stop the trial if the pruner says so."""

    def __init__(self, trial: optuna.Trial) -> None:
        super().__init__()
        self.trial = trial
        self.pruned = False

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get("val_loss")
        if value is None:
            return
        self.trial.report(float(value), step=epoch)
        if self.trial.should_prune():
            self.pruned = True
            self.model.stop_training = True


def run_search(
    train: SplitData,
    val: SplitData,
    out_dir: Path,
    n_trials: int,
    config: TrainConfig | None = None,
    init_model: PredNet | None = None,
    freeze_levels: tuple[int, ...] = (),
    space: dict[str, Any] | None = None,
    first_params: dict[str, Any] | None = None,
) -> SearchResult:
    """Run ``n_trials`` trials; save the best model to ``out_dir/prednet.keras``.

    The first trial always uses :data:`DEFAULTS`, so a one-trial search is a plain
    training run with known-good settings. When warm-starting, the architecture comes
    from ``init_model`` and only the optimisation parameters are searched. ``space`` and
    ``first_params`` replace the project's search space and defaults (tests, experiments).
    """
    config = config or TrainConfig()
    if n_trials < 1:
        raise ValueError(f"trials must be at least 1, not {n_trials}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    space = dict(space or SEARCH_SPACE)
    first = dict(first_params or DEFAULTS)
    if init_model is not None:
        space = {k: v for k, v in space.items() if k not in ARCHITECTURE_PARAMS}
        first = {k: v for k, v in first.items() if k not in ARCHITECTURE_PARAMS}
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=config.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=2),
    )
    study.enqueue_trial(first)
    parent = mlflow.active_run()
    curve_run_id = parent.info.run_id if parent is not None and n_trials == 1 else None
    best: dict[str, Any] = {"result": None, "trial": -1}
    records: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, space)
        if init_model is not None:
            params.update(architecture_params(init_model))
        pruning = OptunaPruning(trial)
        keras.backend.clear_session()
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
            mlflow.log_params({**params, "trial": trial.number})
            logger.info("trial %d/%d: %s", trial.number + 1, n_trials, params)
            result = train_prednet(
                params,
                train,
                val,
                config,
                init_model=init_model,
                freeze_levels=freeze_levels,
                callbacks=[MlflowEpochLogger(curve_run_id), pruning],
            )
            summary = result.summary()
            mlflow.log_metrics({k: float(v) for k, v in summary.items()})
            mlflow.set_tag("pruned", str(pruning.pruned).lower())
        records.append(
            {"trial": trial.number, "params": params, "pruned": pruning.pruned, **summary}
        )
        if pruning.pruned:
            raise optuna.TrialPruned()
        if best["result"] is None or result.val_loss < best["result"].val_loss:
            result.model.save(out_dir / MODEL_FILE)
            best.update(result=result, trial=trial.number)
        return result.val_loss

    study.optimize(objective, n_trials=n_trials, catch=())
    if best["result"] is None:
        raise RuntimeError("every trial was pruned; no model to keep")
    return SearchResult(best["result"], best["trial"], out_dir / MODEL_FILE, records)
