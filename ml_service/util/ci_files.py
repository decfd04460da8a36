"""The CI files: schema validation, a step allow-list, and the Azure-configured check.

Usage (from the repository root)::

    python -m ml_service.util.ci_files           # validate every CI file (make check-workflows)
    python -m ml_service.util.ci_files check [--root DIR] [FILE ...]
    python -m ml_service.util.ci_files azure-configured [--require]

``check`` validates every GitHub workflow, Azure DevOps pipeline and the Dependabot file
against check-jsonschema's *builtin* (vendored) schema for its kind, run as a subprocess of
this interpreter, offline: the subprocess gets an unreachable proxy, so an attempt to download
anything would fail instead of passing unnoticed. It also checks that every shell step
(``run:`` in a workflow; ``script:``, ``bash:`` or an AzureCLI task's ``inlineScript`` in a
pipeline) only calls ``make <target>`` (a target the Makefile has), ``videoanom ...`` or
``python -m ml_service.util.ci_files ...``, and that every action or task is on a short
allow-list: the logic lives in the Makefile and the Python code, where ``make test`` runs it,
never only in YAML. One line per file; exit status 1 when any file fails.

``azure-configured`` is how a workflow learns whether the repository has Azure credentials:
with none it prints a GitHub ``::notice::`` naming the missing secrets and variables and exits
0 (the Azure steps are then skipped); with all of them it prints ``configured``; with only some
of them (or none, given ``--require``) it prints an ``::error::`` and exits 1.

This module imports only the standard library at import time (PyYAML is imported where
needed), so ``azure-configured`` runs on a bare ``python`` before ``make setup``.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class CiKind:
    """One kind of CI file: where it lives and which builtin schemas it must satisfy."""

    name: str
    patterns: tuple[str, ...]
    schemas: tuple[str, ...]
    schema_args: tuple[str, ...] = ()
    steps: str | None = None  # "github" or "azure": whose step allow-list applies


KINDS: tuple[CiKind, ...] = (
    CiKind(
        "GitHub workflow",
        (".github/workflows/*.yml", ".github/workflows/*.yaml"),
        # the second one: every job sets timeout-minutes
        ("vendor.github-workflows", "custom.github-workflows-require-timeout"),
        steps="github",
    ),
    CiKind(
        "Azure DevOps pipeline",
        (".azure-pipelines/*.yml", ".azure-pipelines/*.yaml"),
        ("vendor.azure-pipelines",),
        # as check-jsonschema's own pre-commit hook: ${{ }} template expressions are lifted
        # out before validation, and the schema's patterns are ECMAScript non-unicode regexes
        ("--data-transform", "azure-pipelines", "--regex-variant", "nonunicode"),
        steps="azure",
    ),
    CiKind(
        "Dependabot",
        (".github/dependabot.yml", ".github/dependabot.yaml"),
        ("vendor.dependabot",),
    ),
)

# The standard actions a workflow may use (owner/name, any pinned version).
ALLOWED_ACTIONS = frozenset(
    {
        "actions/checkout",
        "actions/setup-python",
        "actions/setup-node",
        "actions/upload-artifact",
        "azure/login",
    }
)
# The Azure Pipelines tasks a pipeline may use (name, any major version).
ALLOWED_TASKS = frozenset(
    {
        "UsePythonVersion",
        "NodeTool",
        "Cache",
        "PublishTestResults",
        "PublishCodeCoverageResults",
        "AzureCLI",
    }
)
# Step kinds of Azure Pipelines; script and bash are checked line by line.
AZURE_STEP_KINDS = ("checkout", "task", "script", "bash")

MAKE_COMMANDS = ("make",)
VIDEOANOM_COMMANDS = ("videoanom", ".venv/bin/videoanom")
PYTHON_COMMANDS = ("python", "python3", ".venv/bin/python")
THIS_MODULE = "ml_service.util.ci_files"

# Shell syntax that would put logic in YAML: separators, pipes, redirections, substitutions,
# subshells, brace expansion, and CI expressions pasted into the script (pass them through env).
_SHELL_LOGIC = re.compile(r"[;&|<>`(){}]|\$\(|\$\[")
_MAKE_VARIABLE = re.compile(r"^[A-Z][A-Z0-9_]*=")
_MAKE_TARGET = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)\s*:(?!=)")
_ACTION = re.compile(r"^([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)@\S+$")
_TASK = re.compile(r"^([A-Za-z0-9_.-]+)@\d+$")

# What the publish and release workflows need from the repository settings (GitHub).
AZURE_SECRETS = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_SUBSCRIPTION_ID")
AZURE_VARIABLES = ("AZURE_RESOURCE_GROUP", "AML_WORKSPACE_NAME")
# The one the workflows test (HAS_AZURE): without it the Azure steps are skipped.
AZURE_KEY_SECRET = "AZURE_CLIENT_ID"

# Tasks the vendored Azure Pipelines schema names in its task list but gives no branch (inputs)
# for, so that any use of them fails validation: PublishCodeCoverageResults@2 (the current
# version; @1 is deprecated). The entry below follows the task's documented inputs and is added
# to a copy of the vendored schema; everything else is validated as vendored.
AZURE_TASK_SUPPLEMENTS: tuple[dict[str, Any], ...] = (
    {
        "properties": {
            "task": {
                "description": "Publish code coverage results v2",
                "ignoreCase": "value",
                "pattern": "^PublishCodeCoverageResults@2$",
            },
            "inputs": {
                "description": "Publish code coverage results v2 inputs",
                "properties": {
                    "summaryFileLocation": {"type": "string", "ignoreCase": "key"},
                    "pathToSources": {"type": "string", "ignoreCase": "key"},
                    "failIfCoverageEmpty": {"type": "boolean", "ignoreCase": "key"},
                },
                "additionalProperties": False,
                "required": ["summaryFileLocation"],
            },
        },
        "firstProperty": ["task"],
        "required": ["task", "inputs"],
    },
)

# Any download attempt by check-jsonschema goes here and fails (nothing listens on port 9).
_OFFLINE_ENV = {
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "",
    "no_proxy": "",
}


@dataclass
class FileResult:
    """The outcome for one CI file: which kind, which schemas, and what is wrong."""

    path: Path
    kind: CiKind
    problems: list[str] = field(default_factory=list)
    commands: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


# ---------------------------------------------------------------------------------- discovery


def kind_of(path: Path, root: Path) -> CiKind | None:
    """The kind of CI file ``path`` is (by its place under ``root``), or None."""
    try:
        relative = path.resolve().relative_to(root.resolve())
    except ValueError:
        return None
    for kind in KINDS:
        if any(
            relative.match(pattern) and _depth(pattern) == len(relative.parts)
            for pattern in kind.patterns
        ):
            return kind
    return None


def _depth(pattern: str) -> int:
    return len(Path(pattern).parts)


def discover(root: Path) -> tuple[list[Path], list[str]]:
    """Every CI file under ``root``, and a problem line for each kind that has none."""
    found: list[Path] = []
    missing: list[str] = []
    for kind in KINDS:
        paths = sorted({p for pattern in kind.patterns for p in root.glob(pattern) if p.is_file()})
        if not paths:
            missing.append(f"no {kind.name} file ({', '.join(kind.patterns)})")
        found.extend(paths)
    return found, missing


# ---------------------------------------------------------------------------------- schemas


def run_check_jsonschema(arguments: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """check-jsonschema with ``arguments``, in a subprocess of this interpreter, offline."""
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", *arguments],
        capture_output=True,
        text=True,
        env={**os.environ, **_OFFLINE_ENV},
        timeout=120,
        check=False,
    )


def schema_problems(path: Path, kind: CiKind) -> list[str]:
    """check-jsonschema's complaints about ``path`` for each of the kind's builtin schemas."""
    problems: list[str] = []
    for schema in kind.schemas:
        supplemented = _supplemented_schema(schema)
        source = (
            ["--schemafile", str(supplemented)] if supplemented else ["--builtin-schema", schema]
        )
        result = run_check_jsonschema([*source, *kind.schema_args, str(path)])
        if result.returncode != 0:
            text = (result.stdout + result.stderr).strip()
            if "No module named check_jsonschema" in text:
                text = "check-jsonschema is not installed here: run `make setup` first"
            # check-jsonschema's "best match" lines repeat the whole document: cut them short
            lines = [_shorten(line) for line in text.splitlines() if line.strip()]
            detail = "\n".join(f"      {line}" for line in lines[:20])
            more = f"\n      ... ({len(lines) - 20} more lines)" if len(lines) > 20 else ""
            problems.append(f"{schema}: schema validation failed\n{detail}{more}")
    return problems


def _shorten(line: str, width: int = 240) -> str:
    return line if len(line) <= width else line[: width - 5] + " ..."


_supplemented: dict[str, Path] = {}
_supplemented_lock = threading.Lock()


def _supplemented_schema(schema: str) -> Path | None:
    """A copy of a vendored schema with its supplements, or None when it needs none."""
    if schema != "vendor.azure-pipelines":
        return None
    with _supplemented_lock:
        if schema not in _supplemented:
            spec = importlib.util.find_spec("check_jsonschema")
            if spec is None or not spec.submodule_search_locations:
                return None  # the subprocess then reports that check-jsonschema is missing
            package = Path(next(iter(spec.submodule_search_locations)))
            vendored = package / "builtin_schemas" / "vendor" / "azure-pipelines.json"
            document = json.loads(vendored.read_text(encoding="utf-8"))
            document["definitions"]["task"]["anyOf"].extend(AZURE_TASK_SUPPLEMENTS)
            folder = Path(tempfile.mkdtemp(prefix="videoanom-ci-schemas-"))
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            target = folder / "azure-pipelines.json"
            target.write_text(json.dumps(document), encoding="utf-8")
            _supplemented[schema] = target
        return _supplemented[schema]


# ---------------------------------------------------------------------------------- steps


def makefile_targets(root: Path) -> set[str]:
    """The explicit targets the Makefile at ``root`` defines (none when it has no Makefile)."""
    makefile = root / "Makefile"
    if not makefile.is_file():
        return set()
    targets: set[str] = set()
    for line in makefile.read_text(encoding="utf-8").splitlines():
        if "$(" in line.split(":", 1)[0]:
            continue
        match = _MAKE_TARGET.match(line)
        if match:
            targets.add(match.group(1))
    return targets


def script_lines(script: str) -> list[str]:
    """The commands of a shell script: continuations joined, blanks and comments dropped."""
    joined = re.sub(r"\\\n", " ", script)
    lines = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            lines.append(stripped)
    return lines


def command_problem(line: str, targets: set[str]) -> str | None:
    """Why one command line is not allowed in a CI step, or None when it is."""
    if "${{" in line:
        return f"{line!r}: a ${{{{ }}}} expression inside a script; pass it through env instead"
    if _SHELL_LOGIC.search(line):
        return f"{line!r}: shell logic in YAML; put it in the Makefile or the Python code"
    try:
        words = shlex.split(line)
    except ValueError as error:
        return f"{line!r}: {error}"
    head = words[0]
    if head in MAKE_COMMANDS:
        named = [w for w in words[1:] if not _MAKE_VARIABLE.match(w)]
        if not named:
            return f"{line!r}: name the make target"
        for word in named:
            if word.startswith("-"):
                return f"{line!r}: make options are not allowed ({word})"
            if word not in targets:
                return f"{line!r}: the Makefile has no target {word!r}"
        return None
    if head in VIDEOANOM_COMMANDS:
        return None
    if head in PYTHON_COMMANDS and words[1:3] == ["-m", THIS_MODULE]:
        return None
    allowed = "make <target>, videoanom ..., python -m " + THIS_MODULE + " ..."
    return f"{line!r}: not on the allow-list ({allowed})"


def load_yaml(path: Path) -> Any:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))


def iter_steps(document: Any) -> Iterable[Any]:
    """Every step of a parsed workflow or pipeline: each list under a ``steps`` key, anywhere
    (jobs, stages, deployment strategies), with Azure ``${{ if/each }}:`` wrappers opened."""
    if isinstance(document, dict):
        for key, value in document.items():
            if key == "steps" and isinstance(value, list):
                yield from _open_expressions(value)
            else:
                yield from iter_steps(value)
    elif isinstance(document, list):
        for item in document:
            yield from iter_steps(item)


def _open_expressions(steps: list[Any]) -> Iterable[Any]:
    for step in steps:
        if isinstance(step, dict) and len(step) == 1:
            ((key, value),) = step.items()
            if isinstance(key, str) and key.startswith("${{"):
                yield from _open_expressions(value if isinstance(value, list) else [value])
                continue
        yield step


def step_name(step: dict[str, Any]) -> str:
    for key in ("name", "displayName", "id", "uses", "task", "run", "script"):
        if step.get(key):
            return str(step[key])
    return "?"


def step_scripts(step: Any, flavour: str) -> list[str]:
    """The shell scripts a step runs: ``run`` (GitHub); ``script``, ``bash`` or a task's
    ``inlineScript`` (Azure Pipelines)."""
    if not isinstance(step, dict):
        return []
    if flavour == "github":
        return [str(step["run"])] if "run" in step else []
    scripts = [str(step[k]) for k in ("script", "bash") if k in step]
    inputs = step.get("inputs")
    if "task" in step and isinstance(inputs, dict) and "inlineScript" in inputs:
        scripts.append(str(inputs["inlineScript"]))
    return scripts


def step_commands(path: Path, kind: CiKind | None = None, root: Path | None = None) -> list[str]:
    """Every command line the shell steps of a workflow or pipeline run, in order."""
    kind = kind or kind_of(path, root or Path.cwd())
    if kind is None or kind.steps is None:
        return []
    return [
        line
        for step in iter_steps(load_yaml(path))
        for script in step_scripts(step, kind.steps)
        for line in script_lines(script)
    ]


def github_step_problems(step: Any) -> list[str]:
    """Allow-list problems of a workflow step, other than its commands."""
    if not isinstance(step, dict):
        return [f"step {step!r} is not a mapping"]
    name = step_name(step)
    problems: list[str] = []
    if "uses" in step:
        uses = str(step["uses"])
        match = _ACTION.match(uses)
        if not match:
            problems.append(f"step {name!r}: action {uses!r} must be owner/name@version")
        elif match.group(1).lower() not in ALLOWED_ACTIONS:
            problems.append(
                f"step {name!r}: action {match.group(1)!r} is not on the allow-list "
                f"({', '.join(sorted(ALLOWED_ACTIONS))})"
            )
    if "shell" in step:
        problems.append(f"step {name!r}: no custom shell; the default runs make and videoanom")
    return problems


def azure_step_problems(step: Any) -> list[str]:
    """Allow-list problems of a pipeline step, other than its commands."""
    if not isinstance(step, dict):
        return [f"step {step!r} is not a mapping"]
    name = step_name(step)
    kinds = [k for k in step if k in AZURE_STEP_KINDS]
    if len(kinds) != 1:
        others = [str(k) for k in step if k not in ("displayName", "name", "inputs", "env")]
        return [
            f"step {name!r}: kind {', '.join(others) or '?'} is not on the allow-list "
            f"({', '.join(AZURE_STEP_KINDS)})"
        ]
    problems: list[str] = []
    if kinds[0] == "task":
        task = str(step["task"])
        match = _TASK.match(task)
        if not match or match.group(1) not in ALLOWED_TASKS:
            problems.append(
                f"step {name!r}: task {task!r} is not on the allow-list "
                f"({', '.join(sorted(ALLOWED_TASKS))}, each as Name@major)"
            )
        inputs = step.get("inputs") or {}
        if isinstance(inputs, dict):
            if "scriptPath" in inputs or inputs.get("scriptLocation") == "scriptPath":
                problems.append(f"step {name!r}: a script file hides the logic; use inlineScript")
            if "scriptType" in inputs and str(inputs["scriptType"]) != "bash":
                problems.append(f"step {name!r}: scriptType must be bash")
    return problems


def step_problems(path: Path, kind: CiKind, root: Path) -> tuple[list[str], int]:
    """Allow-list problems of every step in ``path``, and how many commands it runs."""
    if kind.steps is None:
        return [], 0
    import yaml

    try:
        document = load_yaml(path)
    except yaml.YAMLError as error:
        return [f"not valid YAML: {error}"], 0
    targets = makefile_targets(root)
    problems: list[str] = []
    if kind.steps == "github" and isinstance(document, dict):
        jobs = document.get("jobs")
        for job_id, job in (jobs if isinstance(jobs, dict) else {}).items():
            uses = job.get("uses") if isinstance(job, dict) else None
            if uses and not str(uses).startswith("./.github/workflows/"):
                problems.append(f"job {job_id!r}: only this repository's reusable workflows")
    check = github_step_problems if kind.steps == "github" else azure_step_problems
    commands = 0
    for step in iter_steps(document):
        problems.extend(check(step))
        for script in step_scripts(step, kind.steps):
            for line in script_lines(script):
                commands += 1
                problem = command_problem(line, targets)
                if problem:
                    problems.append(f"step {step_name(step)!r}: {problem}")
    return problems, commands


# ---------------------------------------------------------------------------------- files


def check_file(path: Path, root: Path, kind: CiKind | None = None) -> FileResult:
    """Validate one CI file: its schemas and, for workflows and pipelines, its steps."""
    kind = kind or kind_of(path, root)
    if kind is None:
        raise ValueError(f"{path} is not a CI file this module knows (see KINDS)")
    result = FileResult(path=path, kind=kind)
    result.problems.extend(schema_problems(path, kind))
    problems, result.commands = step_problems(path, kind, root)
    result.problems.extend(problems)
    return result


def check_files(root: Path, paths: Sequence[Path] | None = None) -> list[FileResult]:
    """Validate ``paths`` (default: every CI file under ``root``), in parallel."""
    if paths is None:
        paths, _ = discover(root)
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(paths)))) as pool:
        return list(pool.map(lambda p: check_file(p, root), paths))


def _display(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def run_check(root: Path, paths: Sequence[Path] | None = None) -> int:
    """Validate and print one line per file (details under failures); 0 when all pass."""
    missing: list[str] = []
    if paths is None:
        paths, missing = discover(root)
    results = check_files(root, paths)
    for result in results:
        shown = _display(result.path, root)
        if result.ok:
            steps = f"; {result.commands} commands allowed" if result.kind.steps else ""
            schemas = ", ".join(
                f"{n} + {len(AZURE_TASK_SUPPLEMENTS)} task supplement"
                if n == "vendor.azure-pipelines"
                else n
                for n in result.kind.schemas
            )
            print(f"ok    {shown}  ({schemas}{steps})")
        else:
            print(f"FAIL  {shown}")
            for problem in result.problems:
                print(f"    - {problem}")
    for line in missing:
        print(f"FAIL  {line}")
    failed = sum(not r.ok for r in results) + len(missing)
    print(
        f"{len(results)} CI files checked, {failed} failed"
        if failed
        else f"{len(results)} CI files checked, all valid"
    )
    return 1 if failed else 0


# ---------------------------------------------------------------------------------- azure


def azure_configuration(environ: Mapping[str, str]) -> tuple[str, list[str], list[str]]:
    """("configured" | "absent" | "partial", missing secrets, missing variables)."""
    missing_secrets = [n for n in AZURE_SECRETS if not environ.get(n, "").strip()]
    missing_variables = [n for n in AZURE_VARIABLES if not environ.get(n, "").strip()]
    if not missing_secrets and not missing_variables:
        return "configured", [], []
    if AZURE_KEY_SECRET in missing_secrets:
        return "absent", missing_secrets, missing_variables
    return "partial", missing_secrets, missing_variables


def azure_configured(environ: Mapping[str, str], require: bool = False) -> tuple[int, str]:
    """The exit status and the line to print for ``azure-configured``."""
    state, secrets, variables = azure_configuration(environ)
    if state == "configured":
        workspace = environ["AML_WORKSPACE_NAME"].strip()
        group = environ["AZURE_RESOURCE_GROUP"].strip()
        return 0, f"configured: workspace {workspace} in resource group {group}"
    missing = []
    if secrets:
        missing.append("the secrets " + ", ".join(secrets))
    if variables:
        missing.append("the variables " + ", ".join(variables))
    what = " and ".join(missing)
    where = "repository or environment settings, see README.md, CI/CD"
    if state == "absent" and not require:
        return 0, (
            f"::notice title=Azure not configured::Skipping the Azure steps: set {what} ({where})."
        )
    title = "Azure not configured" if state == "absent" else "Azure partly configured"
    return 1, f"::error title={title}::This job needs Azure: set {what} ({where})."


# ---------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog=f"python -m {THIS_MODULE}",
        description="Validate the CI files offline, or report whether Azure is configured.",
    )
    sub = parser.add_subparsers(dest="command")
    check = sub.add_parser("check", help="validate the CI files (the default)")
    check.add_argument("--root", type=Path, default=Path.cwd(), help="repository root")
    check.add_argument("files", nargs="*", type=Path, help="only these files")
    azure = sub.add_parser(
        "azure-configured", help="are the Azure secrets and variables set? (GitHub notice)"
    )
    azure.add_argument(
        "--require", action="store_true", help="fail (exit 1) instead of a notice when absent"
    )
    if not argv or argv[0] not in ("check", "azure-configured", "-h", "--help"):
        argv = ["check", *argv]
    args = parser.parse_args(argv)
    if args.command == "azure-configured":
        status, line = azure_configured(os.environ, require=args.require)
        print(line)
        return status
    root: Path = args.root
    paths = [p if p.is_absolute() else root / p for p in args.files] or None
    if paths:
        unknown = [p for p in paths if kind_of(p, root) is None]
        if unknown:
            parser.error(f"not a CI file: {', '.join(map(str, unknown))}")
    return run_check(root, paths)


if __name__ == "__main__":
    sys.exit(main())
