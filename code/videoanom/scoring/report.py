"""The evaluation report of a location's detector: curves, timelines and a metrics JSON.

Curves use out-of-fold scores (each clip scored by a model that never saw it), so the
pictures show what to expect on new video, not how well the training clips were fitted.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

logger = logging.getLogger(__name__)

CURVE_COLUMNS = {
    "score": "reported score",
    "unsupervised": "unsupervised",
    "baseline": "frame difference",
}
MAX_TIMELINES = 12


def write_report(
    folder: Path,
    location: str,
    report: dict,
    out_of_fold: pd.DataFrame,
    test_scores: pd.DataFrame,
    threshold: float,
) -> dict[str, str]:
    """Write metrics.json, roc.png, pr.png and timeline.png; returns name -> path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": str(folder / "metrics.json")}
    (folder / "metrics.json").write_text(json.dumps(report, indent=2, default=float))
    labelled = out_of_fold[out_of_fold["label"] >= 0] if len(out_of_fold) else out_of_fold
    if len(labelled) and labelled["label"].nunique() == 2:
        paths["roc"] = _curves(folder / "roc.png", location, labelled, roc=True)
        paths["pr"] = _curves(folder / "pr.png", location, labelled, roc=False)
    if len(test_scores):
        paths["timeline"] = _timeline(folder / "timeline.png", location, test_scores, threshold)
    return paths


def _curves(path: Path, location: str, frame: pd.DataFrame, roc: bool) -> str:
    fig, ax = plt.subplots(figsize=(5, 4.5))
    y = frame["label"].to_numpy()
    for column, name in CURVE_COLUMNS.items():
        if column not in frame:
            continue
        s = frame[column].to_numpy()
        if roc:
            fpr, tpr, _ = roc_curve(y, s)
            ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, s):.3f})")
        else:
            precision, recall, _ = precision_recall_curve(y, s)
            ax.plot(recall, precision, label=name)
    if roc:
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set(xlabel="false positive rate", ylabel="true positive rate")
    else:
        ax.axhline(y.mean(), color="grey", linestyle=":", linewidth=1)
        ax.set(xlabel="recall", ylabel="precision")
    kind = "ROC" if roc else "precision-recall"
    ax.set_title(f"{location}: frame-level {kind} (out-of-fold)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right" if roc else "lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _timeline(path: Path, location: str, scores: pd.DataFrame, threshold: float) -> str:
    clips = list(dict.fromkeys(scores["clip"]))[:MAX_TIMELINES]
    fig, axes = plt.subplots(
        len(clips), 1, figsize=(8, 1.6 * len(clips) + 0.6), sharey=True, squeeze=False
    )
    for ax, clip in zip(axes[:, 0], clips, strict=True):
        rows = scores[scores["clip"] == clip]
        frames = rows["frame"].to_numpy()
        if "label" in rows and (rows["label"] >= 0).any():
            truth = (rows["label"].to_numpy() == 1).astype(float)
            ax.fill_between(
                frames, 0, truth, step="mid", color="tab:red", alpha=0.2, label="anomalous (truth)"
            )
        ax.plot(
            frames,
            rows["anomaly_score"].to_numpy(),
            color="tab:blue",
            linewidth=1.2,
            label="anomaly score",
        )
        ax.axhline(threshold, color="black", linestyle="--", linewidth=0.8, label="threshold")
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel(clip, fontsize=8)
        ax.tick_params(labelsize=7)
    source = "out-of-fold " if "label" in scores and (scores["label"] >= 0).any() else ""
    axes[0, 0].set_title(f"{location}: {source}anomaly score per test frame", fontsize=10)
    axes[0, 0].legend(fontsize=7, loc="upper right", ncols=3)
    axes[-1, 0].set_xlabel("frame")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)
