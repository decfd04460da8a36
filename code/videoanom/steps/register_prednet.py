"""register_prednet step: the train step's best model -> ``prednet-<location>`` version.

Tags carry what a reviewer needs to trust or reject the version: the location, the data
fingerprint it was trained on, the code commit, validation loss and MAE, the copy-last
baseline, and the chosen hyperparameters.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from videoanom.data.prepare import load_manifest
from videoanom.names import prednet_model_name
from videoanom.registry import register_version
from videoanom.steps.common import write_json
from videoanom.steps.train import read_result
from videoanom.tracking import git_commit, pipeline_tags

logger = logging.getLogger(__name__)

OUTPUT_FILE = "model.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared-data", required=True, type=Path, help="data_prep output")
    parser.add_argument("--trained-model", required=True, type=Path, help="train output")
    parser.add_argument("--registered-prednet", required=True, type=Path, help="output folder")
    parser.add_argument("--git-commit", default="", help="code version (default: detected)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    manifest = load_manifest(args.prepared_data)
    result = read_result(args.trained_model)
    name = prednet_model_name(manifest.location)
    tags = {
        "location": manifest.location,
        "data_fingerprint": manifest.fingerprint,
        "git_commit": args.git_commit or git_commit(),
        "val_loss": result["val_loss"],
        "val_mae": result["val_mae"],
        "copy_last_mae": result["copy_last_mae"],
        "beats_copy_last": str(result["beats_copy_last"]).lower(),
        "init_from": result.get("init_from") or "none",
        "nt": result["nt"],
        "frame_shape": "x".join(str(v) for v in result["frame_shape"]),
        **{f"param.{k}": v for k, v in result["params"].items()},
        **pipeline_tags(),
    }
    version = register_version(
        name,
        source=result["model_artifact_uri"],
        run_id=result["run_id"],
        tags=tags,
        description=f"PredNet for location {manifest.location}",
    )
    if not result["beats_copy_last"]:
        logger.warning(
            "%s version %d does not beat the copy-last-frame baseline on validation "
            "(MAE %.5f vs %.5f): train longer or check the data",
            name,
            version,
            result["val_mae"],
            result["copy_last_mae"],
        )
    uri = f"models:/{name}/{version}"
    write_json(
        args.registered_prednet / OUTPUT_FILE,
        {"name": name, "version": version, "uri": uri, "tags": tags},
    )
    logger.info("registered %s", uri)
