"""train_classifier step: fit the location's detector on PredNet error features.

With labelled test clips the detector is chosen among the unsupervised score, classifiers
and their combination by clip-grouped (and, when kinds are known, kind-held-out)
cross-validation; without labels it is the unsupervised score calibrated on normal video.
Output: ``detector/`` (the model, no pickle), ``report/`` (metrics.json, roc.png, pr.png,
timeline.png) and ``classifier.json``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from videoanom.data.prepare import load_manifest
from videoanom.scoring.detector import Detector
from videoanom.scoring.features import FeatureSet
from videoanom.scoring.report import write_report
from videoanom.steps.common import read_json, write_json
from videoanom.tracking import pipeline_tags, use_location_experiment

logger = logging.getLogger(__name__)

RESULT_FILE = "classifier.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared-data", required=True, type=Path, help="data_prep output")
    parser.add_argument("--scores", required=True, type=Path, help="batch_scoring output")
    parser.add_argument("--classifier", required=True, type=Path, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def summarise(out_of_fold: pd.DataFrame) -> dict[str, float]:
    """Frame-level AUC and AP of the reported, unsupervised and baseline scores (out-of-fold)."""
    summary: dict[str, float] = {}
    if not len(out_of_fold):
        return summary
    labelled = out_of_fold[out_of_fold["label"] >= 0]
    y = labelled["label"].to_numpy()
    if len(np.unique(y)) < 2:
        return summary
    for column, prefix in (
        ("score", ""),
        ("unsupervised", "unsupervised_"),
        ("baseline", "baseline_"),
    ):
        if column in labelled:
            summary[f"{prefix}auc"] = float(roc_auc_score(y, labelled[column]))
            summary[f"{prefix}ap"] = float(average_precision_score(y, labelled[column]))
    return summary


def timeline_scores(
    detector: Detector, out_of_fold: pd.DataFrame, test: FeatureSet | None
) -> pd.DataFrame:
    """Per-frame test scores for the timeline plot.

    With labels these are out-of-fold (each clip scored by a detector fitted without it), so
    the plot shows what to expect on new video rather than how well training clips were fit.
    """
    if len(out_of_fold):
        frame = out_of_fold[["clip", "frame", "label"]].copy()
        frame["anomaly_score"] = out_of_fold["score"].to_numpy()
        frame["is_anomaly"] = (frame["anomaly_score"] >= detector.threshold).astype(int)
        return frame
    if test is None:
        return pd.DataFrame()
    scores, flags = detector.score(test)
    columns = ["clip", "frame"] + (["label"] if "label" in test.table else [])
    frame = test.table[columns].copy()
    frame["anomaly_score"], frame["is_anomaly"] = scores, flags
    return frame


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    manifest = load_manifest(args.prepared_data)
    # Normal statistics from train and validation clips: one short validation clip often
    # never shows motion in parts of the scene, and those cells then look anomalous on every
    # normal pedestrian (measured in docs/benchmarks.md). Test clips are never used here.
    normal = FeatureSet.concat(
        [FeatureSet.load(args.scores / s) for s in ("train", "val") if (args.scores / s).is_dir()]
    )
    test_dir = args.scores / "test"
    test = FeatureSet.load(test_dir) if test_dir.is_dir() else None
    scoring = read_json(args.scores / "scoring.json")

    detector = Detector.fit(normal, test, seed=args.seed)
    detector.save(args.classifier / "detector")
    out_of_fold = detector.out_of_fold()
    summary = summarise(out_of_fold)
    report = {
        "location": manifest.location,
        "chosen": detector.chosen,
        "threshold": detector.threshold,
        "summary": summary,
        **detector.report,
    }
    test_scores = timeline_scores(detector, out_of_fold, test)
    report_dir = args.classifier / "report"
    plots = write_report(
        report_dir, manifest.location, report, out_of_fold, test_scores, detector.threshold
    )

    use_location_experiment(manifest.location)
    with mlflow.start_run(run_name="train_classifier") as run:
        mlflow.set_tags(
            {
                "location": manifest.location,
                "step": "train_classifier",
                "chosen": detector.chosen,
                "prednet": scoring["prednet"],
                **pipeline_tags(),
            }
        )
        mlflow.log_metrics({**summary, "threshold": float(detector.threshold)})
        mlflow.log_artifacts(str(args.classifier / "detector"), artifact_path="detector")
        mlflow.log_artifacts(str(report_dir), artifact_path="report")
        result = {
            "run_id": run.info.run_id,
            "model_artifact_uri": f"{run.info.artifact_uri}/detector",
            "chosen": detector.chosen,
            "threshold": float(detector.threshold),
            "features": list(detector.feature_names),
            "has_labels": bool(summary),
            "prednet": scoring["prednet"],
            "prednet_version": scoring["prednet_version"],
            "metrics": summary,
            "report": {
                name: str(Path(path).relative_to(args.classifier)) for name, path in plots.items()
            },
        }
    write_json(args.classifier / RESULT_FILE, result)
    if summary:
        logger.info(
            "%s: reported score %s, out-of-fold AUC %.3f (unsupervised %.3f, frame diff %.3f)",
            manifest.location,
            detector.chosen,
            summary.get("auc", float("nan")),
            summary.get("unsupervised_auc", float("nan")),
            summary.get("baseline_auc", float("nan")),
        )
    else:
        logger.info(
            "%s: no labelled anomalies; unsupervised detector calibrated on normal video",
            manifest.location,
        )
