"""register_classifier step: the location's detector -> ``anomaly-classifier-<location>``.

Without labels the registered detector is the unsupervised score calibrated on normal video
(tag ``scorer``), so every location has one model name to score with.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from videoanom.data.prepare import load_manifest
from videoanom.names import classifier_model_name
from videoanom.registry import register_version
from videoanom.steps.common import read_json, write_json
from videoanom.tracking import git_commit, pipeline_tags

logger = logging.getLogger(__name__)

OUTPUT_FILE = "model.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared-data", required=True, type=Path, help="data_prep output")
    parser.add_argument("--classifier", required=True, type=Path, help="train_classifier output")
    parser.add_argument("--registered-classifier", required=True, type=Path, help="output folder")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    manifest = load_manifest(args.prepared_data)
    result = read_json(args.classifier / "classifier.json")
    name = classifier_model_name(manifest.location)
    tags = {
        "location": manifest.location,
        "data_fingerprint": manifest.fingerprint,
        "git_commit": git_commit(),
        "scorer": result["chosen"],
        "threshold": result["threshold"],
        "features": ",".join(result["features"]),
        "prednet": result["prednet"],
        "prednet_version": result["prednet_version"],
        "has_labels": str(result["has_labels"]).lower(),
        **{k: v for k, v in result["metrics"].items()},
        **pipeline_tags(),
    }
    version = register_version(
        name,
        source=result["model_artifact_uri"],
        run_id=result["run_id"],
        tags=tags,
        description=f"Anomaly detector for location {manifest.location} on {result['prednet']}",
    )
    uri = f"models:/{name}/{version}"
    write_json(
        args.registered_classifier / OUTPUT_FILE,
        {"name": name, "version": version, "uri": uri, "tags": tags},
    )
    logger.info("registered %s (%s)", uri, result["chosen"])
