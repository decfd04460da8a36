"""Training one PredNet with one set of hyperparameters.

Kept free of MLflow and Optuna: those come in as Keras callbacks, so this function is
the same whether it runs alone, inside a search, or inside an Azure ML sweep trial.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from videoanom.data.dataset import SplitData
from videoanom.prednet import PredNet
from videoanom.training.search_space import DEFAULTS, parse_int_list
from videoanom.training.windows import (
    copy_last_mae,
    gather,
    random_windows,
    training_starts,
    validation_starts,
)

logger = logging.getLogger(__name__)

PIXEL_MAX = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a training run that are not searched."""

    nt: int = 10
    max_epochs: int = 12
    windows_per_epoch: int = 320
    max_val_windows: int = 96
    patience: int = 3
    seed: int = 0
    layer_loss_weights: tuple[float, ...] = ()  # empty: the paper's L_0 (1, 0, 0, ...)
    verbose: int | None = None  # Keras verbosity; None: bar on a terminal, a line otherwise


@dataclass
class TrainResult:
    """The trained model (best epoch's weights) and how good it is on validation."""

    model: PredNet
    params: dict[str, Any]
    val_loss: float
    val_mae: float
    copy_last_mae: float
    best_epoch: int
    epochs_run: int
    history: dict[str, list[float]] = field(default_factory=dict)

    @property
    def beats_copy_last(self) -> bool:
        return self.val_mae < self.copy_last_mae

    def summary(self) -> dict[str, Any]:
        return {
            "val_loss": self.val_loss,
            "val_mae": self.val_mae,
            "copy_last_mae": self.copy_last_mae,
            "beats_copy_last": self.beats_copy_last,
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
        }


def build_prednet(
    params: dict[str, Any], frame_shape: tuple[int, int, int], layer_loss_weights: tuple = ()
) -> PredNet:
    """A fresh PredNet for ``params`` (stack and filter sizes) and the data's frame shape."""
    stacks = (frame_shape[2], *parse_int_list(params["stack_sizes"]))
    a_filters = parse_int_list(params["filter_sizes"])
    if len(a_filters) != len(stacks) - 1:
        raise ValueError(
            f"filter_sizes {params['filter_sizes']!r} needs {len(stacks) - 1} values "
            f"for stack_sizes {params['stack_sizes']!r}"
        )
    layer_weights = layer_loss_weights or (1.0,) + (0.0,) * (len(stacks) - 1)
    return PredNet(
        frame_shape=frame_shape,
        stack_sizes=stacks,
        A_filt_sizes=a_filters,
        Ahat_filt_sizes=(3,) * len(stacks),
        R_filt_sizes=(3,) * len(stacks),
        pixel_max=PIXEL_MAX,
        layer_loss_weights=layer_weights,
        output_mode="error",
    )


def architecture_params(model: PredNet) -> dict[str, str]:
    """The searched architecture parameters that describe an existing model."""
    config = model.get_config()
    return {
        "stack_sizes": ",".join(str(v) for v in config["stack_sizes"][1:]),
        "filter_sizes": ",".join(str(v) for v in config["A_filt_sizes"]),
    }


def mean_frame(split: SplitData) -> np.ndarray:
    """Per-pixel mean of a split's frames in [0, 1]: the location's centring frame."""
    total = np.zeros(split.frames.shape[1:], np.float64)
    for start in range(0, len(split), 1024):
        total += split.frames[start : start + 1024].sum(axis=0, dtype=np.float64)
    return (total / max(len(split), 1) / 255.0).astype(np.float32)


class KeepBestWeights(keras.callbacks.Callback):
    """Remember the weights of the epoch with the lowest val_loss and restore them at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.best = np.inf
        self.best_epoch = -1
        self._weights: list[np.ndarray] | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get("val_loss")
        if value is not None and np.isfinite(value) and value < self.best:
            self.best, self.best_epoch = float(value), epoch
            self._weights = self.model.get_weights()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._weights is not None:
            self.model.set_weights(self._weights)


def train_prednet(
    params: dict[str, Any],
    train: SplitData,
    val: SplitData,
    config: TrainConfig = TrainConfig(),
    init_model: PredNet | None = None,
    freeze_levels: tuple[int, ...] = (),
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> TrainResult:
    """Train a PredNet on ``train`` windows, keep the best epoch on ``val``.

    ``init_model`` warm-starts from another location's model (same architecture; the
    input centring frame is recomputed for this location), and ``freeze_levels`` keeps
    the convolutions of those PredNet levels fixed.
    """
    params = {**DEFAULTS, **params}
    keras.utils.set_random_seed(config.seed)
    frame_shape = tuple(int(v) for v in train.frames.shape[1:])
    model = _initial_model(params, frame_shape, config, init_model)
    model.set_input_mean(mean_frame(train))
    if freeze_levels:
        model.freeze(freeze_levels)
        logger.info("frozen PredNet levels %s", list(freeze_levels))

    batch_size = int(params["batch_size"])
    steps = max(1, config.windows_per_epoch // batch_size)
    train_ds = _train_dataset(train, config, batch_size)
    val_windows = gather(
        val.frames, validation_starts(val, config.nt, config.max_val_windows), config.nt
    )
    val_ds = _val_dataset(val_windows, batch_size)
    schedule = keras.optimizers.schedules.InverseTimeDecay(
        float(params["learning_rate"]), decay_steps=steps, decay_rate=float(params["lr_decay"])
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule), jit_compile=False)
    keeper = KeepBestWeights()
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience)
    verbose = config.verbose if config.verbose is not None else (1 if sys.stdout.isatty() else 2)
    history = model.fit(
        train_ds,
        steps_per_epoch=steps,
        epochs=config.max_epochs,
        validation_data=val_ds,
        callbacks=[keeper, stopper, *(callbacks or [])],
        verbose=verbose,
        shuffle=False,  # windows are drawn at random by the dataset itself
    )
    val_loss, val_mae = _evaluate(model, val_ds)
    baseline = copy_last_mae(val_windows)
    result = TrainResult(
        model=model,
        params=params,
        val_loss=val_loss,
        val_mae=val_mae,
        copy_last_mae=baseline,
        best_epoch=keeper.best_epoch + 1,
        epochs_run=len(history.history.get("loss", [])),
        history={k: [float(v) for v in vs] for k, vs in history.history.items()},
    )
    logger.info(
        "val MAE %.5f vs copy-last %.5f (%s); val_loss %.5f at epoch %d",
        val_mae,
        baseline,
        "beats copy-last" if result.beats_copy_last else "DOES NOT beat copy-last",
        val_loss,
        result.best_epoch,
    )
    return result


def _initial_model(
    params: dict[str, Any], frame_shape: tuple, config: TrainConfig, init_model: PredNet | None
) -> PredNet:
    if init_model is None:
        model = build_prednet(params, frame_shape, config.layer_loss_weights)
        model.build((None, config.nt, *frame_shape))
        return model
    source = init_model.get_config()
    if tuple(source["frame_shape"]) != frame_shape:
        raise ValueError(
            f"cannot warm-start: the source PredNet takes {tuple(source['frame_shape'])} frames "
            f"but this location's data is prepared at {frame_shape}"
        )
    model = PredNet.from_config({**source, "output_mode": "error"})
    model.build((None, config.nt, *frame_shape))
    model.set_weights(init_model.get_weights())
    return model


def _train_dataset(train: SplitData, config: TrainConfig, batch_size: int) -> tf.data.Dataset:
    starts = training_starts(train, config.nt)
    rng = np.random.default_rng(config.seed)
    shape = (config.nt, *train.frames.shape[1:])
    dataset = tf.data.Dataset.from_generator(
        lambda: random_windows(train.frames, starts, config.nt, rng),
        output_signature=tf.TensorSpec(shape, tf.uint8),
    )
    return dataset.batch(batch_size, drop_remainder=True).map(_to_float).prefetch(2)


def _val_dataset(windows: np.ndarray, batch_size: int) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(windows).batch(batch_size).map(_to_float)


def _to_float(batch: tf.Tensor) -> tf.Tensor:
    return tf.cast(batch, tf.float32) / 255.0


def _evaluate(model: PredNet, dataset: tf.data.Dataset) -> tuple[float, float]:
    logs = model.evaluate(dataset, verbose=0, return_dict=True)
    return float(logs["loss"]), float(logs["mae"])
