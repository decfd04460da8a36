"""The ``videoanom`` command line (CONTRACT section 2).

Commands are thin: parse, load settings once, call the library. Heavy imports
(TensorFlow, MLflow) happen inside the commands, so ``videoanom --help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger("videoanom")

EXIT_BAD_INPUT = 2
EXIT_STEP_FAILED = 3
EXIT_GATE_FAILED = 4


def _settings(args: argparse.Namespace, **overrides: object):
    from ml_service.util.env_variables import Settings

    return Settings.load(overrides, env_file=args.env_file)


def _training_settings(args: argparse.Namespace):
    """Settings of the commands that train (run, master): flags for datastore and budget."""
    return _settings(
        args,
        datastore=args.datastore,
        trials=args.trials,
        max_epochs=args.max_epochs,
        home=args.home,
    )


def cmd_demo_data(args: argparse.Namespace) -> int:
    from videoanom.data.demo import write_demo_datastore

    names = write_demo_datastore(
        args.dir,
        locations=args.locations,
        seed=args.seed,
        train_clips=args.train_clips,
        test_clips=args.test_clips,
        frames_per_clip=args.frames_per_clip,
        height=args.height,
        width=args.width,
    )
    for name in names:
        print(Path(args.dir) / name)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ml_service.master.claims import claims_for
    from ml_service.pipelines.run_location import run_location

    settings = _training_settings(args)
    claims = claims_for(settings)
    # The same claim a master takes: a manual run never races a master on one location.
    claim = claims.try_claim(args.location)
    if claim is None:
        holder = claims.holder(args.location) or {}
        print(
            f"error: location {args.location!r} is being trained by pid {holder.get('pid')} "
            f"on {holder.get('host')}; try again when it has finished",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    with claim:
        result = run_location(settings, args.location, args.init_from, args.freeze_layers)
    m = result.metrics
    verdict = "beats" if m["beats_copy_last"] else "does NOT beat"
    print(f"location:   {result.location}")
    print(f"registered: {result.model_uri}  (tracking: {settings.tracking_uri})")
    print(f"            {result.classifier_uri} (scorer: {result.scorer})")
    print(f"model file: {result.model_path}")
    print(f"validation: MAE {m['val_mae']:.5f} {verdict} copy-last-frame {m['copy_last_mae']:.5f}")
    if "auc" in m:
        nan = float("nan")
        print(
            f"test AUC:   {m['auc']:.3f} reported score, {m.get('unsupervised_auc', nan):.3f} "
            f"unsupervised, {m.get('baseline_auc', nan):.3f} frame difference (out-of-fold)"
        )
    print(f"report:     {result.report_dir}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    import mlflow

    from videoanom.scoring.inference import find_input_clips, load_location_models, score_to_csv

    settings = _settings(args, home=args.home)
    clips = find_input_clips(args.input)
    mlflow.set_tracking_uri(settings.tracking_uri)
    models = load_location_models(args.location)
    logger.info("scoring %d clip(s) with %s", len(clips), models.versions)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        with open(args.output, "w", newline="") as handle:
            failed = score_to_csv(models, clips, handle)
        logger.info("wrote %s", args.output)
    else:
        failed = score_to_csv(models, clips, sys.stdout)
    if failed:
        print(f"error: could not read {len(failed)} clip(s): {', '.join(failed)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def cmd_master(args: argparse.Namespace) -> int:
    import signal
    import threading

    from ml_service.master.master import Master, MasterConfig

    settings = _training_settings(args)
    config = MasterConfig(
        quiet_seconds=args.quiet_seconds,
        max_retries=args.max_retries,
        backoff_seconds=args.backoff_seconds,
        workers=args.workers,
        retrain_changed=args.retrain_changed,
        transfer=not args.no_transfer,
    )
    master = Master(settings, config)
    if args.once:
        decisions = master.poll_once()
        for d in decisions:
            print(f"{d.location:<24} {d.action:<5} {d.outcome or d.reason}")
        return 1 if any(d.outcome.startswith("failed") for d in decisions) else 0
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    logger.info(
        "watching %s every %.0f s (Ctrl-C stops after the current poll)",
        settings.datastore,
        args.interval,
    )
    master.watch(args.interval, stop)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from ml_service.status import location_rows, location_status, render_table

    settings = _settings(args, datastore=args.datastore, home=args.home)
    if args.json:
        records = location_status(settings, args.quiet_seconds)
        print(json.dumps(records, indent=2, default=str))
    else:
        print(render_table(location_rows(settings, args.quiet_seconds)))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from videoanom.serving.server import run_server

    settings = _settings(args, home=args.home)
    locations = [x for x in (args.locations or "").split(",") if x] or None
    run_server(settings, host=args.host, port=args.port, locations=locations)
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    from ml_service.release import release

    overrides = {"release_margin": args.margin, "release_min_auc": args.min_auc, "home": args.home}
    settings = _settings(args, datastore=args.datastore, **overrides)
    result = release(settings, args.location, deploy=args.deploy, eval_path=args.eval)
    for line in result.lines():
        print(line)
    if not result.passed:
        print(f"error: release gate failed for {args.location}: {result.reason}", file=sys.stderr)
        return EXIT_GATE_FAILED
    return 0


def cmd_azure(args: argparse.Namespace) -> int:
    from ml_service.azure import commands
    from ml_service.util.env_variables import AzureSettings

    settings = _settings(args, home=args.home)
    azure = AzureSettings.load(env_file=args.env_file)
    sdk = getattr(args, "sdk", None)
    if args.azure_command == "publish":
        if not args.dry_run and sdk is None:
            sdk = azure.sdk
        print(commands.publish(settings, azure, args.dry_run, sdk))
    elif args.azure_command == "schedule":
        print(commands.schedule(settings, azure, sdk))
    elif args.azure_command == "submit":
        if bool(args.location) == bool(args.master):
            raise ValueError("azure submit: give --location NAME or --master (one of them)")
        print(commands.submit(settings, azure, args.location, args.init_from, sdk))
    else:
        print(commands.status(settings, azure, args.json, sdk))
    return 0


def _add_azure(sub: argparse._SubParsersAction) -> None:
    azure = sub.add_parser(
        "azure",
        help="publish, schedule and submit the pipelines on Azure ML (AML_SDK=v1|v2)",
        description="Build the same pipelines on Azure Machine Learning. Workspace and "
        "cluster settings come from AML_*/AZURE_* variables or .env (see .env.example).",
    )
    verbs = azure.add_subparsers(dest="azure_command", required=True, metavar="ACTION")
    helps = {
        "publish": "create the environment, clusters and master pipeline (idempotent)",
        "schedule": "(re)create the master pipeline's schedule",
        "submit": "submit one location's training pipeline, or the master once",
        "status": "recent training and master runs in the workspace",
    }
    for name, text in helps.items():
        verb = verbs.add_parser(name, help=text, description=text)
        verb.add_argument(
            "--sdk", choices=("v1", "v2"), default=None, help="override AML_SDK for this command"
        )
        if name == "publish":
            verb.add_argument(
                "--dry-run",
                action="store_true",
                help="build and print the pipelines (both SDKs unless --sdk) without Azure",
            )
        if name == "submit":
            verb.add_argument("--location", default=None, help="location to train")
            verb.add_argument("--master", action="store_true", help="run the master pipeline")
            verb.add_argument("--init-from", default="", help="warm-start PredNet (models:/...)")
        if name == "status":
            verb.add_argument("--json", action="store_true", help="runs as JSON")
        _add_common(verb)
        verb.set_defaults(func=cmd_azure)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env-file", default=".env", help="settings file (default: .env)")
    parser.add_argument("--home", default=None, help="local state folder (VIDEOANOM_HOME)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videoanom",
        description="Train and run a PredNet video anomaly detector for every camera location.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo-data", help="write synthetic demo locations to a folder")
    demo.add_argument("dir", type=Path, help="datastore folder to write into")
    demo.add_argument("--locations", type=int, default=2, help="number of locations (default 2)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--train-clips", type=int, default=6)
    demo.add_argument("--test-clips", type=int, default=7)
    demo.add_argument("--frames-per-clip", type=int, default=120)
    demo.add_argument("--height", type=int, default=120)
    demo.add_argument("--width", type=int, default=160)
    demo.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    demo.set_defaults(func=cmd_demo_data)

    run = sub.add_parser("run", help="run the training pipeline for one location here")
    run.add_argument("--location", required=True, help="location (top-level datastore folder)")
    run.add_argument("--datastore", default=None, help="folder or azureblob:// URI")
    run.add_argument("--trials", type=int, default=None, help="search trials (VIDEOANOM_TRIALS)")
    run.add_argument("--max-epochs", type=int, default=None, help="epochs per trial")
    run.add_argument(
        "--init-from", default="", help="warm-start PredNet: models:/..., location or file"
    )
    run.add_argument("--freeze-layers", default="", help="PredNet levels to freeze, e.g. 0,1")
    _add_common(run)
    run.set_defaults(func=cmd_run)

    score = sub.add_parser(
        "score", help="score a clip or a folder of clips with a location's models"
    )
    score.add_argument("--location", required=True, help="location whose registered models to use")
    score.add_argument(
        "--input", required=True, type=Path, help="video file, frame folder or folder of clips"
    )
    score.add_argument(
        "--output", type=Path, default=None, help="CSV file (default: standard output)"
    )
    _add_common(score)
    score.set_defaults(func=cmd_score)

    master = sub.add_parser("master", help="train every location that needs a detector")
    mode = master.add_mutually_exclusive_group(required=True)
    mode.add_argument("--once", action="store_true", help="poll once, train, and exit")
    mode.add_argument("--watch", action="store_true", help="poll until SIGINT/SIGTERM")
    master.add_argument("--interval", type=float, default=300.0, help="seconds between polls")
    master.add_argument("--datastore", default=None, help="folder or azureblob:// URI")
    master.add_argument("--trials", type=int, default=None, help="search trials per location")
    master.add_argument("--max-epochs", type=int, default=None, help="epochs per trial")
    master.add_argument("--workers", type=int, default=1, help="locations trained at once")
    master.add_argument(
        "--quiet-seconds", type=float, default=300.0, help="unchanged this long = upload done"
    )
    master.add_argument("--max-retries", type=int, default=3, help="failures before giving up")
    master.add_argument("--backoff-seconds", type=float, default=600.0, help="first retry delay")
    master.add_argument(
        "--retrain-changed", action="store_true", help="retrain locations whose files changed"
    )
    master.add_argument("--no-transfer", action="store_true", help="never warm-start PredNets")
    _add_common(master)
    master.set_defaults(func=cmd_master)

    status = sub.add_parser("status", help="one row per location: state, models, metrics")
    status.add_argument("--datastore", default=None, help="folder or azureblob:// URI")
    status.add_argument("--json", action="store_true", help="full records as JSON, for scripts")
    status.add_argument(
        "--quiet-seconds", type=float, default=300.0, help="as given to the master (readiness)"
    )
    _add_common(status)
    status.set_defaults(func=cmd_status)

    serve = sub.add_parser(
        "serve", help="HTTP scoring service for the registered models (FastAPI + uvicorn)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument(
        "--locations", default=None, help="comma-separated locations (default: every registered)"
    )
    _add_common(serve)
    serve.set_defaults(func=cmd_serve)

    gate = sub.add_parser(
        "release",
        help="release gate: compare the latest detector with the champion, then promote it",
    )
    gate.add_argument("--location", required=True, help="location whose latest models to judge")
    gate.add_argument("--datastore", default=None, help="folder or azureblob:// URI")
    gate.add_argument(
        "--eval",
        type=Path,
        default=None,
        help="labelled evaluation clips (default: the location's test/)",
    )
    gate.add_argument(
        "--margin", type=float, default=None, help="allowed AUC drop (VIDEOANOM_RELEASE_MARGIN)"
    )
    gate.add_argument(
        "--min-auc",
        type=float,
        default=None,
        help="AUC a first model needs (VIDEOANOM_RELEASE_MIN_AUC)",
    )
    gate.add_argument(
        "--deploy",
        choices=("none", "azureml-v2", "azureml-v1"),
        default="none",
        help="after promotion: nothing (serve picks up the champion), an Azure ML managed "
        "online endpoint (v2) or a v1 web service",
    )
    _add_common(gate)
    gate.set_defaults(func=cmd_release)
    _add_azure(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad input, 3 a pipeline step failed)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    func: Callable[[argparse.Namespace], int] = args.func
    return _run_guarded(func, args)


def _run_guarded(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    from ml_service.azure.commands import AzureServiceError
    from ml_service.master.claims import ClaimError
    from ml_service.pipelines.local_runner import StepFailed

    try:
        return func(args)
    except (StepFailed, AzureServiceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_STEP_FAILED
    except (ValueError, FileNotFoundError, ClaimError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
