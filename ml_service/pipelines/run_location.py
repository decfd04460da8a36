"""Run the training pipeline for one location on this machine, and record the outcome."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml_service.pipelines.definition import training_pipeline
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
    params = {
        "datastore": datastore_uri,
        "location": location,
        "height": settings.image_height,
        "width": settings.image_width,
        "channels": settings.image_channels,
        "seed": settings.seed,
        "trials": settings.trials,
        "max_epochs": settings.max_epochs,
        "nt": settings.nt,
        "windows_per_epoch": settings.windows_per_epoch,
        "init_from": init_from,
        "freeze_layers": freeze_layers,
    }
    env = settings.step_environment()
    if git_commit:
        env["GIT_COMMIT"] = git_commit
    runner = LocalRunner(settings.home, env)
    attempts = int(read_state(settings.home, location).get("attempts", 0))
    listing = listing_salt(datastore, location)
    write_state(settings.home, location, "running", params=params, attempts=attempts)
    try:
        run = runner.run(
            training_pipeline(),
            params,
            group=normalise_location(location),
            salts={"data_prep": listing},
        )
    except StepFailed as error:
        write_state(
            settings.home,
            location,
            "failed",
            step=error.step,
            reason=error.reason,
            log=str(error.log),
            attempts=attempts + 1,
            listing=listing,
        )
        raise
    registered = _read(run, "registered_prednet", "model.json")
    trained = _read(run, "trained_model", "train_result.json")
    classifier = _read(run, "classifier", "classifier.json")
    registered_classifier = _read(run, "registered_classifier", "model.json")
    metrics = {k: trained[k] for k in ("val_loss", "val_mae", "copy_last_mae", "beats_copy_last")}
    metrics.update(classifier["metrics"])
    model_path = run.outputs["trained_model"] / "prednet.keras"
    report_dir = run.outputs["classifier"] / "report"
    write_state(
        settings.home,
        location,
        "succeeded",
        attempts=0,
        listing=listing,
        init_from=init_from or None,
        prednet=registered["uri"],
        classifier=registered_classifier["uri"],
        scorer=classifier["chosen"],
        model_path=str(model_path),
        report={k: str(run.outputs["classifier"] / v) for k, v in classifier["report"].items()},
        metrics=metrics,
        steps={s.name: {"reused": s.reused, "seconds": round(s.seconds, 1)} for s in run.steps},
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
    )


def _read(run: PipelineRun, output: str, filename: str) -> dict[str, Any]:
    return json.loads((run.outputs[output] / filename).read_text())
