"""The Azure ML scoring script of a location's detector: ``init()`` once, ``run()`` per request.

A v2 managed online deployment and a v1 web service (ACI/AKS) both run it under
azureml-inference-server-http (:mod:`ml_service.azure.deploy` builds both). ``run`` receives
the request body as a string: the JSON batch of the HTTP service, ``{"frames": ["<base64
PNG/JPEG>", ...]}``, consecutive frames of one clip in order (the PredNet predicts each frame
from the ones before it). It answers the service's JSON (CONTRACT section 2b), one entry per
frame.

Configuration (environment variables set on the deployment):

* ``VIDEOANOM_LOCATION`` (required): the camera location.
* ``VIDEOANOM_CLASSIFIER_VERSION``: the detector version (``3`` or
  ``anomaly-classifier-<location>/3``); unset = the champion (or the latest).
* ``VIDEOANOM_PREDNET_VERSION``: the PredNet version the deployer expects; the detector's own
  ``prednet`` tag decides, and a mismatch fails ``init`` (the deployment then never takes
  traffic).
* ``VIDEOANOM_MAX_FRAMES`` (default 20000): the most frames one request may carry.
* ``MLFLOW_TRACKING_URI``: the workspace's (azureml-mlflow); the models are read from the
  workspace's registry with the endpoint's managed identity.
* ``AZUREML_MODEL_DIR`` (set by Azure ML): where a v1 web service mounts the models it was
  deployed with, ``<dir>/<model name>/<version>/...``. When the detector and PredNet are there
  they are loaded from those files, with no registry call (an ACI web service has no managed
  identity to call the registry with).

Bad input is answered with a 4xx and a JSON ``{"detail": "..."}``, never an exception, with
the codes of ``videoanom serve``: 400 for a body that is not JSON; 422 for JSON that is not
the batch, bad base64 or a bad image; 413 over a limit
(``VIDEOANOM_MAX_FRAMES``, pixels, decoded bytes); 422 for frames that decode but cannot be
scored; 503 before the models are loaded. Under the inference server ``run`` returns an
``AMLResponse`` with that status. Without that package (tests, a plain Python shell) the same
body comes back as a dict with ``status_code`` added, which a server that did not know
AMLResponse would send as 200: the serving environment always installs
azureml-inference-server-http. An unexpected error (a bug) propagates: the server answers 500
and logs the traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # loaded from its file by the inference server
    _ROOT = Path(__file__).resolve().parents[2]
    sys.path[:0] = [p for p in (str(_ROOT), str(_ROOT / "code")) if p not in sys.path]

import json
import logging
import os
from typing import Any

from videoanom.names import classifier_model_name, prednet_model_name

logger = logging.getLogger("videoanom.azure.online_score")

LOCATION_ENV = "VIDEOANOM_LOCATION"
CLASSIFIER_VERSION_ENV = "VIDEOANOM_CLASSIFIER_VERSION"
PREDNET_VERSION_ENV = "VIDEOANOM_PREDNET_VERSION"
MAX_FRAMES_ENV = "VIDEOANOM_MAX_FRAMES"
MODEL_DIR_ENV = "AZUREML_MODEL_DIR"
DEFAULT_MAX_FRAMES = 20000
DETECTOR_FILE = "detector.json"  # videoanom.scoring.detector.Detector.save
PREDNET_FILE = "prednet.keras"  # videoanom.registry.PREDNET_FILE

# Filled by init(); read by run(). The inference server runs one init per worker process.
_state: dict[str, Any] = {"models": None, "max_frames": DEFAULT_MAX_FRAMES}


# ---------------------------------------------------------------- the entry points


def init() -> None:
    """Load the location's detector and its PredNet; raises (the deployment fails) if it
    cannot, so a broken model never takes traffic."""
    logging.basicConfig(level=logging.INFO)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    location = os.environ.get(LOCATION_ENV, "").strip()
    if not location:
        raise RuntimeError(f"{LOCATION_ENV} is not set: the deployment must name its location")
    classifier = parse_version(
        os.environ.get(CLASSIFIER_VERSION_ENV, ""), classifier_model_name(location)
    )
    prednet = parse_version(os.environ.get(PREDNET_VERSION_ENV, ""), prednet_model_name(location))
    _state["max_frames"] = max_frames(os.environ)
    models = None
    model_dir = os.environ.get(MODEL_DIR_ENV, "")
    if model_dir and classifier is not None and prednet is not None:
        models = load_from_model_dir(Path(model_dir), location, classifier, prednet)
    if models is None:
        from videoanom.scoring.inference import load_location_models

        models = load_location_models(location, classifier)
        expected = f"{prednet_model_name(location)}/{prednet}"
        if prednet is not None and models.versions["prednet"] != expected:
            raise RuntimeError(
                f"detector {models.versions['classifier']} was trained on "
                f"{models.versions['prednet']}, not {expected} as the deployment says"
            )
    _state["models"] = models
    logger.info(
        "serving %s: %s with %s (at most %d frames a request)",
        location,
        models.versions["classifier"],
        models.versions["prednet"],
        _state["max_frames"],
    )


def run(raw_data: str) -> Any:
    """Score one JSON batch of frames; the contract's JSON, or a 4xx error object."""
    from videoanom.serving.payloads import (
        PayloadError,
        PayloadTooLarge,
        decode_json_frames,
        frames_response,
    )

    models = _state["models"]
    if models is None:
        return error_response(503, "the detector is not loaded (init() did not run or failed)")
    try:
        payload = parse_body(raw_data)
    except PayloadError as error:  # as `videoanom serve`: bad JSON syntax is 400
        return error_response(400, str(error))
    try:
        frames = decode_json_frames(payload, _state["max_frames"])
    except PayloadTooLarge as error:
        return error_response(413, str(error))
    except PayloadError as error:  # as `videoanom serve`: a well-formed but unusable batch
        return error_response(422, str(error))
    try:
        from videoanom.scoring.inference import score_frames

        scores, flags = score_frames(models, frames, name="request")
    except ValueError as error:  # frames that decode but cannot be scored (ClipReadError too)
        return error_response(422, f"cannot score these frames: {error}")
    return frames_response(models.location, models.versions, scores, flags)


# ---------------------------------------------------------------- helpers


def parse_body(raw_data: Any) -> Any:
    """The JSON body: the server hands ``run`` the request body as a string; anything that
    is not JSON is a :class:`~videoanom.serving.payloads.PayloadError`."""
    from videoanom.serving.payloads import PayloadError

    if not isinstance(raw_data, str | bytes | bytearray):
        return raw_data  # already parsed (a direct call)
    try:
        return json.loads(raw_data)
    except (ValueError, RecursionError) as error:  # JSONDecodeError, bad UTF-8
        raise PayloadError(
            f'the request body is not JSON ({type(error).__name__}): send {{"frames": '
            '["<base64 PNG or JPEG>", ...]} with Content-Type: application/json'
        ) from None


def error_response(status_code: int, message: str) -> Any:
    """``{"detail": message}`` with an HTTP status: an AMLResponse under the inference server,
    else (no azureml-inference-server-http) a dict that also carries ``status_code``."""
    body = {"detail": message}
    try:
        from azureml.contrib.services.aml_response import AMLResponse
    except ImportError:
        return {**body, "status_code": status_code}
    return AMLResponse(body, status_code, json_str=True)


def parse_version(value: str, model_name: str) -> int | None:
    """``3`` or ``<model_name>/3`` -> 3; empty -> None; anything else is a configuration
    error (raised, so the deployment fails instead of serving another model)."""
    text = value.strip()
    if not text:
        return None
    name, _, number = text.rpartition("/")
    if name and name.removeprefix("models:/") != model_name:
        raise RuntimeError(f"{text!r} is not a version of {model_name!r}")
    if not number.isdigit() or int(number) < 1:
        raise RuntimeError(f"{text!r}: expected a version number of {model_name!r}")
    return int(number)


def max_frames(environ: Any) -> int:
    text = str(environ.get(MAX_FRAMES_ENV, "") or DEFAULT_MAX_FRAMES).strip()
    if not text.isdigit() or int(text) < 1:
        raise RuntimeError(f"{MAX_FRAMES_ENV}={text!r}: expected a positive whole number")
    return int(text)


def load_from_model_dir(root: Path, location: str, classifier: int, prednet: int) -> Any | None:
    """The models from the files Azure ML mounted (v1: ``<root>/<name>/<version>/...``), or
    None when they are not there (then the registry is asked)."""
    classifier_name, prednet_name = classifier_model_name(location), prednet_model_name(location)
    detector_file = _find(root / classifier_name / str(classifier), DETECTOR_FILE)
    prednet_file = _find(root / prednet_name / str(prednet), PREDNET_FILE)
    if detector_file is None or prednet_file is None:
        logger.info(
            "%s does not hold %s/%s and %s/%s",
            root,
            classifier_name,
            classifier,
            prednet_name,
            prednet,
        )
        return None
    from videoanom.prednet import with_output_mode
    from videoanom.registry import load_prednet
    from videoanom.scoring.detector import Detector
    from videoanom.scoring.inference import LocationModels

    logger.info("loading the models mounted at %s", root)
    detector = Detector.load(detector_file.parent)
    network = with_output_mode(load_prednet(str(prednet_file)), "all")
    versions = {
        "classifier": f"{classifier_name}/{classifier}",
        "prednet": f"{prednet_name}/{prednet}",
    }
    return LocationModels(location, network, detector, versions, selected="version")


def _find(folder: Path, filename: str) -> Path | None:
    """The shallowest ``filename`` under ``folder`` (a registered model's files may sit in a
    subfolder named after the artifact path)."""
    if not folder.is_dir():
        return None
    found = sorted(folder.rglob(filename), key=lambda p: (len(p.parts), str(p)))
    return found[0] if found else None
