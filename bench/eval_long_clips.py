"""Long clips: do 120-frame streams (state carried between model calls) score like the
40-frame windows used before?

Uses the models and detectors that ``bench/eval_detection.py --cache DIR`` trained, renders
long clips (normal and each anomaly kind) of the same demo locations, at clip
indices the evaluation never used, and compares frame-level AUC and the share of normal
frames flagged between the two cuttings.

Usage: python bench/eval_long_clips.py --cache /tmp/videoanom_eval_stream [--frames 600]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
from sklearn.metrics import roc_auc_score

from videoanom.data.demo import build_scene, render_clip
from videoanom.data.frames import to_model_input
from videoanom.registry import load_prednet
from videoanom.scoring.detector import Detector
from videoanom.scoring.features import ExtractConfig, FeatureSet, extract_features

# (cache entry, demo seed, location index): the two demo locations the detection run found
# easiest and hardest.
LOCATIONS = [("demo_s11_l0_t10", 11, 0), ("demo_s12_l1_t10", 12, 1)]
KINDS = [None, "fast_object", "vehicle", "wrong_way_crossing"] * 2
CUTTINGS = {
    "40-frame windows (before)": ExtractConfig(window=40),
    "120-frame streams (now)": ExtractConfig(),
}


def long_clip_features(model, config: ExtractConfig, seed: int, index: int, n: int):
    scene = build_scene(seed, index, 120, 160)
    height, width, channels = model.frame_shape
    sets = []
    for ci, kind in enumerate(KINDS):
        clip = render_clip(scene, seed, "test", 100 + ci, n, kind, location_index=index)
        frames = [
            to_model_input(cv2.cvtColor(f, cv2.COLOR_RGB2BGR), height, width, channels)
            for f in clip.frames
        ]
        labels = clip.anomaly_mask.reshape(n, -1).any(axis=1).astype(int)
        sets.append(extract_features(model, iter(frames), f"long{ci}", config, labels=labels))
    return FeatureSet.concat(sets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache", type=Path, required=True, help="eval_detection's --cache")
    parser.add_argument("--frames", type=int, default=600, help="frames per long clip")
    args = parser.parse_args()
    print("| location | cutting | AUC | normal frames flagged |")
    print("|---|---|---:|---:|")
    for entry, seed, index in LOCATIONS:
        model = load_prednet(str(args.cache / entry / "prednet_e8_t1.keras"))
        detector = Detector.load(args.cache / entry / "detector_prednet_e8_t1")
        for name, config in CUTTINGS.items():
            features = long_clip_features(model, config, seed, index, args.frames)
            scores, flags = detector.score(features)
            labels = features.table["label"].to_numpy()
            auc = roc_auc_score(labels, scores)
            print(f"| {entry} | {name} | {auc:.4f} | {100 * flags[labels == 0].mean():.1f}% |")


if __name__ == "__main__":
    main()
