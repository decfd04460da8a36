"""Measure PredNet training and prediction throughput on this machine.

Usage::

    python bench/bench_prednet.py [--quick] [--output docs/benchmarks.md]

Times ``train_on_batch`` and ``predict_on_batch`` on random frames after warm-up for the
project's default small PredNet and the paper-size one, converts frames/s to GFLOP/s with
the analytical :func:`videoanom.prednet.flops_per_frame`, and compares them with this
machine's float32 matrix-multiply rate measured in the same run (before and after the
models, because shared cloud CPUs change speed from minute to minute).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from videoanom.prednet import PredNet, flops_per_frame

logger = logging.getLogger("bench_prednet")

# Forward + backward of a conv net costs about 3 forward passes (grad wrt inputs and weights).
TRAIN_FLOP_FACTOR = 3.0
NT = 10
BATCH = 4


@dataclass(frozen=True)
class Case:
    name: str
    frame_shape: tuple[int, int, int]
    stack_sizes: tuple[int, ...]
    train_steps: int
    predict_steps: int


@dataclass
class Result:
    case: Case
    gflop_per_frame: float
    train_fps: list[float]  # one sample per timed step
    predict_fps: list[float]


def cases(quick: bool) -> list[Case]:
    """Step counts sized so a full run stays near 3 minutes on 2 cores."""
    small = (4, 6) if quick else (12, 20)
    paper = (1, 2) if quick else (3, 4)
    return [
        Case("small (64x80x1, 1/16/32/64)", (64, 80, 1), (1, 16, 32, 64), *small),
        Case("paper (128x160x3, 3/48/96/192)", (128, 160, 3), (3, 48, 96, 192), *paper),
    ]


def matmul_samples(reps: int, size: int = 2048) -> list[float]:
    """float32 ``tf.matmul`` GFLOP/s, one sample per call, after warm-up."""
    a = tf.random.uniform((size, size))
    b = tf.random.uniform((size, size))
    fn = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    for _ in range(2):
        fn(a, b).numpy()
    return [2 * size**3 / t / 1e9 for t in _step_times(lambda: fn(a, b).numpy(), reps)]


def _step_times(fn: Callable[[], object], steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def run_case(case: Case, warmup: int) -> Result:
    """Median per-step throughput: robust to the other tenants of a shared CPU."""
    keras.utils.set_random_seed(0)
    model = PredNet(frame_shape=case.frame_shape, stack_sizes=case.stack_sizes, output_mode="error")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    frames = np.random.default_rng(0).random((BATCH, NT, *case.frame_shape), dtype=np.float32)
    frames_per_step = BATCH * NT

    logger.info("%s: tracing and warm-up", case.name)
    _step_times(lambda: model.predict_on_batch(frames), 1 + warmup)
    predict = _step_times(lambda: model.predict_on_batch(frames), case.predict_steps)
    _step_times(lambda: model.train_on_batch(frames), 1 + warmup)
    train = _step_times(lambda: model.train_on_batch(frames), case.train_steps)
    result = Result(
        case=case,
        gflop_per_frame=flops_per_frame(model) / 1e9,
        train_fps=[frames_per_step / t for t in train],
        predict_fps=[frames_per_step / t for t in predict],
    )
    logger.info(
        "%s: train %.1f frames/s, predict %.1f frames/s (medians)",
        case.name,
        statistics.median(result.train_fps),
        statistics.median(result.predict_fps),
    )
    return result


def _fmt_range(values: list[float]) -> str:
    digits = 1 if statistics.median(values) < 100 else 0
    med, lo, hi = statistics.median(values), min(values), max(values)
    return f"{med:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def markdown_table(results: list[Result], peak: float) -> str:
    lines = [
        "| model | GFLOP/frame | train frames/s | train GFLOP/s | train % of matmul "
        "| predict frames/s | predict GFLOP/s | predict % of matmul |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        train_fps = statistics.median(r.train_fps)
        predict_fps = statistics.median(r.predict_fps)
        train_gflops = TRAIN_FLOP_FACTOR * r.gflop_per_frame * train_fps
        predict_gflops = r.gflop_per_frame * predict_fps
        lines.append(
            f"| {r.case.name} | {r.gflop_per_frame:.2f} | {_fmt_range(r.train_fps)} "
            f"| {train_gflops:.0f} | {100 * train_gflops / peak:.0f}% "
            f"| {_fmt_range(r.predict_fps)} | {predict_gflops:.0f} "
            f"| {100 * predict_gflops / peak:.0f}% |"
        )
    return "\n".join(lines)


def machine_info() -> dict[str, str]:
    cpu_model = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    ram = "unknown"
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "CPU cores (nproc)": str(cores),
        "CPU model": cpu_model,
        "RAM": ram,
        "Python": platform.python_version(),
        "TensorFlow": tf.__version__,
        "Keras": keras.__version__,
        "Date (UTC)": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
    }


def render_doc(
    command: str, info: dict[str, str], table: str, matmul: list[float], quick: bool
) -> str:
    machine = "\n".join(f"- {k}: {v}" for k, v in info.items())
    return f"""# PredNet benchmarks

Throughput of `videoanom.prednet.PredNet` (Keras 3, TensorFlow backend, CPU, no XLA) for the
project's default small model and the paper-size one (Lotter et al. 2016, KITTI settings),
both with `nt={NT}` frames per sequence and batch {BATCH}, on random frames. Generated by
`bench/bench_prednet.py`{" in `--quick` mode (fewer steps, noisier)" if quick else ""}.

Command:

```
{command}
```

Machine:

{machine}

{table}

float32 matrix multiply (`tf.matmul`, 2048 x 2048), sampled before, between and after the
models in the same run: median {statistics.median(matmul):.0f} GFLOP/s, range
{min(matmul):.0f}-{max(matmul):.0f} GFLOP/s. The "% of matmul" columns divide by the median.

How to read it:

- Frames/s are the median over timed steps (range in parentheses); one step is `batch x nt`
  = {BATCH * NT} frames through `train_on_batch` or `predict_on_batch`, after tracing and
  warm-up calls.
- GFLOP/frame is `flops_per_frame`: 2 x multiply-adds of every convolution in one time step
  (ConvLSTM gates, Ahat and A convolutions); elementwise work is not counted. Training
  GFLOP/s counts {TRAIN_FLOP_FACTOR:.0f} x the forward FLOPs (forward and backward pass).
- Convolutions through oneDNN can run faster than this matmul, so "% of matmul" is a
  reference point, not a hard ceiling (above 100% is possible).
- On shared cloud CPUs the same kernel runs at rates up to 2x apart from minute to minute
  (see the matmul range): compare rows from one run, not numbers across runs or machines.

Detection quality (frame-level ROC AUC of the reported score, the unsupervised score and the
frame-difference baseline on demo seeds the project never trains on, and on a UCSD-layout
location) is measured by `make bench-detection` into [detection.md](detection.md).
{detection_summary()}
End-to-end scoring throughput and memory follow below when `make bench` ran both parts.
"""


DETECTION_DOC = Path(__file__).resolve().parents[1] / "docs" / "detection.md"


def detection_summary(path: Path = DETECTION_DOC) -> str:
    """The summary table of the last detection evaluation, quoted here so one page has both."""
    if not path.is_file():
        return ""
    text = path.read_text()
    start = text.find("## Summary")
    if start < 0:
        return ""
    end = text.find("\n## ", start + 1)
    section = text[start : end if end > 0 else None].strip()
    return (
        "\n" + section.replace("## Summary", "### Detection summary (from detection.md)", 1) + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed steps (smoke test)")
    parser.add_argument(
        "--output", type=Path, default=Path("docs/benchmarks.md"), help="Markdown report to write"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    command = "python bench/bench_prednet.py" + (" --quick" if args.quick else "")
    if args.output != Path("docs/benchmarks.md"):
        command += f" --output {args.output}"
    start = time.perf_counter()
    reps = 4 if args.quick else 8
    matmul = matmul_samples(reps)
    results = []
    for case in cases(args.quick):
        results.append(run_case(case, warmup=1))
        matmul += matmul_samples(reps)
    logger.info(
        "matmul median %.0f GFLOP/s (%.0f-%.0f); total %.0f s",
        statistics.median(matmul),
        min(matmul),
        max(matmul),
        time.perf_counter() - start,
    )

    table = markdown_table(results, statistics.median(matmul))
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render_doc(command, machine_info(), table, matmul, args.quick))
    logger.info("wrote %s", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
