"""batch_scoring step: the registered PredNet over every train, validation and test clip.

Output folder: ``train/``, ``val/`` and ``test/`` feature sets (one row per frame with its
clip, frame number, label and error features, plus per-cell error maps) and
``scoring.json`` naming the PredNet version used. Frames are decoded once, by data_prep.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from videoanom.data.dataset import load_split
from videoanom.data.prepare import DATA_FILE, load_manifest
from videoanom.prednet import with_output_mode
from videoanom.registry import load_prednet
from videoanom.scoring.features import ExtractConfig, split_features
from videoanom.steps.common import read_json, write_json

logger = logging.getLogger(__name__)

RESULT_FILE = "scoring.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared-data", required=True, type=Path, help="data_prep output")
    parser.add_argument("--registered-prednet", required=True, type=Path, help="register output")
    parser.add_argument("--scores", required=True, type=Path, help="output folder")
    return parser


def score_split(model, data_file: Path, split: str, manifest, config: ExtractConfig):
    """Features of every clip of one split, in stored order (None for an empty split)."""
    data = load_split(data_file, split)
    if len(data) == 0:
        return None
    kinds = {clip: manifest.clip_kind(clip) for clip in data.clips} if split == "test" else None
    logger.info("scoring %d %s frames (%d clips)", len(data), split, len(data.clips))
    return split_features(model, data, config, kinds)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    manifest = load_manifest(args.prepared_data)
    registered = read_json(args.registered_prednet / "model.json")
    model = with_output_mode(load_prednet(registered["uri"]), "all")
    config = ExtractConfig()
    data_file = args.prepared_data / DATA_FILE
    counts = {}
    for split in ("train", "val", "test"):
        features = score_split(model, data_file, split, manifest, config)
        if features is not None:
            features.save(args.scores / split)
        counts[split] = 0 if features is None else len(features.table)
    write_json(
        args.scores / RESULT_FILE,
        {"prednet": registered["uri"], "prednet_version": registered["version"], "frames": counts},
    )
    logger.info("scored %s frames with %s", counts, registered["uri"])
