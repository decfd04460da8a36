"""Per-location frame anomaly detector on top of :mod:`videoanom.scoring.features`.

The unsupervised score needs only normal video: every 8x8-pixel cell of the prediction
error map (and of 16x16 cells, by pooling) is scaled by that cell's statistics on the
location's normal validation clips, ``z = (e - median) / (q99 - median + 0.1 * typical
spread)``, where the floor ``0.1 * typical spread`` (median over cells of ``q99 - median``)
keeps quiet cells from turning noise into alarms. The unsupervised score is the mean of
three views, each log-compressed and scaled by its own median and q99 on normal video: the
largest cell ``z`` of the prediction error, the frame's 99th-percentile pixel error, and a
motion-direction view: per cell and flow direction (the ``flow_dir`` histograms of
:mod:`videoanom.scoring.features`) the same ``z``, except that a cell's spread is the largest
of its 3x3 neighbourhood's for that direction, so a cell where normal video showed no motion
accepts the directions its neighbours move in, but not others. The same normalisation of the
frame difference is the baseline.

When a location has labelled test clips the detector also fits classifiers (logistic
regression and extra trees) on the features and a combination (mean of the calibrated
unsupervised score and the classifier probability), and picks the scorer with
cross-validation grouped by clip and, when two or more anomaly kinds are labelled,
leave-one-kind-out validation (a kind's clips are all held out of training). The
selection metric is the mean of the grouped-CV AUC and the worst leave-one-kind-out AUC,
and a fitted scorer must beat the unsupervised score by a margin: a classifier that only
recognises the kinds it was shown is not chosen. The chosen scorer's out-of-fold scores
pick an optional centred moving average along the clip, a Platt calibration and the
max-F1 threshold.

Saved without pickle: JSON, ``.npz`` (loaded with ``allow_pickle=False``) and skops files
loaded with an explicit list of trusted scikit-learn types.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from videoanom.scoring.features import FeatureSet

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
Q_HIGH = 0.99
FLOOR = 0.1
SCALES = (1, 2)  # cell pooling factors: 8x8 and 16x16 pixels with the default cell
TOP_K = 3
SMOOTHING_WINDOWS = (1, 3, 5, 9, 15)
SELECTION_MARGIN = 0.01
SMOOTHING_MARGIN = 0.002
MAX_FOLDS = 5
UNSUPERVISED_MAP = "pred_error"
FLOW_MAP = "flow_dir"  # per-cell motion-direction histograms (N, gh, gw, bins)
FLOW_NEIGHBOURHOOD = 3  # a direction's spread in a cell: the largest in its 3x3 neighbourhood
# local view (largest per-cell normalised error), global view (99th percentile of the
# squared pixel error) and motion-direction view (largest per-cell, per-direction normalised
# flow); a missing component (e.g. an older feature table) is skipped
UNSUPERVISED_COMPONENTS = (f"{UNSUPERVISED_MAP}@1_max", "err_p99", f"{FLOW_MAP}@1_max")
BASELINE_MAP = "frame_diff"
CLASSIFIERS = ("logistic", "extra_trees")

# Every type a saved estimator may contain; skops refuses anything else.
TRUSTED_TYPES = [
    "sklearn.ensemble._forest.ExtraTreesClassifier",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.tree._classes.ExtraTreeClassifier",
    "sklearn.tree._tree.Tree",
]


# ------------------------------------------------------------------------------ helpers
def _pool(cells: np.ndarray, factor: int) -> np.ndarray:
    """Mean-pool (N, gh, gw) maps by ``factor`` (edge cells padded by replication)."""
    if factor == 1:
        return cells
    n, gh, gw = cells.shape
    ph, pw = -(-gh // factor) * factor, -(-gw // factor) * factor
    if (ph, pw) != (gh, gw):
        cells = np.pad(cells, ((0, 0), (0, ph - gh), (0, pw - gw)), mode="edge")
    return cells.reshape(n, ph // factor, factor, pw // factor, factor).mean(axis=(2, 4))


def _compress(x: np.ndarray) -> np.ndarray:
    """Monotone, smooth: ``x`` below 0, ``log1p(x)`` above."""
    x = np.asarray(x, dtype=float)
    return np.where(x > 0, np.log1p(np.maximum(x, 0)), x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def _auc(y: np.ndarray, s: np.ndarray) -> float | None:
    if len(np.unique(y)) < 2:
        return None
    return float(roc_auc_score(y, s))


def _metrics(y: np.ndarray, s: np.ndarray) -> dict[str, Any]:
    """Frame-level ROC AUC, average precision and the best F1 (with its threshold)."""
    y = np.asarray(y).astype(int)
    s = np.asarray(s, dtype=float)
    if len(np.unique(y)) < 2:
        return {"auc": None, "ap": None, "f1": None, "n_frames": len(y)}
    precision, recall, thresholds = precision_recall_curve(y, s)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1[:-1])) if len(thresholds) else 0
    return {
        "auc": round(float(roc_auc_score(y, s)), 4),
        "ap": round(float(average_precision_score(y, s)), 4),
        "f1": round(float(f1[best]), 4),
        "n_frames": len(y),
        "n_anomalous": int(y.sum()),
    }


def _max_f1_threshold(y: np.ndarray, s: np.ndarray) -> float:
    precision, recall, thresholds = precision_recall_curve(y, s)
    if len(thresholds) == 0:
        return 0.5
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    return float(thresholds[int(np.argmax(f1))])


def smooth_within_clips(
    scores: np.ndarray, clips: np.ndarray, frames: np.ndarray, window: int
) -> np.ndarray:
    """Centred moving average of ``scores`` over ``window`` frames, never across clips."""
    scores = np.asarray(scores, dtype=float)
    if window <= 1 or len(scores) == 0:
        return scores.copy()
    out = np.empty_like(scores)
    half = window // 2
    for _, idx in pd.Series(np.arange(len(scores))).groupby(np.asarray(clips), sort=False):
        rows = idx.to_numpy()
        rows = rows[np.argsort(np.asarray(frames)[rows], kind="stable")]
        values = scores[rows]
        csum = np.concatenate([[0.0], np.cumsum(values)])
        pos = np.arange(len(values))
        lo = np.maximum(pos - half, 0)
        hi = np.minimum(pos + half + 1, len(values))
        out[rows] = (csum[hi] - csum[lo]) / (hi - lo)
    return out


# ------------------------------------------------------------------------------ normal stats
@dataclass
class CellStats:
    """Per-cell median and scale of one cell map at one pooling factor, from normal video."""

    median: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, cells: np.ndarray) -> CellStats:
        med = np.median(cells, axis=0)
        spread = np.quantile(cells, Q_HIGH, axis=0) - med
        typical = float(np.median(spread))
        floor = FLOOR * typical if typical > 0 else 1e-6
        return cls(med.astype(np.float32), (spread + floor + 1e-12).astype(np.float32))

    @classmethod
    def fit_directions(cls, hist: np.ndarray, size: int = FLOW_NEIGHBOURHOOD) -> CellStats:
        """Like :meth:`fit` for (N, gh, gw, bins) direction histograms, with each cell's
        per-direction spread raised to the largest in its ``size`` x ``size`` neighbourhood."""
        med = np.median(hist, axis=0)
        spread = _neighbourhood_max(np.quantile(hist, Q_HIGH, axis=0) - med, size)
        typical = float(np.median(spread))
        floor = FLOOR * typical if typical > 0 else 1e-6
        return cls(med.astype(np.float32), (spread + floor + 1e-12).astype(np.float32))

    def z(self, cells: np.ndarray) -> np.ndarray:
        return (cells - self.median) / self.scale


def _neighbourhood_max(a: np.ndarray, size: int) -> np.ndarray:
    """Max over a size x size window of the first two axes (edges replicated)."""
    if size <= 1:
        return a
    r = size // 2
    padded = np.pad(a, [(r, r), (r, r)] + [(0, 0)] * (a.ndim - 2), mode="edge")
    gh, gw = a.shape[:2]
    out = a.copy()
    for dy in range(size):
        for dx in range(size):
            np.maximum(out, padded[dy : dy + gh, dx : dx + gw], out=out)
    return out


class Detector:
    """Frame anomaly scorer of one location; build it with :meth:`fit`."""

    def __init__(self) -> None:
        self.threshold: float = 0.5
        self.chosen: str = "unsupervised"
        self.feature_names: list[str] = []
        self.report: dict[str, Any] = {}
        self.raw_columns: list[str] = []
        self.raw_median: np.ndarray = np.zeros(0)
        self.raw_scale: np.ndarray = np.zeros(0)
        self.cell_stats: dict[str, CellStats] = {}
        self.unsup_components: list[tuple[str, float, float]] = []
        self.unsup_center: float = 0.0
        self.unsup_slope: float = 1.0
        self.smoothing: int = 1
        self.calibration: tuple[float, float] | None = None  # Platt (a, b) on the chosen raw score
        self.estimator: Any = None
        self.seed: int = 0
        self._oof: pd.DataFrame = pd.DataFrame()

    # -------------------------------------------------------------- feature building
    def _fit_normal(self, val: FeatureSet) -> None:
        for name in (UNSUPERVISED_MAP, BASELINE_MAP):
            if name not in val.cells:
                raise ValueError(f"validation features lack the {name!r} cell map")
            for factor in SCALES:
                self.cell_stats[f"{name}@{factor}"] = CellStats.fit(_pool(val.cells[name], factor))
        if FLOW_MAP in val.cells:  # absent from features extracted before the flow view
            self.cell_stats[f"{FLOW_MAP}@1"] = CellStats.fit_directions(val.cells[FLOW_MAP])
        self.raw_columns = val.feature_columns
        raw = val.table[self.raw_columns].to_numpy(float)
        self.raw_median = np.median(raw, axis=0)
        spread = np.quantile(raw, Q_HIGH, axis=0) - self.raw_median
        self.raw_scale = np.abs(spread) + FLOOR * np.median(np.abs(spread)) + 1e-9
        # the unsupervised score: mean of a local and a global view of the prediction error
        # and the motion-direction view, each log-compressed and scaled by its own median and
        # q99 on normal video
        cell_cols = self._cell_features(val)
        self.unsup_components = []
        for name in UNSUPERVISED_COMPONENTS:
            values = self._component(name, val, cell_cols)
            if values is None:
                continue
            c = _compress(values)
            med, q_hi = float(np.median(c)), float(np.quantile(c, Q_HIGH))
            self.unsup_components.append((name, med, max(q_hi - med, 1e-9)))
        if not self.unsup_components:
            raise ValueError("no unsupervised score component available")
        # calibration to [0, 1] on normal video: median -> 0.1, q99 -> 0.5
        u = self._unsupervised_raw(val, cell_cols)
        q_hi, med = float(np.quantile(u, Q_HIGH)), float(np.median(u))
        self.unsup_center = q_hi
        self.unsup_slope = float(np.log(9.0) / max(q_hi - med, 1e-6))

    @staticmethod
    def _component(name: str, features: FeatureSet, cell_cols: dict[str, np.ndarray]):
        if name in cell_cols:
            return cell_cols[name]
        if name in features.table.columns:
            return features.table[name].to_numpy(float)
        return None

    def _cell_features(self, features: FeatureSet) -> dict[str, np.ndarray]:
        cols: dict[str, np.ndarray] = {}
        for key, stats in self.cell_stats.items():
            name, factor = key.split("@")
            z = stats.z(_pool(features.cells[name], int(factor))).reshape(len(features), -1)
            cols[f"{key}_max"] = z.max(axis=1)
            k = min(TOP_K, z.shape[1])
            cols[f"{key}_top{TOP_K}"] = np.sort(z, axis=1)[:, -k:].mean(axis=1)
        return cols

    def _feature_matrix(self, features: FeatureSet) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        missing = [c for c in self.raw_columns if c not in features.table.columns]
        if missing:
            raise ValueError(f"features lack columns {missing}")
        raw = features.table[self.raw_columns].to_numpy(float)
        raw_z = (raw - self.raw_median) / self.raw_scale
        cell_cols = self._cell_features(features)
        matrix = (
            np.column_stack([raw_z, *cell_cols.values()]) if len(features) else np.zeros((0, 0))
        )
        names = [f"{c}_z" for c in self.raw_columns] + list(cell_cols)
        self.feature_names = names
        return np.nan_to_num(matrix, nan=0.0, posinf=1e6, neginf=-1e6), cell_cols

    def _unsupervised_raw(
        self, features: FeatureSet, cell_cols: dict[str, np.ndarray]
    ) -> np.ndarray:
        parts = []
        for name, med, scale in self.unsup_components:
            values = self._component(name, features, cell_cols)
            if values is None:
                raise ValueError(f"features lack {name!r}, a component of the unsupervised score")
            parts.append((_compress(values) - med) / scale)
        return np.mean(parts, axis=0)

    def _unsupervised_prob(self, raw: np.ndarray) -> np.ndarray:
        return _sigmoid(self.unsup_slope * (np.asarray(raw, float) - self.unsup_center))

    @staticmethod
    def _baseline(cell_cols: dict[str, np.ndarray]) -> np.ndarray:
        return cell_cols[f"{BASELINE_MAP}@1_max"]

    # -------------------------------------------------------------- estimators
    def _make(self, name: str) -> Any:
        from sklearn.ensemble import ExtraTreesClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        if name == "logistic":
            return Pipeline(
                [
                    ("scale", StandardScaler()),
                    ("model", LogisticRegression(C=0.1, class_weight="balanced", max_iter=2000)),
                ]
            )
        if name == "extra_trees":
            return ExtraTreesClassifier(
                n_estimators=200,
                min_samples_leaf=5,
                max_features="sqrt",
                class_weight="balanced",
                n_jobs=1,
                random_state=self.seed,
            )
        raise ValueError(f"unknown classifier {name!r}")

    def _fit_predict(
        self, name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray
    ) -> np.ndarray:
        if len(np.unique(y_train)) < 2:
            return np.full(len(x_test), float(np.mean(y_train)) if len(y_train) else 0.5)
        model = self._make(name)
        model.fit(x_train, y_train)
        return model.predict_proba(x_test)[:, 1]

    # -------------------------------------------------------------- fit
    @classmethod
    def fit(cls, val: FeatureSet, test: FeatureSet | None, seed: int = 0) -> Detector:
        """Normal statistics from ``val``; scorer selection on ``test``'s labelled clips."""
        if len(val) == 0:
            raise ValueError("Detector.fit needs normal validation features")
        det = cls()
        det.seed = int(seed)
        det._fit_normal(val)
        report: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "n_val_clips": int(val.table["clip"].nunique()),
            "n_val_frames": len(val),
            "unsupervised": "mean of label-free views, each log-compressed and scaled by its "
            "median and q99 on the normal clips: the max over 8x8 cells of the "
            f"{UNSUPERVISED_MAP} normalised per cell, (e - median) / (q{int(Q_HIGH * 100)} - "
            f"median + {FLOOR} x typical spread), the frame's 99th-percentile pixel error, and "
            f"the max over cells and directions of the {FLOW_MAP} (optical-flow direction "
            "histogram) normalised the same way with each spread raised to its 3x3 "
            "neighbourhood's largest",
            "unsupervised_components": [c[0] for c in det.unsup_components],
            "baseline": f"same on {BASELINE_MAP} cells (frame difference normalised per cell)",
        }
        labelled = None
        if test is not None and len(test) and "label" in test.table.columns:
            mask = test.table["label"].isin([0, 1]).to_numpy()
            if mask.any():
                labelled = test.subset(mask)
        if labelled is None or int(labelled.table["label"].sum()) == 0:
            det._finish_unsupervised(report, labelled)
            return det
        det._fit_supervised(labelled, report)
        return det

    def _finish_unsupervised(self, report: dict[str, Any], labelled: FeatureSet | None) -> None:
        self.chosen = "unsupervised"
        self.smoothing = 1
        self.calibration = None
        self.threshold = 0.5
        report.update(
            chosen=self.chosen,
            why="no labelled anomalous frames: the per-cell normalised prediction error is "
            "the only scorer that needs no labels.",
            threshold=self.threshold,
            smoothing_window=self.smoothing,
            n_clips=0 if labelled is None else int(labelled.table["clip"].nunique()),
            n_frames=0 if labelled is None else len(labelled),
        )
        self.report = report
        self._oof = pd.DataFrame()
        if labelled is not None:
            self._feature_matrix(labelled)
        else:
            self.feature_names = []

    def _fit_supervised(self, data: FeatureSet, report: dict[str, Any]) -> None:
        table = data.table
        y = table["label"].to_numpy(int)
        clips = table["clip"].astype(str).to_numpy()
        frames = table["frame"].to_numpy(int)
        kinds = (
            table["kind"].astype(str).to_numpy()
            if "kind" in table.columns
            else np.full(len(table), "")
        )
        x, cell_cols = self._feature_matrix(data)
        unsup_raw = self._unsupervised_raw(data, cell_cols)
        unsup = self._unsupervised_prob(unsup_raw)
        baseline = self._baseline(cell_cols)

        unique_clips = list(dict.fromkeys(clips))
        clip_kind = {c: next((k for k in kinds[clips == c] if k), "") for c in unique_clips}
        positive_clips = {c for c in unique_clips if y[clips == c].any()}
        anomaly_kinds = sorted({clip_kind[c] for c in positive_clips if clip_kind[c]})

        # grouped folds by clip
        folds: list[np.ndarray] = []
        if len(unique_clips) >= 2:
            from sklearn.model_selection import GroupKFold

            n_splits = min(MAX_FOLDS, len(unique_clips))
            for _, test_idx in GroupKFold(n_splits=n_splits).split(x, y, clips):
                folds.append(test_idx)
        loko: dict[str, np.ndarray] = {}
        if len(anomaly_kinds) >= 2:
            for kind in anomaly_kinds:
                held = np.array([clip_kind[c] in (kind, "") for c in clips])
                loko[kind] = held

        # the unsupervised candidate is ranked on its raw score (the sigmoid can tie at 1.0)
        cand_oof: dict[str, np.ndarray] = {"unsupervised": unsup_raw}
        cand_loko: dict[str, dict[str, np.ndarray]] = {"unsupervised": {k: unsup_raw for k in loko}}
        supervised_ok = len(positive_clips) >= 2 and len(folds) >= 2
        if supervised_ok:
            for name in CLASSIFIERS:
                oof = np.zeros(len(y))
                for test_idx in folds:
                    train_mask = np.ones(len(y), bool)
                    train_mask[test_idx] = False
                    oof[test_idx] = self._fit_predict(
                        name, x[train_mask], y[train_mask], x[test_idx]
                    )
                per_kind = {}
                for kind, held in loko.items():
                    pred = np.zeros(len(y))
                    pred[held] = self._fit_predict(name, x[~held], y[~held], x[held])
                    per_kind[kind] = pred
                cand_oof[f"classifier:{name}"] = oof
                cand_loko[f"classifier:{name}"] = per_kind
                cand_oof[f"combined:{name}"] = 0.5 * (oof + unsup)
                cand_loko[f"combined:{name}"] = {k: 0.5 * (p + unsup) for k, p in per_kind.items()}

        def evaluate(scores: np.ndarray, per_kind: dict[str, np.ndarray]) -> dict[str, Any]:
            entry: dict[str, Any] = {"grouped_cv": _metrics(y, scores)}
            if loko:
                entry["leave_one_kind_out"] = {
                    k: _metrics(y[held], per_kind[k][held]) for k, held in loko.items()
                }
            entry["selection_metric"] = _selection_metric(entry)
            return entry

        candidates = {name: evaluate(cand_oof[name], cand_loko[name]) for name in cand_oof}
        base_entry = evaluate(baseline, {k: baseline for k in loko})

        chosen, best = "unsupervised", candidates["unsupervised"]["selection_metric"]
        for name, entry in candidates.items():
            metric = entry["selection_metric"]
            if (
                name != "unsupervised"
                and metric is not None
                and metric > (best or 0) + SELECTION_MARGIN
            ):
                chosen, best = name, metric
        self.chosen = chosen
        # smoothing chosen on the same validation
        raw_oof = unsup_raw if chosen == "unsupervised" else cand_oof[chosen]
        raw_loko = {k: unsup_raw for k in loko} if chosen == "unsupervised" else cand_loko[chosen]
        smoothing_eval = {}
        best_w, best_metric = 1, None
        for w in SMOOTHING_WINDOWS:
            s_oof = smooth_within_clips(raw_oof, clips, frames, w)
            s_loko = {k: smooth_within_clips(v, clips, frames, w) for k, v in raw_loko.items()}
            entry = evaluate(s_oof, s_loko)
            smoothing_eval[str(w)] = {
                "grouped_cv_auc": entry["grouped_cv"]["auc"],
                "selection_metric": entry["selection_metric"],
            }
            metric = entry["selection_metric"]
            if metric is not None and (
                best_metric is None or metric > best_metric + SMOOTHING_MARGIN
            ):
                best_w, best_metric = w, metric
        self.smoothing = best_w
        final_raw = smooth_within_clips(raw_oof, clips, frames, best_w)
        final_loko = {k: smooth_within_clips(v, clips, frames, best_w) for k, v in raw_loko.items()}
        # Platt calibration and max-F1 threshold on out-of-fold scores
        self.calibration = _platt(final_raw, y)
        calibrated = _apply_platt(self.calibration, final_raw)
        self.threshold = _max_f1_threshold(y, calibrated)
        if supervised_ok and chosen != "unsupervised":
            name = chosen.split(":", 1)[1]
            self.estimator = self._make(name).fit(x, y)
        final_entry = evaluate(
            calibrated, {k: _apply_platt(self.calibration, v) for k, v in final_loko.items()}
        )
        final_entry["f1_at_threshold"] = _f1_at(y, calibrated, self.threshold)

        why = _why(chosen, candidates, loko, supervised_ok)
        report.update(
            n_clips=len(unique_clips),
            n_frames=len(y),
            n_anomalous_frames=int(y.sum()),
            n_anomalous_clips=len(positive_clips),
            folds=len(folds),
            anomaly_kinds=anomaly_kinds,
            leave_one_kind_out=bool(loko),
            candidates=candidates,
            baseline_frame_diff=base_entry,
            chosen=chosen,
            why=why,
            smoothing_window=self.smoothing,
            smoothing_validation=smoothing_eval,
            final=final_entry,
            threshold=self.threshold,
            selection="mean of grouped-CV AUC and worst leave-one-kind-out AUC"
            if loko
            else "grouped-CV AUC",
        )
        self.report = report
        self._oof = pd.DataFrame(
            {
                "clip": clips,
                "frame": frames,
                "label": y,
                "kind": kinds,
                "score": calibrated,
                "unsupervised": unsup,
                "baseline": baseline,
            }
        )

    # -------------------------------------------------------------- scoring
    def raw_score(self, features: FeatureSet) -> np.ndarray:
        """The chosen scorer's score before smoothing and calibration."""
        x, cell_cols = self._feature_matrix(features)
        unsup = self._unsupervised_raw(features, cell_cols)
        if self.chosen == "unsupervised":
            return unsup
        prob = self.estimator.predict_proba(x)[:, 1]
        if self.chosen.startswith("combined:"):
            return 0.5 * (prob + self._unsupervised_prob(unsup))
        return prob

    def score(self, features: FeatureSet) -> tuple[np.ndarray, np.ndarray]:
        """Anomaly score in [0, 1] per row and the 0/1 decision at :attr:`threshold`."""
        if len(features) == 0:
            return np.zeros(0), np.zeros(0, int)
        raw = self.raw_score(features)
        raw = smooth_within_clips(
            raw,
            features.table["clip"].astype(str).to_numpy(),
            features.table["frame"].to_numpy(),
            self.smoothing,
        )
        if self.calibration is None:
            score = self._unsupervised_prob(raw)
        else:
            score = _apply_platt(self.calibration, raw)
        score = np.clip(score, 0.0, 1.0)
        return score, (score >= self.threshold).astype(int)

    def out_of_fold(self) -> pd.DataFrame:
        """Out-of-fold scores of the labelled frames (empty without labels)."""
        return self._oof.copy()

    # -------------------------------------------------------------- persistence
    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {
            "format_version": FORMAT_VERSION,
            "threshold": self.threshold,
            "chosen": self.chosen,
            "feature_names": self.feature_names,
            "raw_columns": self.raw_columns,
            "unsup_components": [list(c) for c in self.unsup_components],
            "unsup_center": self.unsup_center,
            "unsup_slope": self.unsup_slope,
            "smoothing": self.smoothing,
            "calibration": list(self.calibration) if self.calibration is not None else None,
            "seed": self.seed,
            "cell_stats": list(self.cell_stats),  # order defines the feature columns
            "estimator": "estimator.skops" if self.estimator is not None else None,
            "trusted_types": TRUSTED_TYPES,
        }
        (folder / "detector.json").write_text(json.dumps(state, indent=2))
        (folder / "report.json").write_text(json.dumps(self.report, indent=2))
        arrays = {"raw_median": self.raw_median, "raw_scale": self.raw_scale}
        for key, stats in self.cell_stats.items():
            arrays[f"{key}:median"] = stats.median
            arrays[f"{key}:scale"] = stats.scale
        np.savez(folder / "stats.npz", **arrays)
        if self.estimator is not None:
            import skops.io as sio

            sio.dump(self.estimator, folder / "estimator.skops")
        if len(self._oof):
            self._oof.to_csv(folder / "out_of_fold.csv", index=False)

    @classmethod
    def load(cls, folder: Path) -> Detector:
        folder = Path(folder)
        state = json.loads((folder / "detector.json").read_text())
        if state.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported detector format {state.get('format_version')}")
        det = cls()
        det.threshold = float(state["threshold"])
        det.chosen = state["chosen"]
        det.feature_names = list(state["feature_names"])
        det.raw_columns = list(state["raw_columns"])
        det.unsup_components = [
            (str(n), float(m), float(q)) for n, m, q in state["unsup_components"]
        ]
        det.unsup_center = float(state["unsup_center"])
        det.unsup_slope = float(state["unsup_slope"])
        det.smoothing = int(state["smoothing"])
        det.calibration = tuple(state["calibration"]) if state["calibration"] is not None else None
        det.seed = int(state["seed"])
        with np.load(folder / "stats.npz", allow_pickle=False) as data:
            det.raw_median = data["raw_median"]
            det.raw_scale = data["raw_scale"]
            for key in state["cell_stats"]:
                det.cell_stats[key] = CellStats(data[f"{key}:median"], data[f"{key}:scale"])
        if state["estimator"]:
            import skops.io as sio

            path = folder / state["estimator"]
            untrusted = sio.get_untrusted_types(file=path)
            unexpected = sorted(set(untrusted) - set(TRUSTED_TYPES))
            if unexpected:
                raise ValueError(f"{path} holds types outside the trusted list: {unexpected}")
            det.estimator = sio.load(path, trusted=TRUSTED_TYPES)
        report_path = folder / "report.json"
        det.report = json.loads(report_path.read_text()) if report_path.exists() else {}
        oof_path = folder / "out_of_fold.csv"
        if oof_path.exists():
            det._oof = pd.read_csv(
                oof_path, dtype={"clip": str, "kind": str}, keep_default_na=False
            )
        return det


# ------------------------------------------------------------------------------ selection
def _selection_metric(entry: dict[str, Any]) -> float | None:
    cv = entry["grouped_cv"]["auc"]
    if cv is None:
        return None
    per_kind = [
        v["auc"] for v in entry.get("leave_one_kind_out", {}).values() if v["auc"] is not None
    ]
    if not per_kind:
        return round(cv, 4)
    return round(0.5 * cv + 0.5 * min(per_kind), 4)


def _why(chosen: str, candidates: dict[str, Any], loko: dict, supervised_ok: bool) -> str:
    metric = candidates[chosen]["selection_metric"]
    unsup = candidates["unsupervised"]["selection_metric"]
    basis = "mean of grouped-CV AUC and worst leave-one-kind-out AUC" if loko else "grouped-CV AUC"
    if not supervised_ok:
        return (
            "fewer than two labelled anomalous clips: no classifier can be validated by clip, "
            "so the unsupervised score is used."
        )
    if chosen == "unsupervised":
        return (
            f"no fitted scorer beat the unsupervised score ({basis} {unsup}) by "
            f"{SELECTION_MARGIN}, so the label-free score is kept."
        )
    return f"{chosen} had the best {basis} ({metric} vs unsupervised {unsup})."


def _platt(raw: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Logistic calibration ``sigmoid(a * raw + b)`` fitted on out-of-fold scores."""
    from sklearn.linear_model import LogisticRegression

    mu, sd = float(np.mean(raw)), float(np.std(raw)) or 1.0
    model = LogisticRegression(C=100.0, max_iter=1000).fit(((raw - mu) / sd)[:, None], y)
    a = float(model.coef_[0, 0]) / sd
    b = float(model.intercept_[0]) - a * mu
    if a <= 0:  # never invert the ranking
        a, b = 1.0 / sd, -mu / sd
    return a, b


def _apply_platt(params: tuple[float, float], raw: np.ndarray) -> np.ndarray:
    return _sigmoid(params[0] * np.asarray(raw, float) + params[1])


def _f1_at(y: np.ndarray, s: np.ndarray, threshold: float) -> float:
    pred = s >= threshold
    tp = float(np.sum(pred & (y == 1)))
    denom = float(np.sum(pred) + np.sum(y == 1))
    return round(2 * tp / denom, 4) if denom else 0.0


__all__ = ["TRUSTED_TYPES", "Detector", "smooth_within_clips"]
