"""Per-frame anomaly features from a trained PredNet, computed in bounded memory.

:func:`extract_features` streams the frames of one clip through the model in windows of
``window`` frames. Consecutive windows overlap by ``warmup`` frames: those leading frames
only rebuild the recurrent state (their predictions are dropped), except in a clip's first
window, where nothing came before. Windows are batched ``batch_size`` at a time through
one traced ``tf.function`` of fixed shape (short windows are padded by repeating the last
frame; PredNet is causal, so padding never changes the kept predictions).

For every frame it keeps a row of raw features (global statistics of the squared pixel
prediction error, PSNR, the largest 8x8-cell mean error, the PredNet error-unit activity of
every layer, and the frame difference as a baseline) plus per-frame cell maps of the
prediction error and of the frame difference, which the detector normalises per cell with
statistics of normal video, and a per-cell histogram of motion directions: dense optical flow
(Farneback) from the previous grey frame, binned into ``FLOW_BINS`` directions and weighted by
the flow magnitude (pixels moving less than ``FLOW_NOISE`` px/frame are left out). The flow
and the other features of one batch of windows are computed in a worker thread while the
model runs the next batch, on the frames already decoded.
Frame 1 has no prediction and copies frame 2's features.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

PERCENTILES = (50, 75, 90, 95, 99)
ID_COLUMNS = ("clip", "frame", "label", "kind")
CELL_MAPS = ("pred_error", "frame_diff", "flow_dir")
FLOW_BINS = 8  # motion directions per cell (45 degrees each; bin 0 points along -x)
FLOW_NOISE = 0.05  # px/frame: slower pixels do not count towards the direction histogram
# cv2.calcOpticalFlowFarneback(pyr_scale, levels, winsize, iterations, poly_n, poly_sigma):
# two pyramid levels, 9x9 window, one iteration (three cost 1.7x the time for the same AUCs)
FARNEBACK = (0.5, 2, 9, 1, 5, 1.1)
TABLE_FILE = "features.csv"
CELLS_FILE = "cells.npz"
META_FILE = "features.json"


@dataclass
class FeatureSet:
    """Per-frame features of one or more clips: a table and aligned cell maps."""

    table: pd.DataFrame
    cells: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, arr in self.cells.items():
            if arr.shape[0] != len(self.table):
                raise ValueError(
                    f"cell map {name!r} has {arr.shape[0]} rows, the table has {len(self.table)}"
                )

    def __len__(self) -> int:
        return len(self.table)

    @property
    def feature_columns(self) -> list[str]:
        """The raw feature columns (everything but clip, frame, label, kind)."""
        return [c for c in self.table.columns if c not in ID_COLUMNS]

    @staticmethod
    def concat(sets: list[FeatureSet]) -> FeatureSet:
        sets = [s for s in sets if s is not None]
        if not sets:
            return FeatureSet(pd.DataFrame(columns=["clip", "frame"]), {})
        table = pd.concat([s.table for s in sets], ignore_index=True)
        names = set(sets[0].cells)
        for s in sets[1:]:
            names &= set(s.cells)
        cells = {n: np.concatenate([s.cells[n] for s in sets], axis=0) for n in sorted(names)}
        if "label" in table.columns:
            table["label"] = table["label"].fillna(-1).astype(int)
        if "kind" in table.columns:
            table["kind"] = table["kind"].fillna("").astype(str)
        return FeatureSet(table, cells)

    def subset(self, rows: np.ndarray) -> FeatureSet:
        """The rows selected by a boolean mask or an index array, in that order."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        return FeatureSet(
            self.table.iloc[rows].reset_index(drop=True),
            {k: v[rows] for k, v in self.cells.items()},
        )

    def save(self, folder: Path) -> None:
        """Write ``features.csv``, ``cells.npz`` (no pickled objects) and ``features.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.table.to_csv(folder / TABLE_FILE, index=False, float_format="%.8g")
        np.savez_compressed(
            folder / CELLS_FILE, **{k: np.asarray(v) for k, v in self.cells.items()}
        )
        meta = {"columns": list(self.table.columns), "rows": len(self.table)}
        (folder / META_FILE).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, folder: Path) -> FeatureSet:
        folder = Path(folder)
        table = pd.read_csv(
            folder / TABLE_FILE, dtype={"clip": str, "kind": str}, keep_default_na=False
        )
        for col in table.columns:
            if col not in ("clip", "kind"):
                table[col] = pd.to_numeric(table[col])
        with np.load(folder / CELLS_FILE, allow_pickle=False) as data:
            cells = {k: data[k] for k in data.files}
        return cls(table, cells)


@dataclass(frozen=True)
class ExtractConfig:
    """How frames are streamed through the model.

    ``window`` frames per PredNet call, of which the first ``warmup`` (except at the start
    of a clip) only rebuild context; the overhead is ``warmup / (window - warmup)``.
    """

    window: int = 40
    warmup: int = 4
    batch_size: int = 8
    cell: int = 8

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ValueError(f"window must be >= 2, got {self.window}")
        if not 1 <= self.warmup < self.window - 1:
            raise ValueError(f"warmup must be in [1, window - 1), got {self.warmup}")
        if self.batch_size < 1 or self.cell < 1:
            raise ValueError("batch_size and cell must be positive")


# ------------------------------------------------------------------------------ model call
_RUNNERS: dict[tuple[int, int], Any] = {}
_SCORING_COPIES: dict[int, tuple[Any, Any]] = {}


def _runner(model: Any, window: int) -> Any:
    """A forward function returning (prediction, errors), traced once per model and window.

    The batch dimension is left dynamic so a clip's last, smaller batch reuses the same
    graph: tracing the unrolled recurrence costs seconds, more than scoring a short clip.
    """
    import tensorflow as tf

    from videoanom.prednet.model import PredNet, with_output_mode

    key = (id(model), window)
    cached = _RUNNERS.get(key)
    if cached is not None and cached[0] is model:
        return cached[1]
    scoring = _SCORING_COPIES.get(id(model), (None, None))
    if scoring[0] is not model:
        copy = model
        if isinstance(model, PredNet) and model.output_mode != "all":
            copy = with_output_mode(model, "all")
        _SCORING_COPIES[id(model)] = scoring = (model, copy)
    scoring = scoring[1]
    shape = (None, window, *tuple(int(v) for v in model.frame_shape))

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.uint8)], reduce_retracing=True)
    def run(frames: Any) -> tuple[Any, Any]:
        out = scoring(tf.cast(frames, tf.float32) / 255.0, training=False)
        return out["prediction"], out["errors"]

    if len(_RUNNERS) > 16:
        _RUNNERS.clear()
        _SCORING_COPIES.clear()
    _RUNNERS[key] = (model, run)
    return run


# ------------------------------------------------------------------------------ windowing
def _windows(
    frames: Iterable[np.ndarray], window: int, warmup: int
) -> Iterator[tuple[np.ndarray, int, int]]:
    """Yield (window frames uint8 (n, H, W, C), index of its first frame, first kept offset).

    The first window keeps every prediction (offset 0); later ones start ``warmup``
    frames before their first new frame. Frames are pulled from the iterator lazily.
    """
    it = iter(frames)
    buf: list[np.ndarray] = []
    start = 0  # clip index of buf[0]
    first = True
    for frame in it:
        buf.append(np.asarray(frame))
        if len(buf) == window:
            yield np.stack(buf), start, 0 if first else warmup
            first = False
            keep = buf[-warmup:] if warmup else []
            start += len(buf) - len(keep)
            buf = keep
    if buf and (first or len(buf) > warmup):
        yield np.stack(buf), start, 0 if first else warmup


# ------------------------------------------------------------------------------ features
def _cell_mean(maps: np.ndarray, cell: int) -> np.ndarray:
    """(N, H, W) -> (N, ceil(H/cell), ceil(W/cell)) mean over cell x cell blocks."""
    n, h, w = maps.shape
    gh, gw = -(-h // cell), -(-w // cell)
    if gh * cell != h or gw * cell != w:
        maps = np.pad(maps, ((0, 0), (0, gh * cell - h), (0, gw * cell - w)), mode="edge")
    return maps.reshape(n, gh, cell, gw, cell).mean(axis=(2, 4), dtype=np.float32)


def _grey(frames: np.ndarray) -> np.ndarray:
    """(n, H, W, C) uint8 -> (n, H, W) uint8 grey (ITU-R 601 luma for 3 channels)."""
    if frames.shape[-1] == 1:
        return frames[..., 0]
    if frames.shape[-1] == 3:
        weights = np.array([0.299, 0.587, 0.114], np.float32)
        return np.clip(frames.astype(np.float32) @ weights + 0.5, 0, 255).astype(np.uint8)
    return np.clip(frames.astype(np.float32).mean(axis=-1) + 0.5, 0, 255).astype(np.uint8)


def _flow_directions(frames: np.ndarray, cell: int) -> np.ndarray:
    """Per-cell motion-direction histograms of frames[1:] (flow from the frame before).

    frames: (n + 1, H, W, C) uint8. Returns (n, ceil(H/cell), ceil(W/cell), FLOW_BINS)
    float32: per cell and direction, the sum of the flow magnitude (px/frame) of the pixels
    moving that way, divided by the cell's pixel count.
    """
    import cv2

    grey = _grey(frames)
    n = grey.shape[0] - 1
    h, w = grey.shape[1:]
    gh, gw = -(-h // cell), -(-w // cell)
    if n <= 0:
        return np.zeros((0, gh, gw, FLOW_BINS), np.float32)
    flow = np.empty((n, h, w, 2), np.float32)
    for i in range(n):
        flow[i] = cv2.calcOpticalFlowFarneback(grey[i], grey[i + 1], None, *FARNEBACK, 0)
    mag = np.hypot(flow[..., 0], flow[..., 1])
    angle = np.arctan2(flow[..., 1], flow[..., 0])
    bins = np.floor((angle + np.pi) * (FLOW_BINS / (2 * np.pi)) + 0.5).astype(np.int64) % FLOW_BINS
    weight = np.where(mag > FLOW_NOISE, mag, 0.0).astype(np.float32)
    rows = np.minimum(np.arange(h) // cell, gh - 1)
    cols = np.minimum(np.arange(w) // cell, gw - 1)
    index = (rows[:, None] * gw + cols[None, :]) * FLOW_BINS  # (H, W)
    index = index[None] + bins + (np.arange(n) * gh * gw * FLOW_BINS)[:, None, None]
    hist = np.bincount(index.ravel(), weights=weight.ravel(), minlength=n * gh * gw * FLOW_BINS)
    counts = np.bincount(rows, minlength=gh)[:, None] * np.bincount(cols, minlength=gw)[None, :]
    hist = hist.reshape(n, gh, gw, FLOW_BINS) / counts[None, :, :, None]
    return hist.astype(np.float32)


_FLOW_POOL: ThreadPoolExecutor | None = None


def _flow_pool() -> ThreadPoolExecutor:
    global _FLOW_POOL
    if _FLOW_POOL is None:
        _FLOW_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="videoanom-flow")
    return _FLOW_POOL


def _frame_features(
    actual: np.ndarray,
    predicted: np.ndarray,
    previous: np.ndarray,
    errors: np.ndarray,
    cell: int,
    flow_dir: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Features of n frames: actual/previous uint8 (n, H, W, C), predicted float (n, H, W, C).

    ``flow_dir`` is :func:`_flow_directions` of the same frames (computed here when None).
    """
    x = actual.astype(np.float32) / 255.0
    sq = np.square(predicted - x).mean(axis=-1)  # (n, H, W)
    diff = np.abs(x - previous.astype(np.float32) / 255.0).mean(axis=-1)
    n = sq.shape[0]
    flat = sq.reshape(n, -1)
    mse = flat.mean(axis=1)
    cols: dict[str, np.ndarray] = {
        "err_mean": mse,
        "err_std": flat.std(axis=1),
    }
    ordered = np.sort(flat, axis=1)  # one sort serves every percentile (numpy's "linear")
    for p in PERCENTILES:
        pos = p / 100.0 * (ordered.shape[1] - 1)
        lo = int(np.floor(pos))
        hi = min(lo + 1, ordered.shape[1] - 1)
        cols[f"err_p{p}"] = ordered[:, lo] + (pos - lo) * (ordered[:, hi] - ordered[:, lo])
    cols["psnr"] = 10.0 * np.log10(1.0 / np.maximum(mse, 1e-10))
    err_cells = _cell_mean(sq, cell)
    diff_cells = _cell_mean(diff, cell)
    cols["err_cell_max"] = err_cells.reshape(n, -1).max(axis=1)
    for lvl in range(errors.shape[-1]):
        cols[f"layer{lvl}_err"] = errors[:, lvl]
    cols["frame_diff"] = diff.reshape(n, -1).mean(axis=1)
    cols["frame_diff_cell_max"] = diff_cells.reshape(n, -1).max(axis=1)
    if flow_dir is None:
        flow_dir = _flow_directions(np.concatenate([previous[:1], actual]), cell)
    cells = {"pred_error": err_cells, "frame_diff": diff_cells, "flow_dir": flow_dir}
    return {k: np.asarray(v, np.float32) for k, v in cols.items()}, cells


def extract_features(
    model: Any,
    frames: Iterable[np.ndarray],
    clip: str,
    config: ExtractConfig = ExtractConfig(),
    labels: np.ndarray | None = None,
    kind: str = "",
) -> FeatureSet:
    """Features of every frame of one clip (frames: (H, W, C) uint8 at the model's size).

    Memory is bounded by ``batch_size * window`` frames, whatever the clip length.
    ``labels`` (1/0/-1 per frame) and ``kind`` are copied into the table when given.
    """
    window, warmup, batch = config.window, config.warmup, config.batch_size
    pending: list[tuple[np.ndarray, int, int]] = []
    # Post-processing (optical flow, frame features) of one batch runs in a worker thread
    # while the model runs the next batch; at most two batches are in flight at once.
    in_flight: list[Future] = []
    parts: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = []

    def post_process(batch_windows, pred, errs):
        out = []
        for i, (w, start, offset) in enumerate(batch_windows):
            lo = 1 if start == 0 else offset  # frame 1 has no prediction
            if lo >= len(w):
                continue
            out.append(
                _frame_features(
                    w[lo:],
                    pred[i, lo : len(w)],
                    w[lo - 1 : len(w) - 1],
                    errs[i, lo : len(w)],
                    config.cell,
                    _flow_directions(w[lo - 1 :], config.cell),
                )
            )
        return out

    def flush() -> None:
        if not pending:
            return
        size = len(pending)
        run = _runner(model, window)
        stacked = np.empty((size, window, *pending[0][0].shape[1:]), np.uint8)
        for i in range(size):
            w = pending[i][0]
            stacked[i, : len(w)] = w
            stacked[i, len(w) :] = w[-1]  # causal model: padding never changes kept frames
        pred, errs = run(stacked)
        pred, errs = pred.numpy(), errs.numpy()
        if len(in_flight) >= 2:
            parts.extend(in_flight.pop(0).result())
        in_flight.append(_flow_pool().submit(post_process, list(pending), pred, errs))
        pending.clear()

    n_seen = 0
    for w, start, offset in _windows(frames, window, warmup):
        expected = w.shape[1:]
        frame_shape = tuple(int(v) for v in getattr(model, "frame_shape", expected))
        if tuple(expected) != frame_shape:
            raise ValueError(
                f"frames of clip {clip!r} are {tuple(expected)}, the model takes {frame_shape}"
            )
        if w.dtype != np.uint8:
            raise ValueError(f"frames must be uint8, got {w.dtype}")
        pending.append((w, start, offset))
        n_seen = start + len(w)
        if len(pending) == batch:
            flush()
    flush()
    for future in in_flight:
        parts.extend(future.result())

    n = n_seen
    if n == 0:
        raise ValueError(f"clip {clip!r} has no frames")
    if parts:
        cols = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
        cells = {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
        # frame 1 copies frame 2's features
        cols = {k: np.concatenate([v[:1], v]) for k, v in cols.items()}
        cells = {k: np.concatenate([v[:1], v]) for k, v in cells.items()}
    else:  # a single frame: nothing can be predicted
        logger.warning("clip %s has one frame: its features are zeros", clip)
        probe_cols, probe_cells = _single_frame_placeholder(model, config.cell)
        cols, cells = probe_cols, probe_cells
    if len(next(iter(cols.values()))) != n:
        raise RuntimeError(
            f"internal error: {len(next(iter(cols.values())))} feature rows for {n} frames"
        )

    table = pd.DataFrame(
        {"clip": np.full(n, str(clip), dtype=object), "frame": np.arange(1, n + 1)}
    )
    if labels is not None:
        labels = np.asarray(labels).astype(int)
        if labels.shape != (n,):
            raise ValueError(f"labels has shape {labels.shape}, the clip has {n} frames")
        table["label"] = labels
    table["kind"] = str(kind or "")
    for k, v in cols.items():
        table[k] = v.astype(np.float64)
    return FeatureSet(table, {k: v.astype(np.float32) for k, v in cells.items()})


def _single_frame_placeholder(model: Any, cell: int) -> tuple[dict, dict]:
    h, w, c = (int(v) for v in model.frame_shape)
    nb_layers = int(getattr(model, "nb_layers", 1))
    zeros = np.zeros((1, h, w, c), np.uint8)
    cols, cells = _frame_features(
        zeros, zeros.astype(np.float32), zeros, np.zeros((1, nb_layers), np.float32), cell
    )
    return {k: np.zeros_like(v) for k, v in cols.items()}, {
        k: np.zeros_like(v) for k, v in cells.items()
    }


def split_features(
    model: Any,
    split: Any,
    config: ExtractConfig = ExtractConfig(),
    kinds: dict[str, str] | None = None,
) -> FeatureSet:
    """Features of every clip of a prepared split (:class:`videoanom.data.dataset.SplitData`).

    ``kinds`` maps clip name to anomaly kind ("" or missing for none).
    """
    parts = []
    for name, rows in split.clip_slices():
        parts.append(
            extract_features(
                model,
                (split.frames[i] for i in range(rows.start, rows.stop)),
                name,
                config,
                labels=split.label[rows],
                kind=(kinds or {}).get(name, ""),
            )
        )
    return FeatureSet.concat(parts)


__all__ = [
    "CELL_MAPS",
    "FLOW_BINS",
    "ExtractConfig",
    "FeatureSet",
    "extract_features",
    "split_features",
]
