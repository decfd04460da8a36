"""data_prep step: a location in a datastore -> ``data.h5`` + ``manifest.json``."""

from __future__ import annotations

import argparse
from pathlib import Path

from videoanom.data.datastore import open_datastore
from videoanom.data.prepare import PrepConfig, prepare_location
from videoanom.names import validate_location


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datastore", required=True, help="folder or azureblob:// URI")
    parser.add_argument("--location", required=True)
    parser.add_argument("--prepared-data", required=True, type=Path, help="output folder")
    parser.add_argument("--height", type=int, default=PrepConfig.height)
    parser.add_argument("--width", type=int, default=PrepConfig.width)
    parser.add_argument("--channels", type=int, choices=(1, 3), default=PrepConfig.channels)
    parser.add_argument("--val-fraction", type=float, default=PrepConfig.val_fraction)
    parser.add_argument("--seed", type=int, default=PrepConfig.seed)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    location = validate_location(args.location)
    config = PrepConfig(
        height=args.height,
        width=args.width,
        channels=args.channels,
        val_fraction=args.val_fraction,
        seed=args.seed,
    )
    prepare_location(open_datastore(args.datastore), location, args.prepared_data, config)
