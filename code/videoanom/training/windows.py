"""Sequences of ``nt`` consecutive frames of one clip: what PredNet trains and validates on."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from videoanom.data.dataset import SplitData, window_starts


class NotEnoughFramesError(ValueError):
    """A split without a single clip long enough for one sequence."""


def training_starts(split: SplitData, nt: int, name: str = "train") -> np.ndarray:
    """Every window start (stride 1): epochs sample from these at random."""
    starts = window_starts(split.clip, split.frame, nt, stride=1)
    if starts.size == 0:
        raise NotEnoughFramesError(
            f"no {name} clip has {nt} consecutive frames (the sequence length nt); "
            "add longer clips or lower nt"
        )
    return starts


def validation_starts(split: SplitData, nt: int, max_windows: int) -> np.ndarray:
    """Non-overlapping windows (stride nt), at most ``max_windows`` spread evenly."""
    starts = window_starts(split.clip, split.frame, nt, stride=nt)
    if starts.size == 0:
        raise NotEnoughFramesError(
            f"no validation clip has {nt} consecutive frames (the sequence length nt); "
            "add more or longer train clips, or lower nt"
        )
    if starts.size > max_windows:
        picks = np.linspace(0, starts.size - 1, max_windows).round().astype(int)
        starts = starts[np.unique(picks)]
    return starts


def gather(frames: np.ndarray, starts: np.ndarray, nt: int) -> np.ndarray:
    """(len(starts), nt, H, W, C) windows copied out of ``frames``."""
    index = starts[:, None] + np.arange(nt)[None, :]
    return frames[index]


def random_windows(
    frames: np.ndarray, starts: np.ndarray, nt: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """An endless stream of windows drawn uniformly from ``starts``."""
    while True:
        for start in rng.permutation(starts):
            yield frames[start : start + nt]


def copy_last_mae(windows: np.ndarray) -> float:
    """MAE of predicting each frame by the previous one, over t >= 1, in [0, 1] units.

    The baseline any next-frame predictor must beat: on a static camera it is the cost
    of camera noise plus whatever moves.
    """
    if windows.shape[1] < 2:
        raise ValueError("copy-last needs windows of at least 2 frames")
    x = windows.astype(np.float32) / 255.0
    return float(np.abs(x[:, 1:] - x[:, :-1]).mean())
