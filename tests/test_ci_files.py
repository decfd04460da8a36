"""The CI files: schemas, step allow-list, the Azure-configured notice, README and pre-commit.

Everything runs offline: check-jsonschema validates against its vendored schemas, in a
subprocess that cannot reach the network. A broken copy of each kind of file, in a temporary
folder, must fail the same function the real files pass.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from ml_service.util import ci_files

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PRE_COMMIT = ROOT / ".pre-commit-config.yaml"

WORKFLOWS = ("ci.yml", "publish-pipelines.yml", "release.yml")
EXPECTED = (
    {f".github/workflows/{n}" for n in WORKFLOWS}
    | {f".azure-pipelines/{n}" for n in WORKFLOWS}
    | {".github/dependabot.yml"}
)


def _relative(path: Path) -> str:
    return path.resolve().relative_to(ROOT).as_posix()


def _copy(tmp_path: Path, relative: str, edit=None) -> Path:
    """``relative`` copied under tmp_path (with the Makefile), text changed by ``edit``."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    target = tmp_path / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    text = (ROOT / relative).read_text(encoding="utf-8")
    if edit is not None:
        changed = edit(text)
        assert changed != text, f"the edit did not change {relative}"
        text = changed
    target.write_text(text, encoding="utf-8")
    return target


def _replace(old: str, new: str):
    def edit(text: str) -> str:
        assert old in text, f"{old!r} not in the file"
        return text.replace(old, new, 1)

    return edit


# ---------------------------------------------------------------------------------- real files


def test_every_ci_file_is_found_and_valid(capsys: pytest.CaptureFixture[str]) -> None:
    paths, missing = ci_files.discover(ROOT)
    assert missing == []
    assert {_relative(p) for p in paths} == EXPECTED
    assert ci_files.main(["--root", str(ROOT)]) == 0
    lines = capsys.readouterr().out.splitlines()
    ok = [line for line in lines if line.startswith("ok ")]
    assert len(ok) == len(EXPECTED), lines  # one line per file
    assert lines[-1] == f"{len(EXPECTED)} CI files checked, all valid"


def test_copies_in_another_folder_pass_too(tmp_path: Path) -> None:
    """The failures below come from the edits, not from the files' place."""
    copies = [_copy(tmp_path, relative) for relative in sorted(EXPECTED)]
    results = ci_files.check_files(tmp_path, copies)
    assert [r.problems for r in results] == [[] for _ in copies]


def test_an_empty_repository_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ci_files.main(["check", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert out.count("FAIL  no ") == len(ci_files.KINDS)


def test_kind_of_only_knows_the_ci_places() -> None:
    assert ci_files.kind_of(ROOT / ".github/workflows/ci.yml", ROOT).steps == "github"
    assert ci_files.kind_of(ROOT / ".azure-pipelines/ci.yml", ROOT).steps == "azure"
    assert ci_files.kind_of(ROOT / ".github/dependabot.yml", ROOT).schemas == ("vendor.dependabot",)
    assert ci_files.kind_of(ROOT / ".github/workflows/sub/ci.yml", ROOT) is None
    assert ci_files.kind_of(ROOT / "ci.yml", ROOT) is None


# ---------------------------------------------------------------------------------- broken copies

BROKEN = {
    "workflow without on": (
        ".github/workflows/ci.yml",
        _replace("on:\n  pull_request:\n  push:\n    branches: [main]\n", ""),
        "vendor.github-workflows",
    ),
    "workflow with a numeric runs-on": (
        ".github/workflows/publish-pipelines.yml",
        _replace("runs-on: ubuntu-latest", "runs-on: 42"),
        "vendor.github-workflows",
    ),
    "workflow job without a timeout": (
        ".github/workflows/release.yml",
        _replace("    timeout-minutes: 60\n", ""),
        "custom.github-workflows-require-timeout",
    ),
    "pipeline with a numeric pool": (
        ".azure-pipelines/ci.yml",
        _replace("pool:\n  vmImage: ubuntu-latest", "pool: 42"),
        "vendor.azure-pipelines",
    ),
    "pipeline with a list as a job's timeout": (
        ".azure-pipelines/publish-pipelines.yml",
        _replace('timeoutInMinutes: "60"', "timeoutInMinutes: [60]"),
        "vendor.azure-pipelines",
    ),
    "pipeline with an unknown task input": (
        ".azure-pipelines/ci.yml",
        _replace("summaryFileLocation:", "summaryFile:"),
        "vendor.azure-pipelines",
    ),
    "pipeline with an AzureCLI script type that does not exist": (
        ".azure-pipelines/release.yml",
        _replace("scriptType: bash", "scriptType: zsh"),
        "vendor.azure-pipelines",
    ),
    "dependabot with an unknown ecosystem": (
        ".github/dependabot.yml",
        _replace("package-ecosystem: npm", "package-ecosystem: npm-classic"),
        "vendor.dependabot",
    ),
    "dependabot without a schedule": (
        ".github/dependabot.yml",
        _replace(
            "  - package-ecosystem: github-actions\n    directory: /\n    schedule:\n"
            "      interval: weekly\n",
            "  - package-ecosystem: github-actions\n    directory: /\n",
        ),
        "vendor.dependabot",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_copy_fails_its_schema(tmp_path: Path, case: str) -> None:
    relative, edit, schema = BROKEN[case]
    result = ci_files.check_file(_copy(tmp_path, relative, edit), tmp_path)
    assert not result.ok
    assert any(p.startswith(f"{schema}: schema validation failed") for p in result.problems), (
        result.problems
    )


def test_the_supplement_is_what_the_vendored_pipeline_schema_lacks() -> None:
    """Plain vendored schema: the pipelines pass, but for PublishCodeCoverageResults@2. When a
    check-jsonschema release knows that task, this fails: drop AZURE_TASK_SUPPLEMENTS then."""
    kind = ci_files.kind_of(ROOT / ".azure-pipelines/ci.yml", ROOT)
    plain = ["--builtin-schema", "vendor.azure-pipelines", *kind.schema_args]
    for name in ("publish-pipelines.yml", "release.yml"):
        assert (
            ci_files.run_check_jsonschema(
                [*plain, str(ROOT / ".azure-pipelines" / name)]
            ).returncode
            == 0
        )
    result = ci_files.run_check_jsonschema([*plain, str(ROOT / ".azure-pipelines/ci.yml")])
    assert result.returncode != 0
    assert "'PublishCodeCoverageResults@2' does not match" in result.stdout


def test_the_check_cannot_download(tmp_path: Path) -> None:
    """A schema that would need the network fails in the check's subprocess."""
    instance = tmp_path / "dependabot.yml"
    instance.write_text("version: 2\nupdates: []\n", encoding="utf-8")
    result = ci_files.run_check_jsonschema(
        [
            "--schemafile",
            "https://json.schemastore.org/dependabot-2.0.json",
            "--no-cache",
            str(instance),
        ]
    )
    assert result.returncode != 0
    assert "ok -- validation done" not in result.stdout


def test_main_exits_non_zero_and_names_the_broken_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    relative, edit, _ = BROKEN["workflow with a numeric runs-on"]
    _copy(tmp_path, relative, edit)
    assert ci_files.main(["check", "--root", str(tmp_path), relative]) == 1
    out = capsys.readouterr().out
    assert f"FAIL  {relative}" in out
    assert "1 CI files checked, 1 failed" in out


# ---------------------------------------------------------------------------------- allow-list

TARGETS = ci_files.makefile_targets(ROOT)


def test_the_makefile_targets_are_read() -> None:
    assert {"lint", "test", "check-workflows", "setup-azure", "publish", "release"} <= TARGETS
    assert ".PHONY" not in TARGETS


@pytest.mark.parametrize(
    "line",
    [
        "make test",
        "make lint check-workflows",
        'make release LOCATION="$LOCATION" DEPLOY="$DEPLOY"',
        "videoanom azure publish --dry-run",
        ".venv/bin/videoanom azure status",
        "python -m ml_service.util.ci_files azure-configured --require",
    ],
)
def test_allowed_commands(line: str) -> None:
    assert ci_files.command_problem(line, TARGETS) is None


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("make test && echo done", "shell logic"),
        ("make test; make lint", "shell logic"),
        ("make test | tee log", "shell logic"),
        ("make test > log", "shell logic"),
        ("make release LOCATION=$(cat location)", "shell logic"),
        ("make release LOCATION=${{ inputs.location }}", "expression"),
        ("if [ -n x ]", "not on the allow-list"),
        ("pip install -e .", "not on the allow-list"),
        ("pytest -x", "not on the allow-list"),
        ("python -c pass", "not on the allow-list"),
        ("make deploy", "no target 'deploy'"),
        ("make -k test", "options are not allowed"),
        ("make LOCATION=x", "name the make target"),
    ],
)
def test_commands_off_the_allow_list(line: str, why: str) -> None:
    problem = ci_files.command_problem(line, TARGETS)
    assert problem is not None and why in problem


def test_a_workflow_step_with_inline_logic_fails(tmp_path: Path) -> None:
    edit = _replace(
        "        run: make check-workflows\n",
        "        run: |\n          pip install check-jsonschema\n"
        "          check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*\n",
    )
    path = _copy(tmp_path, ".github/workflows/ci.yml", edit)
    result = ci_files.check_file(path, tmp_path)
    assert not any("schema validation" in p for p in result.problems)  # valid YAML for GitHub
    assert len(result.problems) == 2, result.problems
    assert all("not on the allow-list" in p for p in result.problems)


def test_a_workflow_with_an_unknown_action_fails(tmp_path: Path) -> None:
    edit = _replace("uses: actions/upload-artifact@v6", "uses: someone/upload-anything@v1")
    result = ci_files.check_file(_copy(tmp_path, ".github/workflows/ci.yml", edit), tmp_path)
    assert len(result.problems) == 1 and "someone/upload-anything" in result.problems[0]


def test_a_workflow_with_an_unknown_make_target_fails(tmp_path: Path) -> None:
    edit = _replace("run: make publish", "run: make publish-everything")
    path = _copy(tmp_path, ".github/workflows/publish-pipelines.yml", edit)
    result = ci_files.check_file(path, tmp_path)
    assert len(result.problems) == 1 and "no target 'publish-everything'" in result.problems[0]


def test_a_pipeline_script_with_inline_logic_fails(tmp_path: Path) -> None:
    edit = _replace(
        "inlineScript: make publish\n",
        "inlineScript: |\n            make publish\n            az ml job list -o table\n",
    )
    path = _copy(tmp_path, ".azure-pipelines/publish-pipelines.yml", edit)
    result = ci_files.check_file(path, tmp_path)
    assert not any("schema validation" in p for p in result.problems)
    assert len(result.problems) == 1 and "az ml job list" in result.problems[0]


def test_a_pipeline_with_an_unknown_task_fails(tmp_path: Path) -> None:
    edit = _replace("task: NodeTool@0", "task: Npm@1")
    result = ci_files.check_file(_copy(tmp_path, ".azure-pipelines/ci.yml", edit), tmp_path)
    assert any("'Npm@1' is not on the allow-list" in p for p in result.problems)


def test_template_expressions_wrapping_steps_are_opened() -> None:
    document = {
        "steps": [
            {"${{ if eq(parameters.x, true) }}": [{"script": "make test"}, {"bash": "ls"}]},
            {"script": "make lint"},
        ]
    }
    steps = list(ci_files.iter_steps(document))
    assert steps == [{"script": "make test"}, {"bash": "ls"}, {"script": "make lint"}]


# ------------------------------------------------------------------------- azure-configured

ALL_SET = {
    "AZURE_CLIENT_ID": "00000000-0000-0000-0000-000000000001",
    "AZURE_TENANT_ID": "00000000-0000-0000-0000-000000000002",
    "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000003",
    "AZURE_RESOURCE_GROUP": "rg-videoanom",
    "AML_WORKSPACE_NAME": "mlw-videoanom",
}


def _bare_environment() -> dict[str, str]:
    names = set(ci_files.AZURE_SECRETS) | set(ci_files.AZURE_VARIABLES)
    return {k: v for k, v in os.environ.items() if k not in names}


def test_azure_configured_prints_a_notice_when_secrets_are_missing() -> None:
    """As the workflow runs it: a bare interpreter (-S: no site-packages), before make setup."""
    result = subprocess.run(
        [sys.executable, "-S", "-m", "ml_service.util.ci_files", "azure-configured"],
        cwd=ROOT,
        env={**_bare_environment(), "AML_SDK": "v2"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith("::notice title=Azure not configured::")
    for name in ci_files.AZURE_SECRETS + ci_files.AZURE_VARIABLES:
        assert name in line


def test_azure_configured_when_everything_is_set() -> None:
    status, line = ci_files.azure_configured(ALL_SET)
    assert status == 0
    assert line == "configured: workspace mlw-videoanom in resource group rg-videoanom"
    assert ci_files.azure_configured(ALL_SET, require=True)[0] == 0


def test_azure_configured_fails_when_only_some_are_set() -> None:
    partial = {**ALL_SET, "AZURE_TENANT_ID": " ", "AML_WORKSPACE_NAME": ""}
    status, line = ci_files.azure_configured(partial)
    assert status == 1
    assert line.startswith("::error title=Azure partly configured::")
    assert "AZURE_TENANT_ID" in line and "AML_WORKSPACE_NAME" in line
    assert "AZURE_CLIENT_ID" not in line


def test_azure_configured_require_turns_the_notice_into_an_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ALL_SET:
        monkeypatch.delenv(name, raising=False)
    assert ci_files.main(["azure-configured", "--require"]) == 1
    assert capsys.readouterr().out.startswith("::error title=Azure not configured::")
    assert ci_files.main(["azure-configured"]) == 0
    assert capsys.readouterr().out.startswith("::notice title=Azure not configured::")


def _workflow(name: str) -> dict:
    # PyYAML reads the key "on" as True; only jobs are used here.
    return yaml.safe_load((ROOT / ".github/workflows" / name).read_text(encoding="utf-8"))


def test_publish_skips_its_azure_steps_on_the_same_secret_as_the_check() -> None:
    job = _workflow("publish-pipelines.yml")["jobs"]["publish"]
    assert job["env"]["HAS_AZURE"] == f"${{{{ secrets.{ci_files.AZURE_KEY_SECRET} != '' }}}}"
    steps = job["steps"]
    check = next(i for i, s in enumerate(steps) if "azure-configured" in str(s.get("run", "")))
    assert "if" not in steps[check]  # the check always runs, and says why Azure is skipped
    for step in steps[check + 1 :]:
        assert step.get("if") == "env.HAS_AZURE == 'true'", step
    # the check sees every secret and variable it names
    seen = {**job["env"], **steps[check].get("env", {})}
    for name in ci_files.AZURE_SECRETS:
        assert seen[name] == f"${{{{ secrets.{name} }}}}"
    for name in ci_files.AZURE_VARIABLES:
        assert seen[name] == f"${{{{ vars.{name} }}}}"


def test_the_azure_jobs_sign_in_with_oidc_only() -> None:
    for name, job_id in (("publish-pipelines.yml", "publish"), ("release.yml", "release")):
        workflow = _workflow(name)
        assert workflow["permissions"] == {"id-token": "write", "contents": "read"}
        login = next(
            s for s in workflow["jobs"][job_id]["steps"] if "azure/login" in s.get("uses", "")
        )
        assert set(login["with"]) == {"client-id", "tenant-id", "subscription-id"}
        text = (ROOT / ".github/workflows" / name).read_text(encoding="utf-8")
        assert "client-secret" not in text and "creds:" not in text
    release = _workflow("release.yml")["jobs"]["release"]
    assert release["environment"] == "production"
    assert any("--require" in str(s.get("run", "")) for s in release["steps"])


def test_release_inputs_and_dispatch() -> None:
    workflow = _workflow("release.yml")
    on = workflow[True]
    inputs = on["workflow_dispatch"]["inputs"]
    assert inputs["location"]["required"] is True
    assert inputs["deploy"]["options"] == ["azureml-v2", "azureml-v1", "none"]
    assert on["repository_dispatch"]["types"] == ["model-registered"]
    pipeline = yaml.safe_load((ROOT / ".azure-pipelines/release.yml").read_text(encoding="utf-8"))
    parameters = {p["name"]: p for p in pipeline["parameters"]}
    assert "default" not in parameters["location"]  # asked for at every run
    assert parameters["deploy"]["values"] == inputs["deploy"]["options"]
    job = pipeline["jobs"][0]
    assert job["deployment"] and job["environment"] == "production"


def test_azure_pipelines_sign_in_through_the_named_service_connection() -> None:
    for name in ("publish-pipelines.yml", "release.yml"):
        document = yaml.safe_load((ROOT / ".azure-pipelines" / name).read_text(encoding="utf-8"))
        assert {"group": "videoanom"} in document["variables"]
        cli = [s for s in ci_files.iter_steps(document) if s.get("task") == "AzureCLI@2"]
        assert len(cli) == 1
        assert cli[0]["inputs"]["azureSubscription"] == "$(AZURE_SERVICE_CONNECTION)"


def test_ci_publishes_junit_and_coverage() -> None:
    github = _workflow("ci.yml")["jobs"]["test"]
    test_step = next(s for s in github["steps"] if s.get("run") == "make test")
    assert "--junitxml=test-results/junit.xml" in test_step["env"]["PYTEST_ADDOPTS"]
    upload = next(s for s in github["steps"] if "upload-artifact" in s.get("uses", ""))
    assert upload["with"]["path"] == "test-results/"
    azure = yaml.safe_load((ROOT / ".azure-pipelines/ci.yml").read_text(encoding="utf-8"))
    steps = list(ci_files.iter_steps(azure))
    addopts = next(s for s in steps if s.get("script") == "make test")["env"]["PYTEST_ADDOPTS"]
    assert "--junitxml=" in addopts and "--cov-report=xml:" in addopts
    tasks = {s.get("task"): s for s in steps}
    assert tasks["PublishTestResults@2"]["inputs"]["testResultsFormat"] == "JUnit"
    assert "PublishCodeCoverageResults@2" in tasks
    # --cov comes from pytest-cov, pinned in the dev extra
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][
        "dev"
    ]
    assert any(re.fullmatch(r"pytest-cov==[\d.]+", d) for d in dev)


# ---------------------------------------------------------------------------------- README


def _cicd_table() -> list[list[str]]:
    """The rows of the first table of the README's CI/CD section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## CI/CD\n", 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    assert table[0] == ["trigger", "GitHub workflow", "Azure DevOps pipeline", "runs"]
    assert all(len(row) == 4 for row in table), table
    return table[2:]


def _normalised(command: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(program, make targets or arguments, variable names): values do not matter."""
    words = shlex.split(command)
    if words[0] != "make":
        return words[0], tuple(words[1:]), ()
    targets = tuple(w for w in words[1:] if "=" not in w)
    variables = tuple(sorted(w.split("=", 1)[0] for w in words[1:] if "=" in w))
    return "make", targets, variables


def test_the_readme_table_matches_the_files() -> None:
    rows = _cicd_table()
    named: set[str] = set()
    for _trigger, github, azure, runs in rows:
        files = re.findall(r"`([^`]+)`", github) + re.findall(r"`([^`]+)`", azure)
        assert len(files) == 2, (github, azure)
        named.update(files)
        table = {_normalised(c) for c in re.findall(r"`([^`]+)`", runs)}
        assert table
        for relative in files:
            commands = {
                _normalised(c)
                for c in ci_files.step_commands(ROOT / relative, root=ROOT)
                if c.split()[0] in ("make", "videoanom")
            }
            assert table == commands, (relative, table, commands)
    workflows = {e for e in EXPECTED if "dependabot" not in e}
    assert named == workflows


def test_the_readme_lists_the_variable_group() -> None:
    text = README.read_text(encoding="utf-8").split("\n## CI/CD\n", 1)[1]
    for name in (
        "AZURE_SERVICE_CONNECTION",
        "AZURE_SUBSCRIPTION_ID",
        "AZURE_RESOURCE_GROUP",
        "AML_WORKSPACE_NAME",
        "AML_SDK",
        "MLFLOW_TRACKING_URI",
    ):
        assert f"`{name}`" in text
    for name in ci_files.AZURE_SECRETS + ci_files.AZURE_VARIABLES:
        assert f"`{name}`" in text
    assert "`videoanom`" in text and ".env.example" in text


# ------------------------------------------------------------------- pre-commit, dependabot


def test_pre_commit_runs_ruff_from_the_venv_and_the_schema_check() -> None:
    config = yaml.safe_load(PRE_COMMIT.read_text(encoding="utf-8"))
    hooks = {h["id"]: h for repo in config["repos"] for h in repo["hooks"]}
    assert all(repo["repo"] == "local" for repo in config["repos"])
    assert hooks["ruff-check"]["entry"].startswith(".venv/bin/ruff check")
    assert hooks["ruff-format"]["entry"].startswith(".venv/bin/ruff format")
    check = hooks["ci-files"]
    assert check["entry"] == ".venv/bin/python -m ml_service.util.ci_files"
    assert check["pass_filenames"] is False
    pattern = re.compile(check["files"])
    for relative in [*sorted(EXPECTED), "Makefile", "ml_service/util/ci_files.py"]:
        assert pattern.search(relative), relative
    assert not pattern.search("README.md")


def test_dependabot_covers_pip_npm_and_actions_weekly_grouped() -> None:
    config = yaml.safe_load((ROOT / ".github/dependabot.yml").read_text(encoding="utf-8"))
    updates = {u["package-ecosystem"]: u for u in config["updates"]}
    assert set(updates) == {"pip", "npm", "github-actions"}
    for update in updates.values():
        assert update["directory"] == "/"
        assert update["schedule"]["interval"] == "weekly"
        assert update["groups"]
