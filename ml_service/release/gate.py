"""The release gate: promote a location's latest detector to ``champion`` only if it is
not worse than the current one and the real HTTP service can score with it.

``videoanom release --location NAME [--eval DIR] [--margin M] [--min-auc A] [--deploy T]``

1. The **candidate** is the latest version of ``anomaly-classifier-<location>`` (with the
   PredNet its ``prednet`` tag names); the **champion** is the version under the alias
   ``champion`` (or its version-tag stand-in on Azure ML, see :mod:`videoanom.registry`).
   A candidate that already is the champion passes at once, and nothing is done.
2. Both are scored on exactly the same frames with
   :func:`videoanom.scoring.inference.score_frames`: the location's labelled test clips in
   the datastore, or the clips of ``--eval``. The frame-level ROC AUC of ``anomaly_score``
   against the labels decides: with a champion the candidate passes when its AUC is at least
   the champion's minus ``margin`` (``VIDEOANOM_RELEASE_MARGIN``); without one (the first
   model) when its AUC is at least ``min_auc`` (``VIDEOANOM_RELEASE_MIN_AUC``). Without
   labels of both classes there is nothing to gate on, and the gate fails.

   **Bias**: by default the evaluation clips are the location's test clips, the very clips
   the candidate's classifier was fitted and its threshold chosen on (``train_classifier``
   uses every labelled test clip; its out-of-fold AUC, reported beside the gate's, is the
   honest estimate from training). The champion was usually fitted on the same clips, so
   the comparison is fair between the two, but both AUCs are optimistic. For an unbiased
   gate pass ``--eval`` with labelled clips that were held out of training.
3. A smoke test through the real HTTP service (:mod:`ml_service.release.smoke`): the service
   started in a subprocess scores the first evaluation clip (a frame folder is encoded to
   an MJPG ``.avi`` first) and must answer with the candidate's versions and the gate's own
   scores. The service serves a location's champion (else its latest version) and cannot be
   told another version, so the gate moves the ``champion`` alias (detector and PredNet)
   to the candidate *before* the smoke test, tentatively, and moves it back if the smoke
   test fails. Something that loads the champion during those seconds (a service starting)
   would get the candidate.
4. On pass the alias stays on the candidate and, with ``deploy`` ``azureml-v2`` or
   ``azureml-v1``, the models are deployed (:func:`ml_service.azure.deploy.deploy_models`);
   if that fails the alias moves back. With ``deploy="none"`` nothing is deployed: a
   ``videoanom serve`` picks up the new champion at its next start.

On any failure nothing changes: no alias moves (or it is moved back) and nothing is
deployed. The only write the gate always makes is a set of tags on the candidate version
(``release_gate=passed|failed`` and the AUCs), which records the decision without changing
the model.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from ml_service.release.evaluation import (
    EvalSource,
    Evaluation,
    clip_as_video,
    open_evaluation,
    score_evaluation,
)
from ml_service.release.smoke import SmokeRequest, SmokeResult, service_smoke_test
from ml_service.util.env_variables import Settings
from videoanom.data.frames import read_video
from videoanom.names import classifier_model_name, validate_location
from videoanom.registry import (
    ALIAS_TAG_PREFIX,
    ModelNotFoundError,
    latest_version,
    set_alias,
    version_by_alias,
)

logger = logging.getLogger(__name__)

CHAMPION = "champion"
DEPLOY_TARGETS = ("none", "azureml-v2", "azureml-v1")

SmokeRunner = Callable[[Settings, SmokeRequest], SmokeResult]
# deployer(settings, location, versions, target) -> a description of what was deployed
Deployer = Callable[[Settings, str, dict[str, str], str], str]

_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")


@dataclass
class ReleaseResult:
    """The gate's decision and everything it was based on."""

    location: str
    passed: bool = False
    reason: str = ""
    classifier_name: str = ""
    candidate: int | None = None
    champion: int | None = None
    candidate_prednet: str | None = None  # "prednet-<location>/N"
    champion_prednet: str | None = None
    candidate_auc: float | None = None
    champion_auc: float | None = None
    candidate_oof_auc: float | None = None  # the candidate's tag `auc` (out-of-fold, training)
    margin: float = 0.0
    min_auc: float = 0.0
    n_frames: int = 0
    clips: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    evaluation: str = ""  # where the frames came from
    evaluation_is_training_data: bool = False
    smoke: SmokeResult | None = None
    promoted: bool = False  # the champion alias now points at the candidate
    deploy: str = "none"
    deployed: str | None = None  # the deployer's answer

    @property
    def versions(self) -> dict[str, str]:
        """The candidate's models as the service reports them: ``{"classifier": "name/N", ...}``."""
        out = {"classifier": f"{self.classifier_name}/{self.candidate}"}
        if self.candidate_prednet:
            out["prednet"] = self.candidate_prednet
        return out

    def lines(self) -> list[str]:
        """The report ``videoanom release`` prints: both AUCs, the rule, the outcome."""
        lines = [f"location:    {self.location}"]
        if self.candidate is not None:
            oof = (
                f"; out-of-fold AUC at training {self.candidate_oof_auc:.3f}"
                if self.candidate_oof_auc is not None
                else ""
            )
            lines.append(
                f"candidate:   {self.classifier_name} v{self.candidate} "
                f"({self.candidate_prednet or 'no PredNet tag'}){_auc(self.candidate_auc)}{oof}"
            )
        if self.champion is not None:
            lines.append(
                f"champion:    {self.classifier_name} v{self.champion} "
                f"({self.champion_prednet or 'no PredNet tag'}){_auc(self.champion_auc)}"
            )
        elif self.candidate is not None:
            lines.append("champion:    none yet (first model)")
        if self.evaluation:
            clips = f"{len(self.clips)} clip(s)" + (
                f", {len(self.skipped)} unreadable skipped" if self.skipped else ""
            )
            lines.append(f"evaluation:  {self.n_frames} frames of {clips}: {self.evaluation}")
            if self.evaluation_is_training_data:
                lines.append(
                    "             (the clips the classifier was fitted on, so these AUCs are "
                    "optimistic: pass --eval with held-out clips for an unbiased gate)"
                )
        if self.candidate_auc is None:
            pass  # no comparison was made (already champion, no labels, ...)
        elif self.champion is not None:
            lines.append(f"rule:        candidate AUC >= champion AUC - margin {self.margin:.3f}")
        else:
            lines.append(f"rule:        a first model needs AUC >= {self.min_auc:.3f}")
        if self.smoke is not None:
            verdict = "passed" if self.smoke.passed else "FAILED"
            lines.append(
                f"smoke test:  {verdict} in {self.smoke.seconds:.1f} s: {self.smoke.detail}"
            )
            if self.smoke.log:
                lines.append("             the service's log ended with:")
                lines.extend(f"             | {line}" for line in self.smoke.log.splitlines())
        lines.append(f"result:      {'PASSED' if self.passed else 'FAILED'}: {self.reason}")
        if self.promoted:
            lines.append(
                f"champion:    now {self.classifier_name} v{self.candidate} and "
                f"{self.candidate_prednet}"
            )
            if self.deploy == "none":
                lines.append(
                    "deploy:      none (`videoanom serve` picks up the champion at its next start)"
                )
            else:
                lines.append(f"deploy:      {self.deploy}: {self.deployed}")
        elif not self.passed and self.candidate is not None:
            lines.append("changed:     nothing (no alias moved, nothing deployed)")
        return lines


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _auc(value: float | None) -> str:
    return "" if value is None else f": AUC {value:.3f}"


def release(
    settings: Settings,
    location: str,
    deploy: str = "none",
    eval_path: Path | None = None,
    smoke: SmokeRunner | None = None,
    deployer: Deployer | None = None,
) -> ReleaseResult:
    """Gate the latest detector of ``location`` against its champion; see the module doc.

    ``smoke`` (default :func:`~ml_service.release.smoke.service_smoke_test`) and ``deployer``
    (default :func:`azure_deployer`) can be replaced, e.g. by fakes in tests. Raises
    :class:`~videoanom.registry.ModelNotFoundError` when the location has no detector at all.
    """
    validate_location(location)
    if deploy not in DEPLOY_TARGETS:
        raise ValueError(f"deploy must be one of {', '.join(DEPLOY_TARGETS)}, not {deploy!r}")
    if deploy != "none" and deployer is None:  # a missing workspace setting: fail before work
        from ml_service.util.env_variables import AzureSettings

        AzureSettings.load().require_workspace()
    smoke = smoke or service_smoke_test
    mlflow.set_tracking_uri(settings.tracking_uri)
    name = classifier_model_name(location)
    result = ReleaseResult(
        location,
        classifier_name=name,
        margin=settings.release_margin,
        min_auc=settings.release_min_auc,
        deploy=deploy,
    )
    latest = latest_version(name)
    if latest is None:
        raise ModelNotFoundError(
            f"location {location!r} has no registered detector {name!r}: run "
            f"'videoanom run --location {location}' first"
        )
    result.candidate = int(latest.version)
    result.candidate_prednet = _prednet_ref(latest.tags.get("prednet", ""))
    result.candidate_oof_auc = _float_tag(latest.tags.get("auc"))
    result.champion = version_by_alias(name, CHAMPION)
    if result.champion is not None:
        champion = mlflow.MlflowClient().get_model_version(name, str(result.champion))
        result.champion_prednet = _prednet_ref(champion.tags.get("prednet", ""))
    if result.champion == result.candidate:
        result.passed, result.reason = True, f"v{result.candidate} is already champion"
        return result
    if result.candidate_prednet is None:
        prednet = latest.tags.get("prednet")
        return _fail(result, f"v{result.candidate} has no valid 'prednet' tag ({prednet!r})")

    source = open_evaluation(
        settings.datastore, location, eval_path, cache_dir=_blob_cache(settings)
    )
    result.evaluation = source.description
    result.evaluation_is_training_data = source.from_datastore
    if not source.clips:
        return _fail(result, f"cannot gate without labelled frames: no {source.description}")
    if source.labels is None:
        return _fail(
            result,
            f"cannot gate without labelled frames: the {source.description} have no labels "
            "(test/labels.csv or a UCSD .m file)",
        )
    evaluation, models = _evaluate(location, result, source)
    if evaluation is None:
        return _fail(result, result.reason)
    problem = evaluation.missing_labels()
    if problem:
        return _fail(result, f"cannot gate without labelled frames: {problem}")
    result.candidate_auc = evaluation.auc(0)
    if result.champion is not None:
        result.champion_auc = evaluation.auc(1)
    auc_ok, result.reason = _decide(result)
    if not auc_ok:
        return _fail(result, result.reason)

    return _smoke_and_promote(settings, result, source, evaluation, models[0], smoke, deployer)


def _smoke_and_promote(
    settings: Settings,
    result: ReleaseResult,
    source: EvalSource,
    evaluation: Evaluation,
    candidate: Any,
    smoke: SmokeRunner,
    deployer: Deployer | None,
) -> ReleaseResult:
    """Move the champion alias to the candidate, smoke-test the service, deploy; any failure
    moves the alias back, so the gate either promotes completely or changes nothing."""
    with tempfile.TemporaryDirectory(prefix="videoanom-release-") as tmp:
        try:
            request = _smoke_request(source, evaluation, candidate, result, Path(tmp))
        except Exception as error:  # any failure to build the clip fails the gate
            return _fail(result, f"cannot prepare the smoke test's clip: {error}")
        previous = _champions(result)
        try:
            _move_champion(result)
            # The service serves the champion and cannot be told another version: the alias
            # points at the candidate while the smoke test runs (see the module doc).
            try:
                result.smoke = smoke(settings, request)
            except Exception as error:  # a crashing smoke test is a failed one
                result.smoke = SmokeResult(False, f"{type(error).__name__}: {error}")
            if not result.smoke.passed:
                _restore_champion(previous)
                return _fail(
                    result, f"{result.reason}, but the smoke test failed: {result.smoke.detail}"
                )
            if result.deploy != "none":
                try:
                    result.deployed = (deployer or azure_deployer)(
                        settings, result.location, result.versions, result.deploy
                    )
                except Exception as error:  # any deploy failure rolls back
                    _restore_champion(previous)
                    return _fail(
                        result, f"{result.reason}, but deploying to {result.deploy} failed: {error}"
                    )
        except BaseException:  # an alias that failed to move, Ctrl-C: leave things as they were
            _restore_champion(previous)
            raise
    result.passed, result.promoted = True, True
    _tag(result)
    return result


def azure_deployer(settings: Settings, location: str, versions: dict[str, str], target: str) -> str:
    """Deploy to Azure ML (``azureml-v2``: managed online endpoint, ``azureml-v1``: a web
    service), with the Azure settings from the environment / ``.env``."""
    from ml_service.azure.deploy import deploy_models
    from ml_service.util.env_variables import AzureSettings

    return str(deploy_models(settings, AzureSettings.load(), location, versions, target))


# ------------------------------------------------------------------------------ steps
def _evaluate(
    location: str, result: ReleaseResult, source: EvalSource
) -> tuple[Evaluation | None, list[Any]]:
    """Load the candidate (and the champion) and score them on the evaluation frames."""
    from videoanom.scoring.inference import load_location_models

    models = []
    for role, version in (("candidate", result.candidate), ("champion", result.champion)):
        if version is None:
            continue
        try:
            models.append(load_location_models(location, version=version))
        except (MlflowException, OSError, ValueError) as error:
            result.reason = f"cannot load the {role} v{version}: {error}"
            return None, []
    evaluation = score_evaluation(source, models)
    result.n_frames = evaluation.n_frames
    result.clips, result.skipped = evaluation.clips, evaluation.skipped
    return evaluation, models


def _decide(result: ReleaseResult) -> tuple[bool, str]:
    cand = result.candidate_auc
    assert cand is not None
    if result.champion is None:
        if cand >= result.min_auc:
            return True, (
                f"first model v{result.candidate} AUC {cand:.3f} clears the minimum "
                f"{result.min_auc:.3f}"
            )
        return False, (
            f"first model v{result.candidate} AUC {cand:.3f} is below the minimum "
            f"{result.min_auc:.3f}"
        )
    champ = result.champion_auc
    assert champ is not None
    diff = cand - champ
    if cand >= champ - result.margin:
        relation = (
            f"{diff:.3f} above" if diff > 0 else "equal to" if diff == 0 else f"{-diff:.3f} below"
        )
        return True, (
            f"candidate v{result.candidate} AUC {cand:.3f} is {relation} champion "
            f"v{result.champion} AUC {champ:.3f} (margin {result.margin:.3f})"
        )
    return False, (
        f"candidate v{result.candidate} AUC {cand:.3f} is {-diff:.3f} below champion "
        f"v{result.champion} AUC {champ:.3f} (margin {result.margin:.3f})"
    )


def _smoke_request(
    source: EvalSource, evaluation: Evaluation, candidate: Any, result: ReleaseResult, tmp: Path
) -> SmokeRequest:
    """The first evaluation clip as a video file, with the candidate's scores of that file."""
    from videoanom.scoring.inference import score_frames

    clip = evaluation.first_clip
    assert clip is not None and evaluation.first_clip_scores is not None
    video = clip_as_video(source, clip, tmp)
    if clip.form == "video":
        scores = evaluation.first_clip_scores
    else:  # MJPG is lossy: the service sees the encoded frames, so score those
        scores, _ = score_frames(candidate, read_video(video), clip.name)
    return SmokeRequest(result.location, video, len(scores), result.versions, scores)


def _candidate_models(result: ReleaseResult) -> dict[str, int]:
    """{model name: version} of the candidate's detector and PredNet."""
    prednet_name, prednet_version = str(result.candidate_prednet).rsplit("/", 1)
    return {result.classifier_name: int(result.candidate or 0), prednet_name: int(prednet_version)}


def _champions(result: ReleaseResult) -> dict[str, int | None]:
    """What ``champion`` points at now for the candidate's models, for the roll-back."""
    return {name: version_by_alias(name, CHAMPION) for name in _candidate_models(result)}


def _move_champion(result: ReleaseResult) -> None:
    """Point ``champion`` of the detector and of its PredNet at the candidate's."""
    targets = _candidate_models(result)
    for name, version in targets.items():
        set_alias(name, CHAMPION, version)
    logger.info("champion -> %s", ", ".join(f"{n}/{v}" for n, v in targets.items()))


def _restore_champion(previous: dict[str, int | None]) -> None:
    """Put the aliases back as they were (removing those that did not exist)."""
    for name, version in previous.items():
        if version is not None:
            set_alias(name, CHAMPION, version)
        else:
            _remove_alias(name, CHAMPION)
    logger.info(
        "champion alias restored: %s",
        ", ".join(f"{n}/{v}" if v is not None else f"{n} (none)" for n, v in previous.items()),
    )


def _remove_alias(name: str, alias: str) -> None:
    """Delete ``alias`` of ``name``: the registered-model alias and its tag stand-in."""
    client = mlflow.MlflowClient()
    try:
        client.delete_registered_model_alias(name, alias)
    except MlflowException as error:
        logger.debug("%s: no alias %s to delete (%s)", name, alias, error)
    tag = ALIAS_TAG_PREFIX + alias
    try:
        for version in client.search_model_versions(f"name = '{name}'"):
            if version.tags.get(tag):
                client.delete_model_version_tag(name, version.version, tag)
    except MlflowException as error:
        logger.warning("%s: could not remove the %s tag: %s", name, tag, error)


def _fail(result: ReleaseResult, reason: str) -> ReleaseResult:
    # one line: the command line prints it as its one-line error
    result.passed, result.promoted, result.reason = False, False, " ".join(reason.split())
    _tag(result)
    return result


def _tag(result: ReleaseResult) -> None:
    """Record the decision on the candidate version (tags only; the model is unchanged)."""
    if result.candidate is None:
        return
    tags = {
        "release_gate": "passed" if result.passed else "failed",
        "release_reason": result.reason[:4000],
        "release_auc": _fmt(result.candidate_auc),
        "release_champion": str(result.champion) if result.champion is not None else "none",
        "release_champion_auc": _fmt(result.champion_auc),
        "release_frames": str(result.n_frames),
    }
    client = mlflow.MlflowClient()
    try:
        for key, value in tags.items():
            client.set_model_version_tag(result.classifier_name, str(result.candidate), key, value)
    except MlflowException as error:
        logger.warning("could not tag %s v%s: %s", result.classifier_name, result.candidate, error)


def _prednet_ref(uri: str) -> str | None:
    """``models:/prednet-x/3`` -> ``prednet-x/3`` (None if it is not that form)."""
    match = _MODEL_URI.match(uri.strip())
    return f"{match['name']}/{match['version']}" if match else None


def _float_tag(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _blob_cache(settings: Settings) -> Path:
    return (Path(settings.home) / "cache" / "blob").resolve()
