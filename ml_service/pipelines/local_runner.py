"""Runs a pipeline on this machine, each step as the same script an Azure ML step runs.

Every step's outputs go to ``<home>/steps/<pipeline key>/<step>/<reuse key>/`` where the
reuse key hashes the code, the step's parameters and its inputs' keys (Azure ML's
allow_reuse). Outputs are written to a temporary folder and renamed into place only when
the step succeeds, so a crashed or killed run resumes at the first unfinished step and
never trusts half-written output.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ml_service.pipelines.definition import CODE_DIR, Pipeline, Step
from videoanom.steps.common import DIE_WITH_PARENT_ENV

logger = logging.getLogger(__name__)

SUCCESS_MARKER = "_SUCCESS"


class StepFailed(RuntimeError):
    """A step's script exited non-zero; ``reason`` is its last error line."""

    def __init__(self, step: str, returncode: int, reason: str, log: Path) -> None:
        super().__init__(f"step {step} failed (exit {returncode}): {reason} [log: {log}]")
        self.step, self.returncode, self.reason, self.log = step, returncode, reason, log


@dataclass
class StepRecord:
    name: str
    key: str
    output_dir: Path
    reused: bool
    seconds: float


@dataclass
class PipelineRun:
    pipeline: str
    outputs: dict[str, Path] = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)


def code_hash(code_dir: Path = CODE_DIR) -> str:
    """Hash of every Python file the steps can run: a code change invalidates reuse."""
    digest = hashlib.sha256()
    for path in sorted(code_dir.rglob("*.py")):
        digest.update(path.relative_to(code_dir).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


# Called as on_step(step, event, seconds) with event one of "running", "reused",
# "succeeded", "failed": lets the caller keep a per-step pipeline record up to date.
StepListener = Callable[[str, str, float], None]


class LocalRunner:
    """Sequential executor of a :class:`Pipeline` with output reuse."""

    def __init__(
        self,
        home: Path,
        env: dict[str, str] | None = None,
        python: str = sys.executable,
        code_dir: Path = CODE_DIR,
    ) -> None:
        self.home = Path(home).resolve()
        self.env = dict(env or {})
        self.python = python
        self.code_dir = code_dir
        self._code_hash = code_hash(code_dir)

    def run(
        self,
        pipeline: Pipeline,
        params: dict[str, object],
        group: str,
        salts: dict[str, str] | None = None,
        on_step: StepListener | None = None,
    ) -> PipelineRun:
        """Run every step of ``pipeline``; ``group`` names the output folder (a location).

        ``salts`` adds step-specific facts to the reuse key, such as the listing of the
        datastore files data_prep reads, so changed data is never served from cache.
        ``on_step`` hears each step start, finish, reuse or failure.
        """
        notify = on_step or (lambda step, event, seconds: None)
        params = {**pipeline.defaults, **params}
        missing = sorted(pipeline.parameters() - set(params))
        if missing:
            raise ValueError(
                f"pipeline {pipeline.name} is missing parameters: {', '.join(missing)}"
            )
        if pipeline.external_inputs():
            raise ValueError(
                f"pipeline {pipeline.name} needs inputs: {sorted(pipeline.external_inputs())}"
            )
        run = PipelineRun(pipeline.name)
        keys: dict[str, str] = {}
        ordered = pipeline.ordered()
        for index, step in enumerate(ordered, start=1):
            key = self._reuse_key(step, params, keys, (salts or {}).get(step.name, ""))
            out_dir = self.home / "steps" / group / step.name / key
            started = time.monotonic()
            reused = step.allow_reuse and (out_dir / SUCCESS_MARKER).exists()
            if reused:
                logger.info(
                    "[%d/%d] %s: reusing finished output %s",
                    index,
                    len(ordered),
                    step.name,
                    out_dir,
                )
                notify(step.name, "reused", 0.0)
            else:
                logger.info("[%d/%d] %s: running", index, len(ordered), step.name)
                notify(step.name, "running", 0.0)
                try:
                    self._execute(step, params, run.outputs, out_dir)
                except StepFailed:
                    notify(step.name, "failed", time.monotonic() - started)
                    raise
                notify(step.name, "succeeded", time.monotonic() - started)
            for name in step.outputs:
                run.outputs[name] = out_dir / name
                keys[name] = key
            run.steps.append(
                StepRecord(step.name, key, out_dir, reused, time.monotonic() - started)
            )
        return run

    def _reuse_key(self, step: Step, params: dict, keys: dict[str, str], salt: str) -> str:
        payload = {
            "code": self._code_hash,
            "step": step.name,
            "script": step.script,
            "params": {p: str(params[p]) for p in step.params},
            "inputs": {i: keys[i] for i in step.inputs},
            "salt": salt,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def _execute(self, step: Step, params: dict, upstream: dict[str, Path], out_dir: Path) -> None:
        tmp = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        paths = {name: upstream[name] for name in step.inputs}
        for name in step.outputs:
            paths[name] = tmp / name
            paths[name].mkdir()
        command = [self.python, str(self.code_dir / step.script), *step.arguments(paths, params)]
        log_path = tmp / "step.log"
        returncode, tail = self._stream(command, log_path)
        if returncode != 0:
            failed = out_dir.with_name(f"{out_dir.name}.failed")
            shutil.rmtree(failed, ignore_errors=True)
            tmp.rename(failed)
            reason = next((line for line in reversed(tail) if line.startswith("error:")), None)
            reason = (reason or (tail[-1] if tail else "no output")).removeprefix("error: ")
            raise StepFailed(step.name, returncode, reason, failed / "step.log")
        # Outputs must be written against their final paths: steps record absolute paths
        # only under the temporary folder, so renaming keeps everything consistent.
        (tmp / SUCCESS_MARKER).write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp.rename(out_dir)

    def _stream(self, command: list[str], log_path: Path) -> tuple[int, list[str]]:
        """Run ``command``, copying its output to our stderr and to ``log_path``."""
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1", DIE_WITH_PARENT_ENV: "1"}
        tail: deque[str] = deque(maxlen=50)
        with (
            open(log_path, "w") as log,
            subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
            ) as process,
        ):
            assert process.stdout is not None
            for line in process.stdout:
                log.write(line)
                sys.stderr.write(line)
                tail.append(line.rstrip("\n"))
            returncode = process.wait()
        return returncode, list(tail)
