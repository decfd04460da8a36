"""``make demo``: demo data if absent, then ``videoanom master --once`` over it.

The locations are trained the way they are in production: by one poll of the master
(``videoanom master --once``), which finds the untrained locations and runs their
pipelines, the second warm-started from the first. One location failing never stops the
others; the run ends with one table of every location and exits non-zero if any failed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from ml_service.state import read_states
from ml_service.status import location_rows, render_table
from ml_service.util.env_variables import Settings
from videoanom import cli

logger = logging.getLogger("videoanom.demo")

# Budget that trains each demo location to beat its copy-last baseline in a few minutes
# on 2 CPU cores (measured: docs/benchmarks.md). Environment or .env values win.
DEMO_DEFAULTS = {"trials": 2, "max_epochs": 4}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datastore", type=Path, default=Path("data/datastore"))
    parser.add_argument("--locations", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--env-file", default=".env")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    if not args.datastore.is_dir() or not any(args.datastore.iterdir()):
        from videoanom.data.demo import write_demo_datastore

        logger.info("writing %d demo locations to %s", args.locations, args.datastore)
        write_demo_datastore(args.datastore, locations=args.locations, seed=args.seed)
    else:
        logger.info("using existing data in %s", args.datastore)

    base = Settings.load({"datastore": str(args.datastore)}, env_file=args.env_file)
    budget = _demo_budget(base)
    # The demo data is written in full before the master looks, so no quiet period.
    command = ["master", "--once", "--datastore", str(args.datastore), "--quiet-seconds", "0"]
    command += [f"--{key.replace('_', '-')}={value}" for key, value in budget.items()]
    command += ["--env-file", args.env_file]
    print(f"$ videoanom {' '.join(command)}", flush=True)
    started = time.monotonic()
    code = cli.main(command)

    settings = Settings.load({"datastore": str(args.datastore), **budget}, env_file=args.env_file)
    print()
    print(render_table(location_rows(settings, quiet_seconds=0)))
    states = read_states(settings.home)
    for state in states:
        metrics = state.get("metrics", {})
        if "val_mae" in metrics and "copy_last_mae" in metrics:
            verdict = "beats" if metrics["val_mae"] < metrics["copy_last_mae"] else "does NOT beat"
            print(
                f"{state['location']:>16} PredNet validation MAE {metrics['val_mae']:.5f} "
                f"{verdict} copy-last-frame {metrics['copy_last_mae']:.5f}"
            )
        for name, path in sorted(state.get("report", {}).items()):
            print(f"{state['location']:>16} {name:<9} {path}")
    print(f"\n{time.monotonic() - started:.0f} s; tracking: {settings.tracking_uri}")
    failed = [s["location"] for s in states if s.get("state") != "succeeded"]
    if code or failed:
        print(f"failed: {', '.join(failed) or 'see the log above'}", file=sys.stderr)
        return 1
    return 0


def _demo_budget(base: Settings) -> dict[str, int]:
    """The demo's budget unless the user set one (in the environment or .env)."""
    defaults = Settings()
    return {k: v for k, v in DEMO_DEFAULTS.items() if getattr(base, k) == getattr(defaults, k)}


if __name__ == "__main__":
    sys.exit(main())
