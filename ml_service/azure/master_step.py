"""The master pipeline's one step on Azure ML: ``videoanom master --once``, submitting.

Runs the same :class:`~ml_service.master.master.Master` as the local command over the
mounted datastore (read-only), with its records in a mounted, persistent state folder,
and hands every location that needs a detector to Azure ML as a training pipeline run
(:mod:`ml_service.azure.submit`). It is started by the master pipeline's schedule (v1: a
datastore-change trigger; v2: a recurrence) or by ``videoanom azure submit --master``.

    python ml_service/azure/master_step.py --datastore MOUNT --state MOUNT [--quiet-seconds S]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script by Azure ML: make the packages importable
    _ROOT = Path(__file__).resolve().parents[2]
    sys.path[:0] = [str(_ROOT), str(_ROOT / "code")]

import argparse
import dataclasses
import json
import logging
from typing import Any

from ml_service.azure.submit import Submitter, launcher, refresh_submitted
from ml_service.master.master import Master, MasterConfig
from ml_service.util.env_variables import AzureSettings, Settings
from videoanom.data.datastore import LocalDatastore

logger = logging.getLogger("videoanom.azure.master")

DECISIONS_FILE = "decisions.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datastore", required=True, type=Path, help="mounted location folders")
    parser.add_argument("--state", required=True, type=Path, help="mounted persistent records")
    parser.add_argument("--quiet-seconds", type=float, default=300.0)
    parser.add_argument("--max-retries", type=int, default=3)
    parser.add_argument("--backoff-seconds", type=float, default=600.0)
    parser.add_argument("--retrain-changed", default="false", help="true: retrain changed data")
    return parser


def run_master(args: argparse.Namespace, submitter: Submitter) -> list[dict[str, Any]]:
    """One poll that submits; returns the decisions (also written to the state folder)."""
    settings = dataclasses.replace(
        Settings.load(env_file=None), home=args.state, datastore=str(args.datastore)
    )
    changed = refresh_submitted(args.state, submitter)
    for location, state in sorted(changed.items()):
        logger.info("%s: training pipeline %s", location, state)
    config = MasterConfig(
        quiet_seconds=args.quiet_seconds,
        max_retries=args.max_retries,
        backoff_seconds=args.backoff_seconds,
        retrain_changed=str(args.retrain_changed).lower() == "true",
        # Warm starts need the source's metrics, which only local runs record.
        transfer=False,
    )
    master = Master(
        settings,
        config,
        run=launcher(submitter, args.state),
        datastore=LocalDatastore(args.datastore),
    )
    decisions = [dataclasses.asdict(d) for d in master.poll_once()]
    (args.state / DECISIONS_FILE).write_text(json.dumps(decisions, indent=2))
    for d in decisions:
        logger.info("%-24s %-6s %s", d["location"], d["action"], d["outcome"] or d["reason"])
    return decisions


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = build_parser().parse_args(argv)
    from ml_service.azure.backend import backend_in_job

    azure = AzureSettings.load(env_file=None)
    decisions = run_master(args, backend_in_job(Settings.load(env_file=None), azure))
    failed = [d for d in decisions if d["outcome"].startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
