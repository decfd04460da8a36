"""The v1 training pipeline's ``best_trial`` step: the best HyperDrive trial's model folder.

A HyperDriveStep runs ``code/train.py`` once per trial, all trials with the same arguments
(plus the sampled hyperparameters), so a shared output folder would be written by every
trial at once and keep whichever finished last. Instead each trial writes its model to
``outputs/trained_model`` in its own working folder, which Azure ML uploads as that trial's
run artifacts, and this step, run after the search, copies the best trial's folder into the
pipeline's ``trained_model`` output that ``register_prednet`` reads, exactly as the local
runner hands it the train step's folder.

The best trial is read from the HyperDriveStep's ``metrics_output`` (a JSON file: child run
id -> metric name -> logged values): the trial with the lowest last-logged ``val_loss`` (the
value the train step logs for the model it saved) among trials that completed and left a
model. When that file names no usable trial, the search step's child runs are asked directly.

    python ml_service/azure/v1/best_trial.py --metrics PATH --trained-model DIR
        [--trial-folder outputs/trained_model] [--primary-metric val_loss] [--goal minimize]
        [--search-step train]

Only the standard library and azureml-core (in the job environment) are needed: this script
never imports the pipeline builder.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger("videoanom.azure.best_trial")

# Where each trial of the search writes its model (relative to its working folder; Azure ML
# uploads ./outputs as the run's artifacts).
TRIAL_FOLDER = "outputs/trained_model"
# The file the train step writes last: a folder with it holds a whole model.
RESULT_FILE = "train_result.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", required=True, type=Path, help="HyperDrive metrics_output")
    parser.add_argument("--trained-model", required=True, type=Path, help="output folder")
    parser.add_argument("--trial-folder", default=TRIAL_FOLDER, help="model folder of a trial")
    parser.add_argument("--primary-metric", default="val_loss")
    parser.add_argument("--goal", choices=("minimize", "maximize"), default="minimize")
    parser.add_argument("--search-step", default="train", help="the HyperDriveStep's name")
    return parser


def read_metrics(path: Path) -> dict[str, dict[str, Any]]:
    """The metrics_output JSON; ``path`` is the file or a folder holding one file."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        if len(files) != 1:
            raise ValueError(f"{path}: expected one HyperDrive metrics file, found {len(files)}")
        path = files[0]
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a HyperDrive metrics file (a JSON object of runs)")
    return {str(k): v for k, v in data.items() if isinstance(v, dict)}


def final_value(logged: Any) -> float | None:
    """The last value logged for a metric (a list of values, or one value), if a number."""
    if isinstance(logged, list):
        logged = logged[-1] if logged else None
    try:
        value = float(logged)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def ranked_trials(
    metrics: dict[str, dict[str, Any]], primary_metric: str, goal: str = "minimize"
) -> list[tuple[str, float]]:
    """(run id, final primary metric) of every trial that logged it, best first."""
    scored = []
    for run_id, values in metrics.items():
        value = final_value(values.get(primary_metric))
        if value is not None:
            scored.append((run_id, value))
    return sorted(scored, key=lambda item: (item[1] if goal == "minimize" else -item[1], item[0]))


def copy_trial_model(download: Any, trial_folder: str, destination: Path) -> bool:
    """Download a trial's model folder with ``download(prefix, folder)``; True if whole.

    A trial stopped early (bandit policy) or failed leaves no ``train_result.json``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        download(trial_folder, tmp)
        nested = Path(tmp) / trial_folder
        source = nested if nested.is_dir() else Path(tmp)
        if not (source / RESULT_FILE).is_file():
            return False
        destination.mkdir(parents=True, exist_ok=True)
        for item in source.iterdir():
            target = destination / item.name
            if item.is_dir():
                shutil.copytree(item, target, dirs_exist_ok=True)
            else:
                shutil.copy2(item, target)
    return True


def pick_best(
    candidates: list[tuple[str, float]],
    get_run: Any,
    trial_folder: str,
    destination: Path,
) -> tuple[str, float]:
    """Copy the first candidate that completed with a whole model; (run id, metric)."""
    for run_id, value in candidates:
        run = get_run(run_id)
        status = run.get_status()
        if status != "Completed":
            logger.info("trial %s: %s, skipped", run_id, status)
            continue

        def download(prefix: str, folder: str, run: Any = run) -> None:
            run.download_files(prefix=prefix, output_directory=folder, append_prefix=True)

        if copy_trial_model(download, trial_folder, destination):
            return run_id, value
        logger.info("trial %s: no model in %s, skipped", run_id, trial_folder)
    raise RuntimeError(
        f"none of {len(candidates)} trials completed with a model in {trial_folder}: "
        "see the train step's child runs"
    )


def _children_metrics(context: Any, search_step: str, primary_metric: str) -> dict[str, dict]:
    """The search step's child runs and their metrics, asked of the service ({} if it
    cannot say)."""
    metrics: dict[str, dict] = {}
    try:
        pipeline_run = context.parent
        for step_run in pipeline_run.find_step_run(search_step) if pipeline_run else []:
            for child in step_run.get_children():
                value = child.get_metrics().get(primary_metric)
                if value is not None:
                    metrics[child.id] = {primary_metric: value}
    except Exception as error:  # the service, not the data: report what metrics_output said
        logger.warning("cannot list the trials of %s: %s", search_step, error)
    return metrics


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = build_parser().parse_args(argv)
    from azureml.core import Run

    context = Run.get_context()
    workspace = context.experiment.workspace
    candidates = ranked_trials(read_metrics(args.metrics), args.primary_metric, args.goal)
    if not candidates:
        logger.info(
            "metrics_output names no trial with %s: asking the service", args.primary_metric
        )
        children = _children_metrics(context, args.search_step, args.primary_metric)
        candidates = ranked_trials(children, args.primary_metric, args.goal)
    if not candidates:
        raise RuntimeError(f"no trial of {args.search_step} logged {args.primary_metric}")
    run_id, value = pick_best(
        candidates, lambda rid: Run.get(workspace, rid), args.trial_folder, args.trained_model
    )
    logger.info(
        "best trial %s: %s %.6f -> %s", run_id, args.primary_metric, value, args.trained_model
    )
    context.set_tags({"best_trial": run_id, f"best_{args.primary_metric}": str(value)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
