"""Per-frame anomaly features from a trained PredNet, computed in bounded memory.

:func:`extract_features` streams the frames of one clip through the model in bounded
memory. The clip is cut into streams of up to ``window`` frames; ``batch_size`` streams run
side by side through one traced ``tf.function`` of ``chunk`` time steps, each call continuing
from the recurrent state the call before left, so a prediction sees up to ``window`` frames
of context at the cost of a ``chunk``-step graph. Consecutive streams overlap by ``warmup``
frames that only rebuild the recurrent state (their predictions are dropped), except at the
clip's start, where nothing came before. Near the end of a clip the remaining frames are cut
into shorter streams when that needs fewer sequential calls. Streams shorter than a whole
number of chunks are padded by repeating their last frame (PredNet is causal: padding never
changes the kept predictions).

For every frame it keeps a row of raw features (global statistics of the squared pixel
prediction error, PSNR, the largest 8x8-cell mean error, the PredNet error-unit activity of
every layer, and the frame difference as a baseline) plus per-frame cell maps of the
prediction error and of the frame difference, which the detector normalises per cell with
statistics of normal video, and a per-cell histogram of motion directions: dense optical flow
(Farneback) from the previous grey frame, measured on every other frame (odd frames repeat
the even frame before: the flow is the costliest feature), binned into ``FLOW_BINS``
directions and weighted by the flow magnitude (pixels moving less than ``FLOW_NOISE``
px/frame are left out). The flow and the other features of one model call are computed in
a worker thread while the model runs the next call, on the frames already decoded.
Frame 1 has no prediction and copies frame 2's features.
"""

from __future__ import annotations

import functools
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

    Streams of up to ``window`` frames, ``batch_size`` of them side by side, ``chunk`` time
    steps per model call. Each stream but a clip's first starts with ``warmup`` frames that
    only rebuild context: the overhead is ``warmup / (window - warmup)`` on long clips.
    """

    window: int = 120
    chunk: int = 40
    warmup: int = 4
    batch_size: int = 8
    cell: int = 8

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ValueError(f"window must be >= 2, got {self.window}")
        if not 1 <= self.warmup < self.window - 1:
            raise ValueError(f"warmup must be in [1, window - 1), got {self.warmup}")
        if self.chunk < 1 or self.batch_size < 1 or self.cell < 1:
            raise ValueError("chunk, batch_size and cell must be positive")

    @property
    def steps(self) -> int:
        """Time steps of one model call: ``chunk``, or ``window`` when that is shorter."""
        return min(self.chunk, self.window)


# ------------------------------------------------------------------------------ model call
_RUNNERS: dict[tuple[int, int], Any] = {}
_SCORING_COPIES: dict[int, tuple[Any, Any]] = {}


def _runner(model: Any, steps: int) -> Any:
    """``run(frames, state) -> (prediction, errors, state)`` for ``steps`` time steps, traced
    once per model and length.

    The batch dimension is left dynamic so a clip's last, smaller batch reuses the same
    graph: tracing the unrolled recurrence costs seconds, more than scoring a short clip.
    """
    import tensorflow as tf

    from videoanom.prednet.model import PredNet, with_output_mode

    key = (id(model), steps)
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
    shape = (None, steps, *tuple(int(v) for v in model.frame_shape))
    state_spec = [tf.TensorSpec((None, *s), tf.float32) for s in scoring.state_shapes()]

    @tf.function(
        input_signature=[tf.TensorSpec(shape, tf.uint8), state_spec], reduce_retracing=True
    )
    def run(frames: Any, state: Any) -> tuple[Any, Any, Any]:
        return scoring.run_with_state(tf.cast(frames, tf.float32) / 255.0, state)

    if len(_RUNNERS) > 16:
        _RUNNERS.clear()
        _SCORING_COPIES.clear()
    _RUNNERS[key] = (model, run)
    return run


# ------------------------------------------------------------------------------ windowing
Stream = tuple[np.ndarray, int, int]  # (frames (n, H, W, C), clip index of the first, first kept)


def _cut(buf: list[np.ndarray], start: int, first: bool, length: int, warmup: int) -> list[Stream]:
    """Cut ``buf`` (clip frames from index ``start``) into streams of at most ``length``
    frames overlapping by ``warmup``; a clip's first stream keeps every prediction."""
    streams, begin = [], 0
    while True:
        end = min(begin + length, len(buf))
        streams.append((np.stack(buf[begin:end]), start + begin, 0 if first else warmup))
        if end == len(buf):
            return streams
        first = False
        begin = end - warmup


def _stream_batches(frames: Iterable[np.ndarray], config: ExtractConfig) -> Iterator[list[Stream]]:
    """Batches of at most ``batch_size`` streams covering the clip in order.

    Frames are pulled lazily: at most one batch of streams is held at a time. While the clip
    goes on, every stream is ``window`` long; at its end the rest is cut into the shortest
    streams (a whole number of model calls long) that still fit one batch.
    """
    window, warmup, batch = config.window, config.warmup, config.batch_size
    full = window + (batch - 1) * (window - warmup)  # frames of one batch of full streams
    it = iter(frames)
    buf: list[np.ndarray] = []
    start, first = 0, True
    for frame in it:
        buf.append(np.asarray(frame))
        if len(buf) == full:
            streams = _cut(buf, start, first, window, warmup)
            yield streams
            tail = len(buf) - warmup
            start, first, buf = start + tail, False, buf[tail:]
    if not buf or (not first and len(buf) <= warmup):
        return  # nothing new after the last batch
    steps = config.steps
    for calls in range(1, -(-window // steps) + 1):
        length = min(calls * steps, window)
        if length <= warmup:
            continue  # such streams would not advance
        streams = _cut(buf, start, first, length, warmup)
        if len(streams) <= batch:
            yield streams
            return


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
    grey = _grey(frames)
    pairs = [(i, i + 1) for i in range(grey.shape[0] - 1)]
    return _direction_histograms(_flows(grey, pairs), cell)


def _motion_every_other_frame(
    frames: np.ndarray, start: int, lo: int, hi: int, cell: int
) -> np.ndarray:
    """Direction histograms of frames[lo:hi] of a stream whose frame 0 is clip frame ``start``.

    Dense optical flow is the costliest feature after the PredNet itself, so it is measured
    on every other frame only: clip frame 2k (and frame 1) gets the flow from the frame
    before it. Rows of the other odd frames are NaN here; :func:`_fill_odd_motion` copies
    the even frame before into them once the clip is assembled, so stream and chunk
    boundaries never change the result. Needs ``frames[lo - 1]``.
    """
    gh, gw = -(-frames.shape[1] // cell), -(-frames.shape[2] // cell)
    out = np.full((hi - lo, gh, gw, FLOW_BINS), np.nan, np.float32)
    rows = [i for i in range(lo, hi) if (start + i) % 2 == 0 or start + i == 1]
    if not rows:
        return out
    if rows[0] < 1:
        raise ValueError(f"motion of clip frame {start + rows[0]} needs the frame before")
    first = rows[0] - 1
    grey = _grey(frames[first:hi])
    pairs = [(i - first - 1, i - first) for i in rows]
    out[np.asarray(rows) - lo] = _direction_histograms(_flows(grey, pairs), cell)
    return out


def _fill_odd_motion(flow_dir: np.ndarray) -> np.ndarray:
    """Odd clip frames from 3 on repeat the motion of the even frame before them."""
    flow_dir[3::2] = flow_dir[2 : len(flow_dir) - 1 : 2]
    return flow_dir


def _flows(grey: np.ndarray, pairs: list[tuple[int, int]]) -> np.ndarray:
    """(len(pairs), H, W, 2) float32 Farneback flow from grey[a] to grey[b] of each pair."""
    import cv2

    flow = np.empty((len(pairs), *grey.shape[1:], 2), np.float32)
    for k, (a, b) in enumerate(pairs):
        flow[k] = cv2.calcOpticalFlowFarneback(grey[a], grey[b], None, *FARNEBACK, 0)
    return flow


def _direction_histograms(flow: np.ndarray, cell: int) -> np.ndarray:
    """(n, H, W, 2) flow -> (n, ceil(H/cell), ceil(W/cell), FLOW_BINS) magnitude-weighted
    direction histograms, divided by each cell's pixel count."""
    n, h, w = flow.shape[:3]
    gh, gw = -(-h // cell), -(-w // cell)
    if n == 0:
        return np.zeros((0, gh, gw, FLOW_BINS), np.float32)
    fx, fy = flow[..., 0], flow[..., 1]
    mag = np.sqrt(fx * fx + fy * fy)
    # direction bin of each pixel, then its flat (frame, cell, bin) index for one bincount
    index = (np.arctan2(fy, fx) + np.float32(np.pi)) * np.float32(FLOW_BINS / (2 * np.pi))
    index = (index + np.float32(0.5)).astype(np.int32)
    index %= FLOW_BINS
    base, counts = _cell_index(n, h, w, cell)
    index += base
    weight = mag * (mag > FLOW_NOISE)
    hist = np.bincount(index.ravel(), weights=weight.ravel(), minlength=n * gh * gw * FLOW_BINS)
    hist = hist.reshape(n, gh, gw, FLOW_BINS) / counts[None, :, :, None]
    return hist.astype(np.float32)


def _cell_index(n: int, h: int, w: int, cell: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, h, w) int32: each pixel's (frame, cell) offset into the flat histogram, and the
    (ceil(h/cell), ceil(w/cell)) pixel count of every cell; computed once per size."""
    base, counts = _cell_index_of(max(64, 1 << (n - 1).bit_length()), h, w, cell)
    return base[:n], counts


@functools.lru_cache(maxsize=8)
def _cell_index_of(frames: int, h: int, w: int, cell: int) -> tuple[np.ndarray, np.ndarray]:
    gh, gw = -(-h // cell), -(-w // cell)
    rows, cols = np.arange(h) // cell, np.arange(w) // cell
    pixel = (rows[:, None] * gw + cols[None, :]) * FLOW_BINS
    frame = np.arange(frames) * (gh * gw * FLOW_BINS)
    base = (frame[:, None, None] + pixel[None]).astype(np.int32)
    counts = np.bincount(rows, minlength=gh)[:, None] * np.bincount(cols, minlength=gw)[None, :]
    base.setflags(write=False)
    counts.setflags(write=False)
    return base, counts


_FLOW_POOL: ThreadPoolExecutor | None = None


def _flow_pool() -> ThreadPoolExecutor:
    global _FLOW_POOL
    if _FLOW_POOL is None:
        _FLOW_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="videoanom-flow")
    return _FLOW_POOL


def _channel_mean(maps: np.ndarray) -> np.ndarray:
    """(n, H, W, C) -> (n, H, W); a view of the one channel of grey frames (no copy)."""
    return maps[..., 0] if maps.shape[-1] == 1 else maps.mean(axis=-1)


def _frame_features(
    actual: np.ndarray,
    predicted: np.ndarray,
    previous: np.ndarray,
    errors: np.ndarray,
    cell: int,
    flow_dir: np.ndarray,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Features of n frames: actual/previous uint8 (n, H, W, C), predicted float (n, H, W, C);
    ``flow_dir`` holds the same frames' motion-direction histograms."""
    import cv2

    n = actual.shape[0]
    x = actual.astype(np.float32) / 255.0
    sq = np.subtract(predicted, x, dtype=np.float32)
    np.square(sq, out=sq)
    sq = _channel_mean(sq)  # (n, H, W)
    # |frame - previous| in uint8 (exact), then scaled: 8x cheaper than in float
    diff = cv2.absdiff(actual.reshape(n, -1), previous.reshape(n, -1)).reshape(actual.shape)
    diff = _channel_mean(diff.astype(np.float32)) / np.float32(255.0)
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
    steps = config.steps
    # Post-processing (optical flow, frame features) of one model call runs in a worker
    # thread while the model runs the next call; at most two calls are in flight at once.
    in_flight: list[Future] = []
    parts: list[tuple[int, dict[str, np.ndarray], dict[str, np.ndarray]]] = []

    def post_process(streams: list[Stream], first_step: int, pred: np.ndarray, errs: np.ndarray):
        """Features of the kept frames among steps [first_step, first_step + steps)."""
        out = []
        for i, (w, start, offset) in enumerate(streams):
            lo = max(first_step, 1 if start == 0 else offset)  # frame 1 has no prediction
            hi = min(first_step + steps, len(w))
            if lo >= hi:
                continue
            cols, cells = _frame_features(
                w[lo:hi],
                pred[i, lo - first_step : hi - first_step],
                w[lo - 1 : hi - 1],
                errs[i, lo - first_step : hi - first_step],
                config.cell,
                _motion_every_other_frame(w, start, lo, hi, config.cell),
            )
            out.append((start + lo, cols, cells))
        return out

    def run_batch(streams: list[Stream]) -> None:
        run = _runner(model, steps)
        longest = max(len(w) for w, _, _ in streams)
        total = -(-longest // steps) * steps
        stacked = np.empty((len(streams), total, *streams[0][0].shape[1:]), np.uint8)
        for i, (w, _, _) in enumerate(streams):
            stacked[i, : len(w)] = w
            stacked[i, len(w) :] = w[-1]  # causal model: padding never changes kept frames
        state = model.zero_state(len(streams))
        for first_step in range(0, total, steps):
            pred, errs, state = run(stacked[:, first_step : first_step + steps], state)
            pred, errs = pred.numpy(), errs.numpy()
            if len(in_flight) >= 2:
                parts.extend(in_flight.pop(0).result())
            in_flight.append(_flow_pool().submit(post_process, streams, first_step, pred, errs))

    n_seen = 0
    frame_shape = tuple(int(v) for v in getattr(model, "frame_shape", ()))
    for streams in _stream_batches(frames, config):
        w = streams[0][0]
        if tuple(w.shape[1:]) != frame_shape:
            raise ValueError(
                f"frames of clip {clip!r} are {tuple(w.shape[1:])}, the model takes {frame_shape}"
            )
        if w.dtype != np.uint8:
            raise ValueError(f"frames must be uint8, got {w.dtype}")
        run_batch(streams)
        last, start, _ = streams[-1]
        n_seen = start + len(last)
    for future in in_flight:
        parts.extend(future.result())
    parts.sort(key=lambda part: part[0])
    parts = [(cols, cells) for _, cols, cells in parts]

    n = n_seen
    if n == 0:
        raise ValueError(f"clip {clip!r} has no frames")
    if parts:
        cols = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
        cells = {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
        # frame 1 copies frame 2's features
        cols = {k: np.concatenate([v[:1], v]) for k, v in cols.items()}
        cells = {k: np.concatenate([v[:1], v]) for k, v in cells.items()}
        cells["flow_dir"] = _fill_odd_motion(cells["flow_dir"])
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
        zeros,
        zeros.astype(np.float32),
        zeros,
        np.zeros((1, nb_layers), np.float32),
        cell,
        _flow_directions(np.concatenate([zeros, zeros]), cell),
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
