"""environment_setup/ and .amlignore stay in step with the code that uses them.

Fast, offline checks that catch drift: the job environment pins what pyproject.toml pins
(less the documented swaps), the Dockerfile builds on the SDK's base image from that file, the
Bicep template declares what the pipelines need with the AzureSettings defaults, the
deployment script parses, and .amlignore keeps the job's source in and the bulk out. Nothing
here reaches Azure; a real deployment is the only full check of the template.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import tomllib
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ml_service.azure import spec
from ml_service.util.env_variables import PRIORITIES, AzureSettings

ROOT = Path(__file__).resolve().parents[1]
ENV_DIR = ROOT / "environment_setup"
INFRA = ENV_DIR / "infra"
BICEP = INFRA / "main.bicep"
PARAMETERS = INFRA / "main.parameters.json"
DEPLOY = INFRA / "deploy.sh"
AMLIGNORE = ROOT / ".amlignore"

# pyproject.toml core package -> what the job environment has instead (documented in conda.yml).
SWAPPED = {
    "tensorflow-cpu": "tensorflow",  # the GPU build, tensorflow[and-cuda]
    "mlflow": "mlflow-skinny",  # + azureml-mlflow, which caps mlflow-skinny at 3.15.0
}
SWAP_PINS = {
    "tensorflow": ("==2.21.0", {"and-cuda"}),
    "mlflow-skinny": ("==3.15.0", set()),
    "azureml-mlflow": ("==1.62.0.post6", set()),
}
# Packages the steps import that the local venv gets through mlflow (full), not pyproject.
RUNTIME_EXTRAS = ("pandas", "matplotlib", "skops")
# main.bicep parameter -> AzureSettings field with the same default.
BICEP_SETTINGS = {
    "cpuClusterName": "cpu_cluster",
    "cpuVmSize": "cpu_vm_size",
    "cpuMinNodes": "cpu_min_nodes",
    "cpuMaxNodes": "cpu_max_nodes",
    "gpuClusterName": "gpu_cluster",
    "gpuVmSize": "gpu_vm_size",
    "gpuMinNodes": "gpu_min_nodes",
    "gpuMaxNodes": "gpu_max_nodes",
    "vmPriority": "vm_priority",
}


# ----------------------------------------------------------------------------- conda.yml


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _conda() -> dict:
    return yaml.safe_load(spec.CONDA_FILE.read_text())


def _job_requirements() -> dict[str, Requirement]:
    pip_sections = [d["pip"] for d in _conda()["dependencies"] if isinstance(d, dict)]
    assert len(pip_sections) == 1, "conda.yml: one pip section"
    requirements = [Requirement(line) for line in pip_sections[0]]
    names = [canonicalize_name(r.name) for r in requirements]
    assert len(names) == len(set(names)), f"conda.yml pins a package twice: {names}"
    return dict(zip(names, requirements, strict=True))


def _exact(requirement: Requirement) -> str:
    specifiers = list(requirement.specifier)
    assert len(specifiers) == 1 and specifiers[0].operator == "==", (
        f"conda.yml: {requirement} is not an exact pin"
    )
    return specifiers[0].version


def test_conda_file_is_where_spec_says_and_parses() -> None:
    assert spec.CONDA_FILE == ENV_DIR / "conda.yml"
    conda = _conda()
    assert conda["name"]
    plain = [d for d in conda["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in plain  # pyproject: requires-python >=3.11,<3.12
    assert "pip" in plain
    assert "defaults" not in conda["channels"]


def test_conda_pins_every_core_dependency_like_pyproject() -> None:
    job = _job_requirements()
    for line in _pyproject()["project"]["dependencies"]:
        requirement = Requirement(line)
        if requirement.marker and not requirement.marker.evaluate({"sys_platform": "linux"}):
            continue  # tensorflow on macOS
        name = canonicalize_name(requirement.name)
        if name in SWAPPED:
            assert name not in job, f"conda.yml: {name} should be swapped for {SWAPPED[name]}"
            continue
        assert name in job, f"conda.yml does not pin {name} (pyproject.toml: {line})"
        version = _exact(job[name])
        # Exact in pyproject -> the same version; a range -> a version inside it.
        assert requirement.specifier.contains(version, prereleases=True), (
            f"conda.yml pins {name}=={version}, pyproject.toml says {line}"
        )


def test_conda_swaps_and_runtime_extras() -> None:
    job = _job_requirements()
    for name, (pin, extras) in SWAP_PINS.items():
        assert name in job, f"conda.yml lacks {name}"
        assert str(job[name].specifier) == pin
        assert set(job[name].extras) == extras
    for name in RUNTIME_EXTRAS:
        assert name in job, f"conda.yml lacks {name}, which the steps import"
        _exact(job[name])


def test_conda_pins_the_azure_extras() -> None:
    job = _job_requirements()
    extras = _pyproject()["project"]["optional-dependencies"]
    for line in extras["azure-v1"] + extras["azure-v2"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in job, f"conda.yml lacks {name} (the master step submits with it)"
        version = _exact(job[name])
        assert requirement.specifier.contains(version), f"{name}=={version} vs {line}"


def test_conda_runtime_extras_match_the_local_venv_when_installed() -> None:
    """pandas/matplotlib/skops: the version the local runs and tests use, where installed."""
    from importlib.metadata import PackageNotFoundError, version

    job = _job_requirements()
    for name in RUNTIME_EXTRAS:
        try:
            local = version(name)
        except PackageNotFoundError:
            continue
        assert _exact(job[name]) == local, f"conda.yml {name}=={_exact(job[name])}, venv {local}"


# ----------------------------------------------------------------------------- Dockerfile


def test_dockerfile_builds_on_the_base_image_from_conda_yml() -> None:
    assert spec.DOCKERFILE == ENV_DIR / "Dockerfile"
    instructions = [
        line.strip()
        for line in spec.DOCKERFILE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    froms = [line for line in instructions if line.upper().startswith("FROM ")]
    assert froms == [f"FROM {spec.BASE_IMAGE}"]
    assert any(re.match(r"COPY\s+conda\.yml\s", line) for line in instructions)
    text = spec.DOCKERFILE.read_text()
    assert re.search(r"conda env create .*--file /tmp/conda\.yml", text)
    assert re.search(r"^ENV PATH=.*AZUREML_CONDA_ENVIRONMENT_PATH", text, re.MULTILINE)


# ----------------------------------------------------------------------------- main.bicep


def _bicep() -> str:
    return BICEP.read_text()


def _bicep_params() -> dict[str, tuple[str, str | None]]:
    """name -> (type, default text or None), from ``param NAME TYPE [= DEFAULT]`` lines."""
    params = {}
    for match in re.finditer(r"^param (\w+) (\w+)(?: = (.+))?$", _bicep(), re.MULTILINE):
        params[match[1]] = (match[2], match[3])
    return params


def _bicep_resources() -> dict[str, str]:
    """symbolic name -> type (without the API version)."""
    found = re.findall(r"^resource (\w+) '([\w./]+)@([\w-]+)'", _bicep(), re.MULTILINE)
    for name, _, api in found:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", api), f"{name}: preview API {api}"
    return {name: kind for name, kind, _ in found}


def _resource_body(name: str) -> str:
    """The text of one top-level resource, up to the next top-level declaration."""
    text = _bicep()
    start = re.search(rf"^resource {name} ", text, re.MULTILINE)
    assert start, f"main.bicep has no resource {name}"
    end = re.compile(r"^(resource|output|var|param) ", re.MULTILINE).search(text, start.end())
    return text[start.start() : end.start() if end else len(text)]


def _literal(text: str) -> object:
    text = text.strip()
    if text.startswith("'") and text.endswith("'"):
        return text[1:-1]
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


def test_bicep_declares_the_workspace_and_its_resources() -> None:
    kinds = set(_bicep_resources().values())
    for kind in (
        "Microsoft.MachineLearningServices/workspaces",
        "Microsoft.Storage/storageAccounts",
        "Microsoft.KeyVault/vaults",
        "Microsoft.ContainerRegistry/registries",
        "Microsoft.Insights/components",
        "Microsoft.OperationalInsights/workspaces",
        "Microsoft.MachineLearningServices/workspaces/computes",
        "Microsoft.Authorization/roleAssignments",
    ):
        assert kind in kinds, f"main.bicep declares no {kind}"
    workspace = _resource_body("workspace")
    for link in ("storageAccount: storage.id", "keyVault: keyVault.id"):
        assert link in workspace
    assert "applicationInsights: appInsights.id" in workspace
    assert "containerRegistry: containerRegistry.id" in workspace


def test_bicep_secure_defaults() -> None:
    storage = _resource_body("storage")
    assert "allowBlobPublicAccess: false" in storage
    assert "minimumTlsVersion: 'TLS1_2'" in storage
    assert "supportsHttpsTrafficOnly: true" in storage
    vault = _resource_body("keyVault")
    assert "enableSoftDelete: true" in vault
    assert "adminUserEnabled: false" in _resource_body("containerRegistry")
    # No secrets: no @secure() parameters, no keys or connection strings in outputs.
    assert "@secure()" not in _bicep()
    for line in re.findall(r"^output .*$", _bicep(), re.MULTILINE):
        assert not re.search(r"list\w*\(|secret|password|connection|primaryKey", line), line


@pytest.mark.parametrize("cluster", ["cpu", "gpu"])
def test_bicep_clusters_scale_to_zero_with_managed_identity(cluster: str) -> None:
    body = _resource_body(f"{cluster}Cluster")
    assert "Microsoft.MachineLearningServices/workspaces/computes@" in body
    assert "computeType: 'AmlCompute'" in body
    assert "parent: workspace" in body
    assert re.search(r"identity: \{\s*type: 'SystemAssigned'\s*\}", body)
    assert f"name: {cluster}ClusterName" in body
    assert f"vmSize: {cluster}VmSize" in body
    assert f"minNodeCount: {cluster}MinNodes" in body
    assert f"maxNodeCount: {cluster}MaxNodes" in body
    assert "nodeIdleTimeBeforeScaleDown:" in body
    assert "vmPriority: amlVmPriority" in body
    assert _bicep_params()[f"{cluster}MinNodes"][1] == "0"  # scale to zero by default


def test_bicep_role_assignments_for_the_cluster_identities() -> None:
    text = _bicep()
    roles = {
        "AzureML Data Scientist": "f6c7c914-8db3-469d-8ca1-694a8f32e121",
        "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
        "AcrPull": "7f951dda-4ed3-4680-a7ca-43fe172d538d",
    }
    for role, role_id in roles.items():
        assert role_id in text, f"main.bicep does not assign {role}"
    scopes = {
        "clusterDataScientist": "scope: workspace",
        "clusterBlobContributor": "scope: storage",
        "clusterAcrPull": "scope: containerRegistry",
    }
    for name, scope in scopes.items():
        body = _resource_body(name)
        assert "Microsoft.Authorization/roleAssignments@" in body
        assert scope in body
        assert "cpuCluster.identity.principalId" in body
        assert "gpuCluster.identity.principalId" in body
        assert "principalType: 'ServicePrincipal'" in body
    assert re.search(r"var clusterNames = \[\s*cpuClusterName\s*gpuClusterName\s*\]", text)


def test_bicep_parameter_defaults_equal_azure_settings_defaults() -> None:
    params = _bicep_params()
    defaults = {f.name: f.default for f in dataclasses.fields(AzureSettings)}
    for param, field in BICEP_SETTINGS.items():
        assert param in params, f"main.bicep lacks param {param}"
        assert params[param][1] is not None, f"param {param} has no default"
        assert _literal(params[param][1]) == defaults[field], (
            f"main.bicep {param} = {params[param][1]}, AzureSettings.{field} = {defaults[field]!r}"
        )
    allowed = re.search(r"@allowed\(\[\s*((?:'\w+'\s*)+)\]\)\s*param vmPriority", _bicep())
    assert allowed, "vmPriority should list its allowed values"
    assert tuple(re.findall(r"'(\w+)'", allowed[1])) == PRIORITIES


def test_bicep_outputs_what_env_needs() -> None:
    outputs = set(re.findall(r"^output (\w+) ", _bicep(), re.MULTILINE))
    assert {"subscriptionId", "resourceGroupName", "workspaceName", "storageAccountName"} <= outputs


def test_parameters_file_names_only_declared_parameters() -> None:
    document = json.loads(PARAMETERS.read_text())
    assert "deploymentParameters.json" in document["$schema"]
    declared = _bicep_params()
    for name, entry in document["parameters"].items():
        assert name in declared, f"main.parameters.json sets {name}, main.bicep has no such param"
        assert set(entry) == {"value"}, f"{name}: only plain values (no key vault references)"
    required = {name for name, (_, default) in declared.items() if default is None}
    assert required <= set(document["parameters"]), "the file must set every required param"
    defaults = {f.name: f.default for f in dataclasses.fields(AzureSettings)}
    for param, field in BICEP_SETTINGS.items():
        if param in document["parameters"]:
            assert document["parameters"][param]["value"] == defaults[field], param


# ----------------------------------------------------------------------------- deploy.sh


def test_deploy_script_parses_and_is_strict() -> None:
    result = subprocess.run(["bash", "-n", str(DEPLOY)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = DEPLOY.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert "--what-if" in text
    for variable in ("AZURE_RESOURCE_GROUP", "AZURE_LOCATION", "AML_WORKSPACE_NAME"):
        assert variable in text


def test_deploy_script_overrides_name_declared_parameters() -> None:
    declared = _bicep_params()
    overridden = re.findall(r"^add_override (\w+) (\w+)$", DEPLOY.read_text(), re.MULTILINE)
    assert overridden
    env_names = {f.metadata["env"] for f in dataclasses.fields(AzureSettings)}
    for param, variable in overridden:
        assert param in declared, f"deploy.sh overrides {param}, main.bicep has no such param"
        assert variable in env_names, f"deploy.sh reads {variable}, AzureSettings has no such one"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_deploy_script_with_a_stub_az(tmp_path: Path) -> None:
    """The commands deploy.sh runs, against an ``az`` that only records and answers."""
    log = tmp_path / "az.log"
    stub = tmp_path / "az"
    stub.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> "{log}"\n'
        'case "$*" in\n'
        '  "account show --query id --output tsv") echo sub-id ;;\n'
        '  "account show --query user.type --output tsv") echo user ;;\n'
        '  "ad signed-in-user show --query id --output tsv") echo user-oid ;;\n'
        '  "group exists"*) echo true ;;\n'
        '  "provider show"*) echo Registered ;;\n'
        '  "deployment group show"*) printf "%s\\n" sub-id rg-x mlw-x westeurope stx cpu gpu ;;\n'
        "esac\n"
    )
    stub.chmod(0o755)
    env = {
        "PATH": f"{tmp_path}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AZURE_RESOURCE_GROUP": "rg-x",
        "AML_WORKSPACE_NAME": "mlw-x",
        "AML_GPU_MAX_NODES": "2",
    }
    result = subprocess.run(["bash", str(DEPLOY)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    create = next(c for c in calls if c.startswith("deployment group create"))
    assert f"--template-file {BICEP}" in create and f"@{PARAMETERS}" in create
    assert "workspaceName=mlw-x" in create and "gpuMaxNodes=2" in create
    assert "operatorPrincipalId=user-oid" in create
    assert any(c.startswith("group create --name rg-x") for c in calls)
    assert "AML_WORKSPACE_NAME=mlw-x" in result.stdout
    assert "AZURE_SUBSCRIPTION_ID=sub-id" in result.stdout

    log.unlink()
    result = subprocess.run(
        ["bash", str(DEPLOY), "--what-if"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert any(c.startswith("deployment group what-if") for c in calls)
    assert not any(c.startswith(("deployment group create", "group create")) for c in calls)


# ----------------------------------------------------------------------------- .amlignore


def _ignore_patterns() -> list[str]:
    lines = AMLIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Minimal gitignore matching (the subset .amlignore uses): last matching pattern wins."""
    parts = path.split("/")
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        anchored = pattern.startswith("/")
        pattern = pattern.strip("/")
        if anchored or "/" in pattern:  # relative to the root: match a leading part of path
            hit = any(fnmatchcase("/".join(parts[:n]), pattern) for n in range(1, len(parts) + 1))
        else:  # anywhere: match any one name in path
            hit = any(fnmatchcase(part, pattern) for part in parts)
        if hit:
            ignored = not negate
    return ignored


KEPT = [
    "code/train.py",
    "code/videoanom/data/datastore.py",  # a package folder named data: must stay
    "ml_service/azure/master_step.py",
    "ml_service/util/env_variables.py",
    "environment_setup/conda.yml",
    "pyproject.toml",
]
DROPPED = [
    ".venv/bin/python",
    "node_modules/azurite/package.json",
    "data/datastore/cam1/train/a.png",
    ".videoanom/mlflow.db",
    ".git/HEAD",
    ".env",
    "bench/results/run.json",
    "tests/test_cli.py",
    "docs/benchmarks.md",
    "code/videoanom/__pycache__/cli.cpython-311.pyc",
    "model.keras",
    "mlruns/0/meta.yaml",
    "environment_setup/infra/main.bicep",
]


def test_amlignore_keeps_the_job_source_and_drops_the_bulk() -> None:
    patterns = _ignore_patterns()
    for path in KEPT:
        assert not _ignored(path, patterns), f".amlignore drops {path}, which jobs need"
    for path in DROPPED:
        assert _ignored(path, patterns), f".amlignore uploads {path}"
    assert not _ignored(".env.example", patterns)


def test_amlignore_with_pathspec_as_the_sdks_read_it() -> None:
    """Both SDKs match .amlignore with pathspec's gitwildmatch (installed with azureml-core)."""
    pathspec = pytest.importorskip("pathspec")
    matcher = pathspec.PathSpec.from_lines("gitwildmatch", AMLIGNORE.read_text().splitlines())
    for path in KEPT:
        assert not matcher.match_file(path), path
    for path in DROPPED:
        assert matcher.match_file(path), path
