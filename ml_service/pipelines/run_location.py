"""Run the training pipeline for one location on this machine, and record the outcome."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml_service.pipelines.definition import pipeline_params, training_pipeline
from ml_service.pipelines.local_runner import LocalRunner, PipelineRun, StepFailed
from ml_service.state import read_state, write_state
from ml_service.util.env_variables import Settings
from videoanom.data.datastore import Datastore, LocalDatastore, open_datastore
from videoanom.names import normalise_location, validate_location

logger = logging.getLogger(__name__)


@dataclass
class LocationResult:
    location: str
    model_uri: str
    model_path: Path
    classifier_uri: str
    scorer: str
    report_dir: Path
    metrics: dict[str, Any]
    run: PipelineRun
    pipeline_id: str


def new_pipeline_id(location: str) -> str:
    """A readable, unique id for one pipeline run: ``<slug>-<UTC time>-<random>``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{normalise_location(location)}-{stamp}-{uuid.uuid4().hex[:6]}"


class PipelineRecord:
    """The location's state record for one pipeline run, rewritten on every step event.

    It holds the pipeline id, its parameters, who runs it (host and pid, so ``status`` can
    tell a killed run from a live one) and each step's state: pending, running, reused,
    succeeded or failed, with its seconds.
    """

    def __init__(self, home: Path, location: str, steps: list[str], **fields: Any) -> None:
        self.home, self.location = home, location
        self.fields: dict[str, Any] = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **fields,
            "steps": {name: {"state": "pending"} for name in steps},
        }
        self.state = "running"
        self.write()

    def on_step(self, step: str, event: str, seconds: float) -> None:
        entry = {"state": event}
        if event != "running":
            entry["seconds"] = round(seconds, 1)
        self.fields["steps"][step] = entry
        self.write()

    def finish(self, state: str, **fields: Any) -> None:
        self.state = state
        self.fields.update(fields)
        self.write()

    def write(self) -> None:
        write_state(self.home, self.location, self.state, **self.fields)


def listing_salt(datastore: Datastore, location: str) -> str:
    """A cheap hash of the location's file listing (paths, sizes, versions)."""
    digest = hashlib.sha256()
    for info in datastore.list_files(location):
        digest.update(f"{info.path}\t{info.size}\t{info.version}\n".encode())
    return digest.hexdigest()[:16]


def run_location(
    settings: Settings,
    location: str,
    init_from: str = "",
    freeze_layers: str = "",
    git_commit: str = "",
) -> LocationResult:
    """data_prep -> train -> register_prednet for ``location``; raises StepFailed on failure."""
    validate_location(location)
    datastore = open_datastore(settings.datastore)
    if location not in datastore.list_locations():
        raise ValueError(f"location {location!r} not found in datastore {datastore.uri}")
    datastore_uri = str(datastore.root) if isinstance(datastore, LocalDatastore) else datastore.uri
    params = pipeline_params(settings, location, datastore_uri, init_from, freeze_layers)
    env = settings.step_environment()
    if git_commit:
        env["GIT_COMMIT"] = git_commit
    pipeline = training_pipeline()
    pipeline_id = new_pipeline_id(location)
    env["VIDEOANOM_PIPELINE_ID"] = pipeline_id
    runner = LocalRunner(settings.home, env)
    attempts = int(read_state(settings.home, location).get("attempts", 0))
    listing = listing_salt(datastore, location)
    record = PipelineRecord(
        settings.home,
        location,
        [step.name for step in pipeline.ordered()],
        pipeline_id=pipeline_id,
        params=params,
        attempts=attempts,
        listing=listing,
        init_from=init_from or None,
    )
    logger.info("%s: pipeline %s", location, pipeline_id)
    try:
        run = runner.run(
            pipeline,
            params,
            group=normalise_location(location),
            salts={"data_prep": listing},
            on_step=record.on_step,
        )
    except StepFailed as error:
        record.finish(
            "failed",
            step=error.step,
            reason=error.reason,
            log=str(error.log),
            attempts=attempts + 1,
        )
        raise
    except Exception as error:  # our own bug or I/O trouble: still one location only
        record.finish("failed", reason=f"{type(error).__name__}: {error}", attempts=attempts + 1)
        raise
    except BaseException:  # Ctrl-C or SIGTERM: finished steps are kept for the next run
        record.finish("interrupted")
        raise
    registered = _read(run, "registered_prednet", "model.json")
    trained = _read(run, "trained_model", "train_result.json")
    classifier = _read(run, "classifier", "classifier.json")
    registered_classifier = _read(run, "registered_classifier", "model.json")
    metrics = {k: trained[k] for k in ("val_loss", "val_mae", "copy_last_mae", "beats_copy_last")}
    metrics.update(classifier["metrics"])
    model_path = run.outputs["trained_model"] / "prednet.keras"
    report_dir = run.outputs["classifier"] / "report"
    record.finish(
        "succeeded",
        attempts=0,
        prednet=registered["uri"],
        classifier=registered_classifier["uri"],
        scorer=classifier["chosen"],
        model_path=str(model_path),
        report={k: str(run.outputs["classifier"] / v) for k, v in classifier["report"].items()},
        metrics=metrics,
    )
    return LocationResult(
        location,
        registered["uri"],
        model_path,
        registered_classifier["uri"],
        classifier["chosen"],
        report_dir,
        metrics,
        run,
        pipeline_id,
    )


def _read(run: PipelineRun, output: str, filename: str) -> dict[str, Any]:
    return json.loads((run.outputs[output] / filename).read_text())
