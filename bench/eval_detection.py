"""Measure frame-level anomaly detection on synthetic demo locations the training never saw.

    python bench/eval_detection.py --seeds 11 12 --locations 2 --out docs/detection.md

For every (seed, location): write demo data (``write_demo_datastore`` with that seed and
``--test-clips`` test clips), prepare it, train a PredNet (cached under ``--cache``), extract
features for the val and test clips, fit :class:`videoanom.scoring.Detector` and report
grouped-CV / leave-one-kind-out AUCs of every candidate and of the frame-difference
baseline. ``--ucsd`` adds a UCSD-style location (unsupervised path, scored on its labelled
test clips). Trained models and features are cached, so re-running after a change of the
detector only refits it.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "code"))

logger = logging.getLogger("eval_detection")


def _kinds_from_labels_csv(path: Path) -> dict[str, str]:
    kinds: dict[str, str] = {}
    if not path.exists():
        return kinds
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            kinds[row["clip"]] = row.get("kind", "") or ""
    return kinds


def _ucsd_kinds(n_test: int) -> dict[str, str]:
    from videoanom.data.demo import anomaly_kind_for_test_clip

    return {
        f"Test{ci:03d}": anomaly_kind_for_test_clip(ci, first_is_normal=False) or ""
        for ci in range(1, n_test + 1)
    }


def prepare_and_train(
    key: str, write_data, kinds_fn, cache: Path, max_epochs: int, trials: int
) -> tuple[Path, Path, dict[str, str]]:
    """Write + prepare + train once per key; return (prepared dir, model path, clip kinds)."""
    from videoanom.data.datastore import LocalDatastore
    from videoanom.data.prepare import PrepConfig, prepare_location
    from videoanom.training.search_space import DEFAULTS
    from videoanom.training.trainer import TrainConfig, train_prednet

    folder = cache / key
    raw = folder / "raw"
    prepared = folder / "prepared"
    model_path = folder / f"prednet_e{max_epochs}_t{trials}.keras"
    if not (prepared / "data.h5").exists():
        if raw.exists():
            import shutil

            shutil.rmtree(raw)
        location = write_data(raw)
        prepare_location(LocalDatastore(raw), location, prepared, PrepConfig())
        (folder / "location.txt").write_text(location)
    location = (folder / "location.txt").read_text().strip()
    kinds = kinds_fn(raw / location)
    if not model_path.exists():
        from videoanom.data.dataset import load_split

        train = load_split(prepared / "data.h5", "train")
        val = load_split(prepared / "data.h5", "val")
        best = None
        for trial in range(trials):
            start = time.time()
            result = train_prednet(
                dict(DEFAULTS),
                train,
                val,
                TrainConfig(max_epochs=max_epochs, seed=trial, verbose=0),
            )
            logger.info(
                "%s trial %d: val MAE %.5f (copy-last %.5f), %d epochs, %.0f s",
                key,
                trial,
                result.val_mae,
                result.copy_last_mae,
                result.epochs_run,
                time.time() - start,
            )
            if best is None or result.val_loss < best.val_loss:
                best = result
        best.model.save(model_path)
        (folder / f"train_e{max_epochs}_t{trials}.json").write_text(json.dumps(best.summary()))
    return prepared, model_path, kinds


def demo_writer(seed: int, loc_index: int, test_clips: int):
    from videoanom.data.demo import write_demo_datastore

    def write(root: Path) -> str:
        names = write_demo_datastore(
            root, locations=loc_index + 1, seed=seed, test_clips=test_clips, progress=False
        )
        # keep only the requested location
        import shutil

        for name in names[:-1]:
            shutil.rmtree(root / name)
        return names[-1]

    return write


def ucsd_writer(seed: int, test_clips: int):
    from videoanom.data.demo import write_ucsd_style_location

    def write(root: Path) -> str:
        write_ucsd_style_location(
            root,
            "UCSDped_synth",
            seed=seed,
            train_clips=6,
            test_clips=test_clips,
            frames_per_clip=120,
        )
        return "UCSDped_synth"

    return write


def _features(model, prepared: Path, folder: Path, kinds: dict[str, str]):
    from videoanom.data.dataset import load_split
    from videoanom.scoring.features import ExtractConfig, FeatureSet, split_features

    out = {}
    for split in ("train", "val", "test"):
        target = folder / split
        if (target / "features.csv").exists():
            out[split] = FeatureSet.load(target)
            continue
        data = load_split(prepared / "data.h5", split)
        start = time.time()
        fs = split_features(model, data, ExtractConfig(), kinds)
        logger.info("%s: %d %s frames in %.1f s", folder.name, len(fs), split, time.time() - start)
        fs.save(target)
        out[split] = fs
    return out["train"], out["val"], out["test"]


def throughput(
    model, prepared: Path, n_frames: int = 2880, memory_frames: int = 0
) -> dict[str, float]:
    """Frames/s of the bare model (non-overlapping windows) vs extract_features end to end."""
    from videoanom.data.dataset import load_split
    from videoanom.scoring.features import ExtractConfig, _runner, extract_features

    config = ExtractConfig()
    frames = load_split(prepared / "data.h5", "test").frames
    frames = np.concatenate([frames] * (-(-n_frames // len(frames))))[:n_frames]
    steps, batch = config.steps, config.batch_size
    n = (len(frames) // (steps * batch)) * steps * batch
    frames = frames[:n]
    run = _runner(model, steps)
    batches = frames.reshape(-1, batch, steps, *frames.shape[1:])
    zero = model.zero_state(batch)
    run(batches[0], zero)  # trace
    extract_features(model, iter(frames[: config.window * 2]), "warm", config)
    start = time.time()
    for b in batches:
        pred, _errs, _state = run(b, zero)
        pred.numpy()
    bare = n / (time.time() - start)
    import tracemalloc

    tracemalloc.start()
    start = time.time()
    extract_features(model, (f for f in frames), "speed", config)
    full = n / (time.time() - start)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    memory = {}
    if memory_frames:
        import resource

        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        source = load_split(prepared / "data.h5", "test").frames

        def stream():
            for i in range(memory_frames):
                yield source[i % len(source)]

        start = time.time()
        fs = extract_features(model, stream(), "memory", config)
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        memory = {
            "memory_frames": len(fs),
            "memory_fps": round(len(fs) / (time.time() - start), 1),
            "peak_rss_mb": round(rss1),
            "peak_rss_increase_mb": round(rss1 - rss0),
        }
    return {
        **memory,
        "frames": n,
        "bare_fps": round(bare, 1),
        "scoring_fps": round(full, 1),
        "ratio": round(full / bare, 3),
        "python_peak_mb": round(peak / 2**20, 1),
    }


def evaluate_location(key, label, prepared, model_path, kinds, args) -> dict:
    import keras

    import videoanom.prednet  # noqa: F401  (registers PredNet for loading)
    from videoanom.scoring import features as features_module
    from videoanom.scoring.detector import Detector
    from videoanom.scoring.features import FeatureSet

    model = keras.models.load_model(model_path, compile=False)
    # keyed by the feature code too: a change of features.py never reuses stale features
    code = hashlib.sha256(Path(features_module.__file__).read_bytes()).hexdigest()[:8]
    folder = args.cache / key / f"features_{model_path.stem}_{code}"
    train, val, test = _features(model, prepared, folder, kinds)
    # normal video for the per-cell statistics: the val clips, and with --normal train+val
    # also the training clips (more spatial coverage of where normal motion happens)
    normal = FeatureSet.concat([train, val]) if args.normal == "train+val" else val
    start = time.time()
    detector = Detector.fit(normal, test, seed=0)
    fit_s = time.time() - start
    detector.save(args.cache / key / f"detector_{model_path.stem}")
    result = {
        "key": key,
        "label": label,
        "report": detector.report,
        "fit_s": round(fit_s, 1),
        "train": json.loads(
            (args.cache / key / f"train_e{_epochs(key, args)}_t{args.trials}.json").read_text()
        ),
    }
    # reference scores on every labelled test frame (no fitting involved)
    table = test.table
    mask = table["label"].isin([0, 1]).to_numpy()
    y = table["label"].to_numpy()[mask]
    refs = {}
    if len(np.unique(y)) == 2:
        from sklearn.metrics import roc_auc_score

        refs["psnr (negated)"] = roc_auc_score(y, -table["psnr"].to_numpy()[mask])
        refs["mean squared error"] = roc_auc_score(y, table["err_mean"].to_numpy()[mask])
        refs["frame difference (raw mean)"] = roc_auc_score(y, table["frame_diff"].to_numpy()[mask])
        for name, data in (("train+val", FeatureSet.concat([train, val])), ("val only", val)):
            unlabelled = Detector.fit(data, None)
            u, _ = unlabelled.score(test.subset(mask))
            refs[f"unsupervised detector without labels, normal stats from {name}"] = roc_auc_score(
                y, u
            )
    result["reference_auc"] = {k: round(float(v), 4) for k, v in refs.items()}
    if args.throughput and not result.get("throughput") and key == locations_to_run(args)[0][0]:
        result["throughput"] = throughput(model, prepared, memory_frames=args.memory_frames)
    logger.info("%s: chosen %s; %s", key, detector.chosen, json.dumps(detector.report.get("final")))
    return result


TRIED = """
## What was tried (seed 11 location 0; frame-level AUC: all labelled test frames, per kind)

Single unsupervised statistics of the same PredNet (no labels; per kind = that kind's clips
plus the normal clip):

| score | all | fast_object | vehicle | wrong_way_crossing |
|---|---|---|---|---|
| mean squared error (global) | 0.933 | 0.974 | 0.983 | 0.758 |
| 99th percentile of squared error | 0.957 | 0.959 | 0.984 | 0.860 |
| max 8x8-cell error, not normalised | 0.879 | 0.974 | 0.968 | 0.615 |
| PredNet layer-1 / layer-2 / layer-3 error | 0.928 / 0.895 / 0.841 | | | 0.808 / 0.705 / 0.615 |
| raw frame difference | 0.795 | 0.962 | 0.681 | 0.761 |
| **8x8 cells, per-cell normalised, max** (default) | 0.958 | 0.976 | 0.964 | 0.913 |
| same, q95 instead of q99 | 0.966 | 0.975 | 0.965 | 0.939 |
| same, floor 0.3 instead of 0.1 | 0.960 | 0.976 | 0.966 | 0.913 |
| same, mean of the top-3 cells | 0.962 | 0.975 | 0.977 | 0.922 |
| same, + centred moving average 9 frames | 0.976 | 0.990 | 0.996 | 0.937 |
| 16x16 cells (2x2-pooled), max | 0.917 | 0.971 | 0.963 | 0.787 |
| frame difference per 8x8 cell normalised (baseline) | 0.827 | 0.878 | 0.634 | 0.766 |

The cell defaults (8x8 cells, q99, floor 0.1, max) were fixed from NOTES.md before these
runs and not retuned (q95 looked slightly better here, on one scene). Global statistics and the
un-normalised cell max lose the wrong-way crossing (a pedestrian where nobody walks: small
error, but in cells whose normal error is tiny); the per-cell normalisation is what makes the
unseen kind detectable. Classifiers (logistic regression, extra trees) on all features
reached grouped-CV AUC 0.94 but lost the held-out kind (0.85-0.89), which the selection
(mean of grouped-CV AUC and worst leave-one-kind-out AUC, a fitted scorer must win by 0.01)
penalises. An earlier version ranked the unsupervised candidate on its sigmoid-calibrated
value, which saturated at 1.0 for strong anomalies (ties; 0.955 instead of 0.958); candidates
are now ranked on raw scores and the calibration is log-compressed.

Second iteration: on seed 12 location 0 the per-cell score alone fell to 0.829 (fast_object
0.773, vehicle 0.800) while the global 99th-percentile error reached 0.878: the only
validation clip (120 frames) never had a pedestrian in the lower walkway cells, so normal
pedestrians there scored z ~ 2000. Floors scaled by a higher quantile of the per-cell spread,
a 3x3 dilation of the spread map, top-k cells and 16x16 cells did not fix it (0.795-0.853)
or cost the wrong-way kind on seed 11. What fixed it is a second, global view: the
unsupervised score is now the mean of the per-cell max z and the frame's 99th-percentile
pixel error, each log-compressed and scaled by its own median and q99 on the normal val clips
(no labels):

| location | per-cell z | p99 error | mean of both (new default) | max of both |
|---|---|---|---|---|
| demo seed 11 loc 0 | 0.958 | 0.957 | 0.967 | 0.961 |
| demo seed 12 loc 0 | 0.829 | 0.878 | 0.906 | 0.897 |
| UCSD-style seed 11 (4-epoch model) | 0.746 | 0.851 | 0.864 | 0.865 |

Third iteration: seed 12 location 1 stayed at 0.859 (wrong-way crossing 0.751) with the
mean of both views; its one validation clip had pedestrians in only two cells (the per-cell
spread map was zero elsewhere). Giving the detector the training clips' features as well as
the val clip's as its normal video (both normal; never test frames; the model has seen the
training frames, so their errors are a little low, but they show where normal motion
happens) changed the unsupervised grouped-CV AUC / worst-kind AUC to:

| location | normal = val only | normal = train + val (bench default) |
|---|---|---|
| demo seed 11 loc 0 | 0.967 / 0.922 | 0.971 / 0.941 |
| demo seed 11 loc 1 | 0.958 / 0.960 | 0.954 / 0.936 |
| demo seed 12 loc 0 | 0.906 / 0.905 | 0.949 / 0.912 |
| demo seed 12 loc 1 | 0.859 / 0.751 | 0.884 / 0.820 |

So the integrator should pass all normal clips of a location (train + val features) as the
detector's normal set; `--normal val` reproduces the val-only numbers.

Not solved: seed 12 location 1, wrong-way crossing (held-out kind AUC 0.83). Its pure-normal
test clip is busier than the normal stretches of the anomaly clips (median unsupervised score
1.11 vs about 0), and in one of its three wrong-way clips the crossing scores only 0.82
(median) - it overlaps normal walkway traffic. Neither view alone does better on that kind
(per-cell 0.776, p99 0.739). Classifiers did not help there either (0.75-0.83 held out).
"""


# seed 12 location 1 attempts that were not adopted: (variant, s11 l0, s11 l1, s12 l0,
# s12 l1, UCSD-style), each grouped-CV AUC / worst held-out kind AUC
FURTHER_ROWS = [
    (
        "current (mean of per-cell max z and p99)",
        "0.986 / 0.962",
        "0.958 / 0.952",
        "0.959 / 0.931",
        "0.898 / 0.831",
        "0.916 / 0.955",
    ),
    (
        "centred temporal mean over 3 / 9 frames of the cell maps before normalising",
        "0.984 / 0.963, 0.978 / 0.967",
        "0.956 / 0.946, 0.956 / 0.935",
        "0.958 / 0.920, 0.946 / 0.884",
        "0.893 / 0.824, 0.890 / 0.823",
        "0.915 / 0.949, 0.917 / 0.951",
    ),
    (
        "temporal max over 3 frames",
        "0.984 / 0.959",
        "0.958 / 0.947",
        "0.958 / 0.928",
        "0.899 / 0.829",
        "0.915 / 0.950",
    ),
    (
        "MAD spread (3 x 1.4826 MAD) instead of q99 - median",
        "0.958 / 0.826",
        "0.924 / 0.903",
        "0.895 / 0.778",
        "0.864 / 0.770",
        "0.907 / 0.864",
    ),
    (
        "top-3 cells instead of max",
        "0.987 / 0.965",
        "0.963 / 0.958",
        "0.958 / 0.927",
        "0.896 / 0.827",
        "0.919 / 0.958",
    ),
    (
        "+ per-cell frame-difference z as a third view",
        "0.974 / 0.931",
        "0.964 / 0.955",
        "0.951 / 0.915",
        "0.895 / 0.836",
        "0.918 / 0.949",
    ),
    (
        "+ PredNet layer-0 / layer-1 error as a third view (global only; "
        "no per-cell maps of higher layers are stored)",
        "0.988 / 0.964",
        "0.946 / 0.941",
        "0.957 / 0.935",
        "0.895 / 0.819",
        "0.916 / 0.952",
    ),
    (
        "per-cell ratio sqrt(error) / (frame diff + 0.01), normalised, with p99",
        "0.981 / 0.976",
        "0.955 / 0.920",
        "0.956 / 0.904",
        "0.904 / 0.837",
        "0.915 / 0.951",
    ),
    (
        "neighbourhood floor: scale = max(own spread, 0.05 x 3x3-max spread) + floor",
        "0.982 / 0.947",
        "0.960 / 0.943",
        "0.961 / 0.944",
        "0.916 / 0.873",
        "0.919 / 0.957",
    ),
    (
        "same with 0.1 / 0.25 / 1.0 x",
        "0.979 / 0.935, 0.973 / 0.918, 0.971 / 0.919",
        "0.958 / 0.939, 0.959 / 0.949, 0.957 / 0.959",
        "0.958 / 0.936, 0.952 / 0.924, 0.934 / 0.885",
        "0.909 / 0.880, 0.900 / 0.863, 0.884 / 0.810",
        "0.919 / 0.961, 0.919 / 0.953, 0.921 / 0.950",
    ),
    (
        "neighbourhood floor 0.05 + max of the two views instead of the mean",
        "0.982 / 0.949",
        "0.967 / 0.950",
        "0.962 / 0.937",
        "0.918 / 0.891",
        "0.912 / 0.911",
    ),
    (
        "neighbourhood floor 0.05 + log-sum-exp of the two views",
        "0.981 / 0.946",
        "0.967 / 0.950",
        "0.962 / 0.939",
        "0.919 / 0.889",
        "0.913 / 0.929",
    ),
    (
        "smoothing windows up to 31 (current score)",
        "0.992 / 0.980 (31)",
        "unchanged (9)",
        "0.961 / 0.925 (15)",
        "0.903 / 0.833 (21)",
        "0.916 / 0.955 (15)",
    ),
    (
        "per-cell z of one PredNet layer's error map (E_l averaged over channels, on the same "
        "8x8-px cell grid), alone: layer 1 / 2 / 3",
        "0.946 / 0.902, 0.956 / 0.905, 0.933 / 0.762",
        "0.938 / 0.915, 0.927 / 0.899, 0.926 / 0.921",
        "0.869 / 0.681, 0.849 / 0.630, 0.892 / 0.786",
        "0.901 / 0.808, 0.907 / 0.893, 0.888 / 0.864",
        "0.860 / 0.809, 0.903 / 0.873, 0.876 / 0.818",
    ),
    (
        "layer-0 error-unit map (mean absolute error, E_0) instead of the squared error, with p99",
        "0.984 / 0.961",
        "0.955 / 0.947",
        "0.962 / 0.936",
        "0.912 / 0.864",
        "0.916 / 0.953",
    ),
    (
        "layer-1 / layer-2 map z instead of the layer-0 per-cell z, with p99",
        "0.968 / 0.910, 0.970 / 0.910",
        "0.949 / 0.925, 0.945 / 0.922",
        "0.946 / 0.865, 0.933 / 0.873",
        "0.923 / 0.906, 0.906 / 0.882",
        "0.909 / 0.925, 0.912 / 0.944",
    ),
    (
        "+ layer-1 map z as a third view (mean)",
        "0.976 / 0.937",
        "0.954 / 0.934",
        "0.949 / 0.878",
        "0.912 / 0.882",
        "0.913 / 0.947",
    ),
    (
        "every layer's map z (layers 0-3) + p99, mean / max of the views",
        "0.972 / 0.919, 0.969 / 0.929",
        "0.948 / 0.928, 0.949 / 0.928",
        "0.937 / 0.862, 0.945 / 0.864",
        "0.914 / 0.892, 0.920 / 0.888",
        "0.911 / 0.939, 0.907 / 0.943",
    ),
    (
        "neighbourhood floor 0.05 + layer-1 map z as a third view, mean / max of the views",
        "0.976 / 0.933, 0.964 / 0.911",
        "0.955 / 0.942, 0.948 / 0.921",
        "0.953 / 0.898, 0.949 / 0.886",
        "0.926 / 0.902, 0.930 / 0.916",
        "0.914 / 0.949, 0.908 / 0.946",
    ),
    (
        "per-cell fusion of layers 0 and 1 (mean of each cell's compressed z, each layer scaled "
        "by its normal per-frame max), max over cells, with p99; without / with neighbourhood "
        "floor 0.05",
        "0.979 / 0.941, 0.979 / 0.940",
        "0.953 / 0.930, 0.955 / 0.939",
        "0.955 / 0.896, 0.955 / 0.910",
        "0.912 / 0.881, 0.923 / 0.900",
        "0.913 / 0.948, 0.915 / 0.953",
    ),
    (
        "same fusion with the min over layers 0 and 1 (both scales must agree); without / with "
        "neighbourhood floor 0.05",
        "0.982 / 0.953, 0.983 / 0.952",
        "0.951 / 0.933, 0.955 / 0.944",
        "0.955 / 0.910, 0.956 / 0.914",
        "0.906 / 0.874, 0.917 / 0.888",
        "0.915 / 0.953, 0.918 / 0.956",
    ),
]


def _further() -> str:
    header = (
        "| variant | s11 l0 | s11 l1 | s12 l0 | s12 l1 | UCSD-style |\n|---|---|---|---|---|---|"
    )
    rows = ["| " + " | ".join(r) + " |" for r in FURTHER_ROWS]
    return FURTHER_PRE + "\n" + "\n".join([header, *rows]) + "\n" + FURTHER_POST


FURTHER_PRE = """
Further attempts on seed 12 location 1 (none reached the bar; the code was left unchanged).
These were run offline on the cached features, using the same unsupervised AUCs, the same
per-kind sets and the same smoothing choice as the bench. Each cell below is grouped-CV AUC /
worst held-out kind AUC after smoothing. Every figure was chosen on the same out-of-fold
scores it is reported on, so all of them are optimistic.
"""
FURTHER_POST = """
Diagnosis: in that location's pure-normal test clip, normal pedestrians cross the row of cells
just above the walkway. The train+val normal video never shows motion there (per-cell spread
about 0), so these frames reach max z of about 7. The weakest wrong-way clip (test_010) gives
almost nothing to the global p99 view (median 0.00 on the normal scale), so averaging the two
views halves its per-cell evidence. A small neighbourhood floor on the per-cell scale makes
cells next to normal motion less sensitive. This is the most useful change found, giving
0.916 / 0.873, and 0.918 / 0.891 when combined with a max of the views. It does not reach 0.90
on the held-out kind, it lowers seed 11 location 0's worst kind by 0.01-0.03, and the
weight was picked on these same scores. It is not adopted.

Per-cell maps of the higher PredNet layers' errors were tried next (the rows from "per-cell z
of one PredNet layer's error map" on). They need an output mode of the PredNet that also
returns each layer's error units E_l averaged over channels, (B, T, H / 2**l, W / 2**l), and
features.py storing them on the 8x8-px cell grid (cells of 8 / 2**l layer pixels); the
features were re-extracted with that change, the layer-0 cell maps came out bit-identical, and
the change was then reverted. The higher layers do help the wrong-way kind on seed 12
location 1 (0.88-0.91 with the layer-1 or layer-2 map and p99, against 0.83), but they lose
seed 12 location 0 (fast_object / vehicle 0.72 / 0.68 with the layer-1 map alone, fast_object
0.87-0.88 with p99) and cost seed 11 location 0's wrong-way kind (0.91-0.94 against 0.96): in
both seed 12 locations the pure-normal test clip's pedestrians reach into the row of cells
just above the walkway, which the normal video never shows at any layer (on seed 12 location
0 the layer-2 spread there is 1-8x the typical cell's, against 17-36x on the walkway), so the
coarser maps flag them too. The closest combination to the bar (per-cell
fusion of layers 0 and 1 with the neighbourhood floor) gives a worst held-out kind of exactly
0.900 on seed 12 location 1 and 0.910 on seed 12 location 0, but it was the best of about 40
variants picked on these same scores, and it lowers seed 11 location 0 (0.962 to 0.940) and
seed 12 location 0 (0.931 to 0.910); it is not adopted. What separates the remaining
false alarms from the weakest wrong-way crossing is the direction of motion (along the walkway
vs across it), which none of these error maps encodes.
"""

FLOW_TEXT_TEMPLATE = """
## Fourth iteration: a motion-direction view (adopted)

The unsupervised score now has a third view, the direction of motion. features.py computes
dense optical flow (OpenCV Farneback, 2 pyramid levels, 9x9 window, 1 iteration) from the
previous frame on the model-size grey frames, and per 8x8-px cell a histogram of 8 flow
directions weighted by the flow magnitude (pixels under 0.05 px/frame left out): the
`flow_dir` cell map, (frames, rows, cols, 8). It runs in a worker thread while the PredNet
runs, on the frames already decoded for the window. Since the scoring-throughput work of
issue 3 the flow is measured on every other frame only (frame 2k from frame 2k - 1; odd
frames repeat the even frame before): half the cost of the costliest feature, and the tables
above were measured that way. On the same models and frames, against flow on every frame:
the unsupervised score's AUCs (grouped CV and each held-out kind) moved by -0.008 to +0.007,
the reported scores' by -0.004 to +0.013, the fitted scorers' by -0.022 to +0.018 (all but
two within 0.011). Flow over two frames (2k - 2 to 2k) lost up to 0.02 on fast objects.
The detector normalises every cell and
direction like the error cells, z = (h - median) / (q99 - median + 0.1 x typical spread) on
the normal clips, except that a cell's spread for a direction is the largest in its 3x3
neighbourhood: a cell where normal video never moved accepts the directions its neighbours
move in, but not others. The view is the max of z over cells and directions, log-compressed
and scaled by its median and q99 on normal video like the other two, and the unsupervised
score is the mean of the three views. Seed 12 location 1's false alarms (pedestrians walking
along the walkway in the row above it) move in the walkway's direction; the wrong-way
crossing moves across it.

Offline on the same frames (unsupervised score only, grouped-CV AUC / worst held-out kind AUC
after smoothing; flow recomputed from the prepared frames, the PredNet features from the
cache). The settings were picked among about 40 variants on these same scores, so they are
optimistic; the bench figures above are the adopted code's, after re-extracting the features.

{FLOW_TABLE}

What makes the difference is the per-direction normalisation with the neighbourhood spread:
scoring the surprise of a direction (-log p) weights it by the flow mass, which normal
walkway traffic dominates, and the weakest crossing (a 2-3 px wide figure moving 0.6 px/frame
across, with flow of 0.1-0.3 px/frame on its pixels) hardly adds any. The flow view alone is
weak on the fast objects and vehicles (prediction error sees those better) and strong on the
crossing; the mean of the three views keeps both. It is not the frame-difference baseline in
disguise: the per-cell frame-difference z as a third view gave 0.895 / 0.836 on seed 12
location 1 (table above). Seed 11 location 0's worst held-out kind drops from 0.962 to 0.954
offline. The Farneback flow costs about 0.46 ms per 64x80 frame on one core (3 iterations:
0.8 ms; downsampled frames lost seed 12 location 1).
"""

FLOW_ROWS = [
    [
        "current before this change (mean of per-cell max z and p99)",
        "0.986 / 0.962",
        "0.958 / 0.952",
        "0.959 / 0.931",
        "0.898 / 0.831",
        "0.916 / 0.955",
    ],
    [
        "magnitude-weighted surprise -log p(direction given cell), p from normal flow pooled "
        "with the 8 neighbours; flow alone / as a third view",
        "0.898 / 0.811, 0.980 / 0.944",
        "0.960 / 0.933, 0.977 / 0.967",
        "0.892 / 0.833, 0.969 / 0.960",
        "0.762 / 0.730, 0.893 / 0.821",
        "0.932 / 0.872, 0.919 / 0.957",
    ],
    [
        "same, blurred frames or flow over 3 / 5 frames, as a third view",
        "0.976-0.983 / 0.937-0.948",
        "0.960-0.979 / 0.959-0.966",
        "0.961-0.970 / 0.930-0.959",
        "0.860-0.899 / 0.781-0.834",
        "0.918-0.921 / 0.954-0.961",
    ],
    [
        "normal-flow (spatio-temporal gradient) direction histograms, surprise, third view",
        "0.978-0.979 / 0.932-0.934",
        "0.954 / 0.945-0.948",
        "0.960-0.962 / 0.942-0.945",
        "0.876-0.879 / 0.799-0.810",
        "0.917 / 0.950-0.952",
    ],
    [
        "per-cell, per-direction z, own spread only; alone / third view (3 iterations)",
        "0.921 / 0.856, 0.987 / 0.969",
        "0.947 / 0.868, 0.978 / 0.968",
        "0.940 / 0.821, 0.981 / 0.957",
        "0.849 / 0.712, 0.933 / 0.911",
        "0.929 / 0.814, 0.919 / 0.949",
    ],
    [
        "per-cell, per-direction z, 3x3-neighbourhood spread; alone / third view (3 iterations)",
        "0.936 / 0.879, 0.984 / 0.957",
        "0.962 / 0.867, 0.984 / 0.978",
        "0.964 / 0.941, 0.978 / 0.970",
        "0.927 / 0.955, 0.945 / 0.935",
        "0.930 / 0.815, 0.921 / 0.961",
    ],
    [
        "same, max instead of mean of the three views",
        "0.982 / 0.959",
        "0.982 / 0.975",
        "0.972 / 0.949",
        "0.928 / 0.912",
        "0.909 / 0.908",
    ],
    [
        "same, noise floor 0.1 px/frame instead of 0.05",
        "0.983 / 0.956",
        "0.985 / 0.979",
        "0.978 / 0.971",
        "0.936 / 0.914",
        "0.921 / 0.961",
    ],
    [
        "same, flow on 2x2-downsampled frames (4x cheaper)",
        "0.986 / 0.961",
        "0.976 / 0.966",
        "0.971 / 0.954",
        "0.909 / 0.854",
        "0.919 / 0.955",
    ],
    [
        "**adopted: 3x3-neighbourhood spread, third view (mean), 1 Farneback iteration**",
        "0.983 / 0.954",
        "0.986 / 0.981",
        "0.978 / 0.971",
        "0.944 / 0.932",
        "0.921 / 0.963",
    ],
]
FLOW_TEXT = FLOW_TEXT_TEMPLATE.replace(
    "{FLOW_TABLE}",
    "| variant | s11 l0 | s11 l1 | s12 l0 | s12 l1 | UCSD-style |\n|---|---|---|---|---|---|\n"
    + "\n".join("| " + " | ".join(r) + " |" for r in FLOW_ROWS),
)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def render(results: list[dict], args) -> str:
    lines = [
        "# Frame-level anomaly detection on unseen synthetic locations",
        "",
        "Command: `python bench/eval_detection.py "
        + " ".join(sys.argv[1:] if sys.argv[1:] else [])
        + "`",
        "",
        f"Demo seeds {args.seeds} (training elsewhere uses seed 0), {args.locations} location(s) "
        f"per seed, {args.test_clips} test clips per demo location (clip 1 normal, the rest one "
        f"anomaly each, cycling fast_object / vehicle / wrong_way_crossing), PredNet trained "
        f"with defaults for at most {args.max_epochs} epochs x {args.trials} trial(s). AUCs are "
        "frame-level ROC AUC over all labelled test frames: grouped CV = out-of-fold by clip; "
        "LOKO = leave-one-kind-out (the kind's clips are held out of classifier training and "
        "scored with the pure-normal clips). Normal statistics for the detector from "
        f"the {args.normal} clips of each location (never test clips).",
        "",
    ]
    lines += [
        "## Summary",
        "",
        "Final = the reported score (chosen scorer, smoothing, calibration), out of fold. "
        "Bar: final grouped-CV AUC >= 0.90 and every held-out kind >= 0.90, unsupervised "
        ">= 0.80, above the baseline.",
        "",
        "| location | chosen | final grouped-CV AUC | final worst held-out kind AUC | "
        "unsupervised AUC | frame-diff baseline AUC | bar met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rep = r["report"]
        if "final" not in rep:
            continue
        final = rep["final"]
        worst = min(
            (v["auc"] for v in final.get("leave_one_kind_out", {}).values() if v["auc"]),
            default=None,
        )
        unsup = rep["candidates"]["unsupervised"]["grouped_cv"]["auc"]
        base = rep["baseline_frame_diff"]["grouped_cv"]["auc"]
        met = (
            final["grouped_cv"]["auc"] >= 0.9
            and (worst is None or worst >= 0.9)
            and unsup >= 0.8
            and final["grouped_cv"]["auc"] > base
        )
        lines.append(
            f"| {r['label']} | {rep['chosen']} | {_fmt(final['grouped_cv']['auc'])} | "
            f"{_fmt(worst)} | {_fmt(unsup)} | {_fmt(base)} | {'yes' if met else 'no'} |"
        )
    lines.append("")
    for r in results:
        rep = r["report"]
        lines += [f"## {r['label']} (`{r['key']}`)", ""]
        lines.append(
            f"- clips/frames scored: {rep.get('n_clips')} / {rep.get('n_frames')} "
            f"({rep.get('n_anomalous_frames', 0)} anomalous in {rep.get('n_anomalous_clips', 0)} "
            f"clips); normal frames ({args.normal}): {rep.get('n_val_frames')}; PredNet val MAE "
            f"{r['train']['val_mae']:.4f} vs copy-last {r['train']['copy_last_mae']:.4f}"
        )
        lines.append(
            f"- chosen: **{rep.get('chosen')}**, smoothing window {rep.get('smoothing_window')}, "
            f"threshold {rep.get('threshold', 0):.3f}. Why: {rep.get('why')}"
        )
        cands = dict(rep.get("candidates", {}))
        if "baseline_frame_diff" in rep:
            cands["baseline: frame diff per-cell normalised"] = rep["baseline_frame_diff"]
        if "final" in rep:
            cands[f"FINAL reported score ({rep['chosen']}, smoothed {rep['smoothing_window']})"] = (
                rep["final"]
            )
        kinds = rep.get("anomaly_kinds", []) if rep.get("leave_one_kind_out") else []
        if cands:
            lines += [
                "",
                "| scorer | grouped-CV AUC | AP | F1 | "
                + " | ".join(f"LOKO AUC {k}" for k in kinds)
                + (" |" if kinds else "|"),
                "|---|---|---|---|" + "---|" * len(kinds),
            ]
            for name, entry in cands.items():
                cv = entry["grouped_cv"]
                loko = entry.get("leave_one_kind_out", {})
                cells = [_fmt(loko.get(k, {}).get("auc")) for k in kinds]
                lines.append(
                    f"| {name} | {_fmt(cv['auc'])} | {_fmt(cv['ap'])} | {_fmt(cv['f1'])} | "
                    + " | ".join(cells)
                    + (" |" if cells else "")
                )
        if r.get("reference_auc"):
            lines += [
                "",
                "Reference AUCs on the same frames: "
                + ", ".join(f"{k} {v:.3f}" for k, v in r["reference_auc"].items()),
            ]
        if r.get("throughput"):
            t = r["throughput"]
            lines += [
                "",
                f"Throughput ({t['frames']} frames): bare model {t['bare_fps']} frames/s, "
                f"extract_features end to end {t['scoring_fps']} frames/s "
                f"(ratio {t['ratio']}); peak Python-side allocation while scoring from a "
                f"generator {t['python_peak_mb']} MiB (frames as uint8 "
                f"{t['frames'] * 64 * 80 / 2**20:.1f} MiB, as float32 "
                f"{t['frames'] * 64 * 80 * 4 / 2**20:.1f} MiB).",
            ]
            if t.get("memory_frames"):
                lines += [
                    "",
                    f"Memory: scoring one {t['memory_frames']}-frame clip from a generator "
                    f"({t['memory_fps']} frames/s) raised the process's peak RSS by "
                    f"{t['peak_rss_increase_mb']} MiB, to {t['peak_rss_mb']} MiB in all "
                    "(TensorFlow, the model and its traced graphs included); the clip as "
                    f"float32 would be {t['memory_frames'] * 64 * 80 * 4 / 2**20:.0f} MiB.",
                ]
        lines.append("")
    return "\n".join(lines) + TRIED + _further() + FLOW_TEXT


def locations_to_run(args) -> list[tuple[str, object, object, str]]:
    """(cache key, data writer, kinds reader, label) for every location of this run."""
    runs = []
    for seed in args.seeds:
        for loc in range(args.locations):
            key = f"demo_s{seed}_l{loc}_t{args.test_clips}"
            runs.append(
                (
                    key,
                    demo_writer(seed, loc, args.test_clips),
                    lambda d: _kinds_from_labels_csv(d / "test" / "labels.csv"),
                    f"demo seed {seed} location {loc}",
                )
            )
    if args.ucsd:
        seed = args.seeds[0]
        n_test = args.ucsd_test_clips
        runs.append(
            (
                f"ucsd_s{seed}_t{n_test}",
                ucsd_writer(seed, n_test),
                lambda d, n=n_test: _ucsd_kinds(n),
                f"UCSD-style seed {seed}",
            )
        )
    return runs


def _epochs(key: str, args) -> int:
    if key.startswith("ucsd") and args.ucsd_max_epochs is not None:
        return args.ucsd_max_epochs
    return args.max_epochs


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12])
    parser.add_argument("--locations", type=int, default=2)
    parser.add_argument("--test-clips", type=int, default=10)
    parser.add_argument("--ucsd", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--ucsd-test-clips", type=int, default=6)
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--ucsd-max-epochs", type=int, default=None, help="default: --max-epochs")
    parser.add_argument("--max-epochs", type=int, default=8)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/videoanom_eval_detection"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument(
        "--normal",
        choices=("train+val", "val"),
        default="train+val",
        help="normal clips whose features give the detector's normal statistics",
    )
    parser.add_argument("--throughput", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--memory-frames", type=int, default=10000, help="frames of the streamed memory check"
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    results = []
    for key, write, kinds_fn, label in locations_to_run(args):
        epochs = _epochs(key, args)
        prepared, model_path, kinds = prepare_and_train(
            key, write, kinds_fn, args.cache, epochs, args.trials
        )
        if args.train_only:
            continue
        results.append(evaluate_location(key, label, prepared, model_path, kinds, args))
    if not args.train_only:
        text = render(results, args)
        print(text)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
