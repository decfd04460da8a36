"""The pipeline definition and the local runner, on a tiny identity pipeline."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ml_service.pipelines.definition import Pipeline, Step, training_pipeline
from ml_service.pipelines.local_runner import LocalRunner, StepFailed

SCRIPT = """
import argparse, pathlib, sys
p = argparse.ArgumentParser()
for flag in sys.argv[1::2]:
    p.add_argument(flag)
a = vars(p.parse_args())
log = pathlib.Path(a.pop("log"))
log.open("a").write("{name}\\n")
if pathlib.Path(a.get("fail_flag") or "/nonexistent").exists():
    print("error: told to fail", file=sys.stderr)
    sys.exit(2)
text = "{name}(" + ",".join(pathlib.Path(a[i], "value").read_text() for i in {inputs}) + ")"
for o in {outputs}:
    pathlib.Path(a[o], "value").write_text(text)
"""


def make_step(
    code: Path, name: str, inputs: tuple = (), outputs: tuple = (), fail: bool = False
) -> Step:
    (code / f"{name}.py").write_text(
        SCRIPT.format(name=name, inputs=list(inputs), outputs=list(outputs))
    )
    params = ("log", "fail_flag") if fail else ("log",)
    return Step(name, f"{name}.py", inputs=inputs, outputs=outputs, params=params)


@pytest.fixture
def fan_out_fan_in(tmp_path: Path) -> tuple[Pipeline, Path]:
    code = tmp_path / "code"
    code.mkdir()
    steps = (
        make_step(code, "join", ("left", "right"), ("joined",), fail=True),
        make_step(code, "source", (), ("raw",)),
        make_step(code, "left", ("raw",), ("left",)),
        make_step(code, "right", ("raw",), ("right",)),
    )
    return Pipeline("tiny", steps), code


def test_order_comes_from_data_dependencies(fan_out_fan_in) -> None:
    pipeline, _ = fan_out_fan_in
    order = [s.name for s in pipeline.ordered()]
    assert order[0] == "source" and order[-1] == "join"
    assert pipeline.external_inputs() == set()


def test_training_pipeline_graph() -> None:
    pipeline = training_pipeline()
    assert [s.name for s in pipeline.ordered()] == [
        "data_prep",
        "train",
        "register_prednet",
        "batch_scoring",
        "train_classifier",
        "register_classifier",
    ]
    assert pipeline.external_inputs() == set()
    assert {"datastore", "location", "trials", "max_epochs"} <= pipeline.parameters()
    for step in pipeline.steps:
        assert (Path(__file__).parents[1] / "code" / step.script).is_file()


def test_arguments_use_dashed_flags() -> None:
    step = Step("s", "s.py", inputs=("in_data",), outputs=("out_data",), params=("max_epochs",))
    args = step.arguments({"in_data": Path("/a"), "out_data": Path("/b")}, {"max_epochs": 3})
    assert args == ["--in-data", "/a", "--out-data", "/b", "--max-epochs", "3"]


def test_missing_parameters_are_reported_before_running(fan_out_fan_in, tmp_path: Path) -> None:
    pipeline, code = fan_out_fan_in
    with pytest.raises(ValueError, match="missing parameters: fail_flag, log"):
        LocalRunner(tmp_path / "home", code_dir=code).run(pipeline, {}, group="g")


class TestRunnerResumesAfterCrash:
    def test_failed_step_keeps_finished_ones_and_resumes(
        self, fan_out_fan_in, tmp_path: Path
    ) -> None:
        pipeline, code = fan_out_fan_in
        log, flag = tmp_path / "calls.log", tmp_path / "fail"
        flag.write_text("1")
        params = {"log": str(log), "fail_flag": str(flag)}
        runner = LocalRunner(tmp_path / "home", python=sys.executable, code_dir=code)
        with pytest.raises(StepFailed, match=r"step join failed .*: told to fail") as info:
            runner.run(pipeline, params, group="g")
        assert info.value.log.is_file()
        assert sorted(log.read_text().split()) == ["join", "left", "right", "source"]

        flag.unlink()
        log.unlink()
        run = runner.run(pipeline, params, group="g")
        assert log.read_text().split() == ["join"], "finished steps must not run again"
        assert (
            run.outputs["joined"] / "value"
        ).read_text() == "join(left(source()),right(source()))"
        assert [s.reused for s in run.steps] == [True, True, True, False]

    def test_changed_parameter_or_code_reruns(self, fan_out_fan_in, tmp_path: Path) -> None:
        pipeline, code = fan_out_fan_in
        log = tmp_path / "calls.log"
        params = {"log": str(log), "fail_flag": ""}
        LocalRunner(tmp_path / "home", code_dir=code).run(pipeline, params, group="g")
        log.unlink()
        LocalRunner(tmp_path / "home", code_dir=code).run(
            pipeline, params, group="g", salts={"source": "data changed"}
        )
        assert sorted(log.read_text().split()) == ["join", "left", "right", "source"]
        log.unlink()
        (code / "left.py").write_text((code / "left.py").read_text() + "\n# edited\n")
        LocalRunner(tmp_path / "home", code_dir=code).run(
            pipeline, params, group="g", salts={"source": "data changed"}
        )
        assert sorted(log.read_text().split()) == ["join", "left", "right", "source"]

    def test_half_written_output_is_never_reused(self, fan_out_fan_in, tmp_path: Path) -> None:
        pipeline, code = fan_out_fan_in
        log = tmp_path / "calls.log"
        params = {"log": str(log), "fail_flag": ""}
        run = LocalRunner(tmp_path / "home", code_dir=code).run(pipeline, params, group="g")
        marker = run.steps[-1].output_dir / "_SUCCESS"
        marker.unlink()  # as if killed before the step finished
        log.unlink()
        LocalRunner(tmp_path / "home", code_dir=code).run(pipeline, params, group="g")
        assert log.read_text().split() == ["join"]
