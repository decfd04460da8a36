"""Detector: grouped CV without leakage, leave-one-kind-out, ranges, persistence, smoothing."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold, cross_val_predict

from videoanom.scoring.detector import TRUSTED_TYPES, Detector, smooth_within_clips
from videoanom.scoring.features import FeatureSet

GRID = (4, 5)


def synthetic(
    n_clips: int,
    frames: int = 40,
    kinds: tuple[str, ...] = (),
    seed: int = 0,
    prefix: str = "clip",
    normal_only: bool = False,
) -> FeatureSet:
    """Clips whose anomalies (frames 15-29) show up in one cell of the error map.

    Kind "a" raises cell (0, 0) and the raw feature ``f_a``; kind "b" raises cell (3, 4) and
    ``f_b``. Clips cycle through ``kinds`` (none: normal clips).
    """
    rng = np.random.default_rng(seed)
    rows, pred, diff = [], [], []
    for ci in range(n_clips):
        kind = "" if normal_only or not kinds else kinds[ci % len(kinds)]
        for f in range(1, frames + 1):
            anomalous = bool(kind) and 15 <= f < 30
            cells = rng.gamma(4.0, 0.25, GRID).astype(np.float32)
            fd = rng.gamma(4.0, 0.25, GRID).astype(np.float32)
            row = {"clip": f"{prefix}{ci:02d}", "frame": f, "label": int(anomalous), "kind": kind}
            row["f_a"] = rng.normal() + (3.0 if anomalous and kind == "a" else 0.0)
            row["f_b"] = rng.normal() + (3.0 if anomalous and kind == "b" else 0.0)
            row["err_mean"] = float(cells.mean())
            if anomalous:
                cell = (0, 0) if kind == "a" else (3, 4)
                cells[cell] += 4.0
                fd[cell] += 1.0
            row["err_p99"] = float(np.quantile(cells, 0.99))
            rows.append(row)
            pred.append(cells)
            diff.append(fd)
    return FeatureSet(
        pd.DataFrame(rows), {"pred_error": np.stack(pred), "frame_diff": np.stack(diff)}
    )


def test_unsupervised_only_without_labels():
    val = synthetic(3, normal_only=True, seed=1)
    test = synthetic(4, kinds=("a", "b"), seed=2)
    det = Detector.fit(val, None)
    assert det.chosen == "unsupervised"
    # local (per-cell normalised) and global (99th percentile) views, stats from val only
    assert [c[0] for c in det.unsup_components] == ["pred_error@1_max", "err_p99"]
    scores, flags = det.score(test)
    assert scores.shape == flags.shape == (len(test),)
    assert ((scores >= 0) & (scores <= 1)).all() and set(np.unique(flags)) <= {0, 1}
    assert roc_auc_score(test.table["label"], scores) > 0.9
    assert det.out_of_fold().empty
    json.dumps(det.report)
    # labels present but no anomalous frame: still unsupervised only
    det2 = Detector.fit(val, synthetic(3, normal_only=True, seed=3))
    assert det2.chosen == "unsupervised"


def _flow_clip(rows: list[tuple[int, int]], frames: int, seed: int) -> np.ndarray:
    """(frames, 4, 5, 8) direction histograms: noise, plus per frame one cell (row, bin)."""
    rng = np.random.default_rng(seed)
    hist = rng.gamma(2.0, 0.005, (frames, *GRID, 8)).astype(np.float32)
    for t in range(frames):
        row, direction = rows[t % len(rows)]
        hist[t, row, t % GRID[1], direction] += 0.5
    return hist


def test_direction_view_accepts_neighbours_directions_only(tmp_path):
    """Normal video moves right (bin 4) along row 2 only. Moving right in row 1, which normal
    video never showed moving, borrows row 2's spread and stays quiet; moving down (bin 6)
    in row 1 does not."""
    val = synthetic(3, normal_only=True, seed=1)
    val.cells["flow_dir"] = _flow_clip([(2, 4)], len(val), seed=1)
    det = Detector.fit(val, None)
    assert [c[0] for c in det.unsup_components] == [
        "pred_error@1_max",
        "err_p99",
        "flow_dir@1_max",
    ]
    test = synthetic(2, normal_only=True, seed=2, frames=20)
    along = test.subset(np.arange(20))
    along.cells["flow_dir"] = _flow_clip([(1, 4)], 20, seed=2)
    across = test.subset(np.arange(20, 40))
    across.cells["flow_dir"] = _flow_clip([(1, 6)], 20, seed=2)
    z_along = det._cell_features(along)["flow_dir@1_max"]
    z_across = det._cell_features(across)["flow_dir@1_max"]
    assert np.median(z_along) < 2.0 < 10.0 < np.median(z_across)
    score_along, _ = det.score(along)
    score_across, _ = det.score(across)
    assert score_across.min() > score_along.max()
    # the direction statistics are saved with the rest (npz, no pickle)
    det.save(tmp_path / "det")
    loaded = Detector.load(tmp_path / "det")
    np.testing.assert_array_equal(loaded.score(across)[0], score_across)


def test_grouped_cv_does_not_leak_clip_identity():
    """Labels are constant per clip and a feature identifies the clip: a frame-level split
    would look perfect, grouped CV by clip must not."""
    rng = np.random.default_rng(0)
    n_clips, frames = 16, 30
    clip_labels = np.array([1, 0] * (n_clips // 2))
    rng.shuffle(clip_labels)
    fingerprints = rng.normal(size=(n_clips, 3))
    rows = []
    for ci in range(n_clips):
        for f in range(1, frames + 1):
            noise = rng.normal(0, 0.01, 3)
            rows.append(
                {
                    "clip": f"c{ci:02d}",
                    "frame": f,
                    "label": int(clip_labels[ci]),
                    "kind": "",
                    **{f"id{j}": fingerprints[ci, j] + noise[j] for j in range(3)},
                }
            )
    table = pd.DataFrame(rows)
    n = len(table)
    cells = {
        k: rng.gamma(4.0, 0.25, (n, *GRID)).astype(np.float32) for k in ("pred_error", "frame_diff")
    }
    test = FeatureSet(table, cells)
    val_rows = table.iloc[:60].assign(label=0, clip=lambda t: "v" + t["clip"])
    val = FeatureSet(val_rows.reset_index(drop=True), {k: v[:60] for k, v in cells.items()})

    x = table[["id0", "id1", "id2"]].to_numpy()
    from sklearn.ensemble import ExtraTreesClassifier

    leaky = cross_val_predict(
        ExtraTreesClassifier(n_estimators=50, random_state=0),
        x,
        table["label"],
        cv=KFold(5, shuffle=True, random_state=0),
        method="predict_proba",
    )[:, 1]
    assert roc_auc_score(table["label"], leaky) > 0.95  # the trap is real

    det = Detector.fit(val, test, seed=0)
    for name, entry in det.report["candidates"].items():
        if name.startswith("classifier:"):
            assert abs(entry["grouped_cv"]["auc"] - 0.5) < 0.25, (name, entry["grouped_cv"])
    assert (
        det.chosen == "unsupervised"
        or det.report["candidates"][det.chosen]["grouped_cv"]["auc"] < 0.75
    )


@pytest.fixture(scope="module")
def fitted():
    val = synthetic(3, normal_only=True, seed=11, prefix="val")
    test = synthetic(8, kinds=("a", "b"), seed=12)
    return val, test, Detector.fit(val, test, seed=0)


def test_leave_one_kind_out_and_ranges(fitted):
    _val, test, det = fitted
    rep = det.report
    assert rep["leave_one_kind_out"] is True
    assert rep["anomaly_kinds"] == ["a", "b"]
    for entry in rep["candidates"].values():
        assert set(entry["leave_one_kind_out"]) == {"a", "b"}
    assert set(rep["baseline_frame_diff"]["leave_one_kind_out"]) == {"a", "b"}
    # classifiers see f_a only for kind a: LOKO punishes them, the cell score generalises
    logistic = rep["candidates"]["classifier:logistic"]
    assert (
        rep["candidates"]["unsupervised"]["selection_metric"] >= logistic["selection_metric"] - 0.05
    )
    assert rep["chosen"] in rep["candidates"] and rep["why"]
    assert 0.0 <= det.threshold <= 1.0
    scores, flags = det.score(test)
    assert ((scores >= 0) & (scores <= 1)).all()
    np.testing.assert_array_equal(flags, (scores >= det.threshold).astype(int))
    assert roc_auc_score(test.table["label"], scores) > 0.9
    oof = det.out_of_fold()
    assert list(oof.columns[:4]) == ["clip", "frame", "label", "kind"]
    assert {"score", "unsupervised", "baseline"} <= set(oof.columns) and len(oof) == len(test)
    json.dumps(rep)
    assert rep["smoothing_window"] in (1, 3, 5, 9, 15)


def test_deterministic(fitted):
    val, test, det = fitted
    again = Detector.fit(val, test, seed=0)
    assert again.chosen == det.chosen and again.threshold == det.threshold
    np.testing.assert_array_equal(again.score(test)[0], det.score(test)[0])


@pytest.mark.parametrize("chosen", ["unsupervised", "classifier:extra_trees", "combined:logistic"])
def test_save_load_round_trip_without_pickle(fitted, tmp_path, chosen):
    val, test, det = fitted
    det = Detector.fit(val, test, seed=0)
    if chosen != det.chosen:  # force each scorer through persistence
        det.chosen = chosen
        if chosen != "unsupervised":
            det.estimator = det._make(chosen.split(":")[1]).fit(*_xy(det, test))
            det.calibration = (1.0, 0.0)
    det.save(tmp_path / "d")
    files = {p.name for p in (tmp_path / "d").iterdir()}
    assert not any(name.endswith((".pkl", ".pickle", ".joblib")) for name in files)
    if det.estimator is not None:
        untrusted = sio.get_untrusted_types(file=tmp_path / "d" / "estimator.skops")
        assert set(untrusted) <= set(TRUSTED_TYPES)
    loaded = Detector.load(tmp_path / "d")
    assert loaded.chosen == det.chosen and loaded.threshold == det.threshold
    s1, f1 = det.score(test)
    s2, f2 = loaded.score(test)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(f1, f2)


def _xy(det, fs):
    x, _ = det._feature_matrix(fs)
    return x, fs.table["label"].to_numpy()


def test_smoothing_stays_within_clip():
    clips = np.array(["a"] * 5 + ["b"] * 5)
    frames = np.array([1, 2, 3, 4, 5] * 2)
    scores = np.array([0, 0, 0, 0, 0, 10, 10, 10, 10, 10], float)
    out = smooth_within_clips(scores, clips, frames, 5)
    np.testing.assert_array_equal(out[:5], 0)
    np.testing.assert_array_equal(out[5:], 10)
    # rows out of frame order are smoothed in frame order
    perm = np.array([4, 3, 2, 1, 0, 9, 8, 7, 6, 5])
    ramp = np.arange(10, dtype=float)
    np.testing.assert_allclose(
        smooth_within_clips(ramp[perm], clips[perm], frames[perm], 3),
        smooth_within_clips(ramp, clips, frames, 3)[perm],
    )
    np.testing.assert_array_equal(smooth_within_clips(scores, clips, frames, 1), scores)
