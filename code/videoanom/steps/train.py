"""train step: hyperparameter search over PredNets on a prepared location.

Output folder: ``prednet.keras`` (the best trial's model, input centring included) and
``train_result.json`` (the MLflow run, the chosen parameters, validation metrics and the
copy-last-frame baseline).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import mlflow

from videoanom.data.dataset import load_split
from videoanom.data.prepare import DATA_FILE, load_manifest
from videoanom.registry import PREDNET_FILE, PREDNET_META, load_prednet
from videoanom.steps.common import write_json
from videoanom.tracking import pipeline_tags, use_location_experiment
from videoanom.training.search import run_search
from videoanom.training.search_space import (
    DEFAULTS,
    SEARCH_SPACE,
    Choice,
    parse_int_list,
    search_flag,
)
from videoanom.training.trainer import TrainConfig

logger = logging.getLogger(__name__)

RESULT_FILE = "train_result.json"


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared-data", required=True, type=Path, help="data_prep output")
    parser.add_argument("--trained-model", required=True, type=Path, help="output folder")
    parser.add_argument("--trials", type=int, default=4, help="search trials (1: defaults only)")
    parser.add_argument("--max-epochs", type=int, default=defaults.max_epochs)
    parser.add_argument("--nt", type=int, default=defaults.nt, help="frames per sequence")
    parser.add_argument("--windows-per-epoch", type=int, default=defaults.windows_per_epoch)
    parser.add_argument("--patience", type=int, default=defaults.patience)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--init-from",
        default="",
        help="warm-start from a PredNet: models:/prednet-X/N, a location name or a .keras file",
    )
    parser.add_argument(
        "--freeze-layers",
        default="",
        help="comma-separated PredNet levels to keep fixed when warm-starting, e.g. 0,1",
    )
    trial = parser.add_argument_group(
        "one trial",
        "fix hyperparameters instead of searching (how HyperDrive and sweep jobs run each "
        "trial); the others keep their defaults. Needs --trials 1.",
    )
    for name, dist in SEARCH_SPACE.items():
        kind = type(DEFAULTS[name]) if isinstance(dist, Choice) else float
        trial.add_argument(search_flag(name), dest=name, type=kind, default=None)
    return parser


def fixed_space(args: argparse.Namespace) -> dict | None:
    """A one-point search space from the hyperparameter flags given, or None (search)."""
    given = {name: getattr(args, name) for name in SEARCH_SPACE if getattr(args, name) is not None}
    if not given:
        return None
    if args.trials != 1:
        raise ValueError(
            f"{', '.join(search_flag(n) for n in given)} fix hyperparameters: use --trials 1, "
            f"not {args.trials}"
        )
    return {name: Choice((given.get(name, DEFAULTS[name]),)) for name in SEARCH_SPACE}


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    manifest = load_manifest(args.prepared_data)
    data_file = args.prepared_data / DATA_FILE
    train, val = load_split(data_file, "train"), load_split(data_file, "val")
    freeze = parse_int_list(args.freeze_layers) if args.freeze_layers else ()
    if freeze and not args.init_from:
        raise ValueError("--freeze-layers only makes sense with --init-from (a warm start)")
    init_model = load_prednet(args.init_from) if args.init_from else None
    space = fixed_space(args)
    config = TrainConfig(
        nt=args.nt,
        max_epochs=args.max_epochs,
        windows_per_epoch=args.windows_per_epoch,
        patience=args.patience,
        seed=args.seed,
    )
    use_location_experiment(manifest.location)
    with mlflow.start_run(run_name="train") as run:
        mlflow.set_tags(
            {
                "location": manifest.location,
                "step": "train",
                "data_fingerprint": manifest.fingerprint,
                **pipeline_tags(),
            }
        )
        mlflow.log_params(
            {
                "trials": args.trials,
                "max_epochs": args.max_epochs,
                "nt": args.nt,
                "windows_per_epoch": args.windows_per_epoch,
                "init_from": args.init_from or "none",
                "freeze_layers": args.freeze_layers or "none",
                "train_frames": len(train),
                "val_frames": len(val),
            }
        )
        search = run_search(
            train,
            val,
            args.trained_model,
            args.trials,
            config,
            init_model,
            tuple(freeze),
            space=space,
            first_params={k: d.values[0] for k, d in space.items()} if space else None,
        )
        best = search.best
        summary = best.summary()
        mlflow.log_params({f"best_{k}": v for k, v in best.params.items()})
        mlflow.log_metrics({k: float(v) for k, v in summary.items()})
        meta = {
            "location": manifest.location,
            "data_fingerprint": manifest.fingerprint,
            "params": best.params,
            "nt": args.nt,
            "frame_shape": list(best.model.get_config()["frame_shape"]),
            "init_from": args.init_from or None,
            "freeze_layers": list(freeze),
            **summary,
        }
        write_json(args.trained_model / PREDNET_META, meta)
        mlflow.log_artifact(str(args.trained_model / PREDNET_FILE), artifact_path="prednet")
        mlflow.log_artifact(str(args.trained_model / PREDNET_META), artifact_path="prednet")
        result = {
            "run_id": run.info.run_id,
            "experiment_id": run.info.experiment_id,
            "model_artifact_uri": f"{run.info.artifact_uri}/prednet",
            "best_trial": search.best_trial,
            "trials": search.trials,
            **meta,
        }
    write_json(args.trained_model / RESULT_FILE, result)
    verdict = "beats" if best.beats_copy_last else "does NOT beat"
    logger.info(
        "best trial %d: val MAE %.5f %s copy-last %.5f; model %s",
        search.best_trial,
        best.val_mae,
        verdict,
        best.copy_last_mae,
        args.trained_model / PREDNET_FILE,
    )


def read_result(trained_model: Path) -> dict:
    return json.loads((Path(trained_model) / RESULT_FILE).read_text())
