"""PredNet (Lotter, Kreiman & Cox 2016) as a Keras 3 model.

This follows the reference implementation, coxlab/prednet (``prednet.py``), step for
step: a stack of ConvLSTM representation units ``R_l`` updated top-down, then a
bottom-up pass that predicts each layer's target ``A_l`` (``Ahat_l``), splits the
prediction error into positive and negative ReLU populations ``E_l`` and pools a
convolution of ``E_l`` into the next layer's target ``A_{l+1}``.

Deliberate differences from the reference, each measured or needed here:

* The four ConvLSTM gate convolutions of a layer are computed by ONE ``Conv2D`` with
  ``4 * R`` filters (same maths, fewer kernel launches). Its Glorot-uniform limit is
  rescaled so every gate block is initialised exactly like a separate Glorot conv.
* Frames are centred per camera: ``A_0 = frames - input_mean + pixel_max / 2`` with a
  saved, non-trainable ``input_mean`` (static cameras do not learn otherwise).
* The layer-0 ``Ahat`` bias starts at ``pixel_max / 2`` so its ReLU cannot start dead.
* The time loop is unrolled in Python (``T`` must be static), the fastest option on CPU.

Gates use the Keras 1/2 ``hard_sigmoid`` that coxlab's code ran with,
``clip(0.2 * x + 0.5, 0, 1)``; Keras 3 changed ``keras.activations.hard_sigmoid`` to
``relu6(x + 3) / 6`` (slope 1/6), which would silently change the model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

logger = logging.getLogger(__name__)

OUTPUT_MODES = ("prediction", "error", "all")


def _hard_sigmoid(x: Any) -> Any:
    """Keras 1/2 hard sigmoid (slope 0.2), as used by coxlab/prednet's ConvLSTM gates."""
    return ops.clip(0.2 * x + 0.5, 0.0, 1.0)


def prednet_loss(errors: Any, layer_loss_weights: Sequence[float]) -> Any:
    """PredNet training loss from per-layer mean errors, exactly as coxlab's kitti_train.

    ``errors`` is ``(batch, T, nb_layers)``. Time weights are 0 for ``t = 0`` (the first
    prediction is made from an empty state, so it says nothing about the model) and
    ``1 / (T - 1)`` otherwise; layers are weighted by ``layer_loss_weights``. Returns the
    batch mean of the per-sample weighted sum (a scalar tensor).
    """
    errors = ops.convert_to_tensor(errors)
    errors = ops.cast(errors, "float32")
    nb_layers = errors.shape[-1]
    if nb_layers is not None and len(layer_loss_weights) != nb_layers:
        raise ValueError(
            f"layer_loss_weights has {len(layer_loss_weights)} entries, errors have "
            f"{nb_layers} layers"
        )
    nt = ops.shape(errors)[1]
    t_idx = ops.arange(nt)
    denom = ops.cast(ops.maximum(nt - 1, 1), "float32")
    time_w = ops.where(t_idx == 0, 0.0, 1.0 / denom)
    layer_w = ops.convert_to_tensor(np.asarray(layer_loss_weights, dtype="float32"))
    per_step = ops.sum(errors * layer_w, axis=-1)  # (B, T)
    per_sample = ops.sum(per_step * ops.cast(time_w, "float32"), axis=-1)  # (B,)
    return ops.mean(per_sample)


def _as_int_tuple(values: Iterable[Any], name: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a sequence of integers, got {values!r}") from exc


def _validate_sizes(
    frame_shape: tuple[int, ...],
    stack_sizes: tuple[int, ...],
    R_stack_sizes: tuple[int, ...],
    A_filt_sizes: tuple[int, ...],
    Ahat_filt_sizes: tuple[int, ...],
    R_filt_sizes: tuple[int, ...],
    layer_loss_weights: tuple[float, ...],
) -> None:
    """Fail early with one-line messages instead of obscure shape errors at trace time."""
    if len(frame_shape) != 3 or any(d <= 0 for d in frame_shape):
        raise ValueError(f"frame_shape must be (H, W, C) with positive sizes, got {frame_shape}")
    nb_layers = len(stack_sizes)
    if nb_layers < 1 or any(s <= 0 for s in stack_sizes):
        raise ValueError(f"stack_sizes must be non-empty and positive, got {stack_sizes}")
    if stack_sizes[0] != frame_shape[2]:
        raise ValueError(
            f"stack_sizes[0]={stack_sizes[0]} must equal the frame channel count {frame_shape[2]}"
        )
    factor = 2 ** (nb_layers - 1)
    if frame_shape[0] % factor or frame_shape[1] % factor:
        raise ValueError(
            f"frame height and width {frame_shape[:2]} must be divisible by "
            f"2**(nb_layers-1)={factor}"
        )
    expected = {
        "R_stack_sizes": (R_stack_sizes, nb_layers),
        "A_filt_sizes": (A_filt_sizes, nb_layers - 1),
        "Ahat_filt_sizes": (Ahat_filt_sizes, nb_layers),
        "R_filt_sizes": (R_filt_sizes, nb_layers),
        "layer_loss_weights": (layer_loss_weights, nb_layers),
    }
    for name, (values, n) in expected.items():
        if len(values) != n:
            raise ValueError(f"{name} must have {n} entries for {nb_layers} layers, got {values}")
    for name in ("R_stack_sizes", "A_filt_sizes", "Ahat_filt_sizes", "R_filt_sizes"):
        if any(v <= 0 for v in expected[name][0]):
            raise ValueError(f"{name} must be positive, got {expected[name][0]}")


@keras.saving.register_keras_serializable(package="videoanom")
class PredNet(keras.Model):
    """PredNet predictive-coding video model.

    Input ``(batch, T, H, W, C)`` float32 frames in ``[0, pixel_max]`` with static ``T``.
    Output depends on ``output_mode``: ``"prediction"`` gives ``(B, T, H, W, C)`` raw-space
    predictions of each frame made before seeing it, ``"error"`` gives ``(B, T, L)`` mean
    error-unit activity per layer, ``"all"`` a dict with both (keys ``prediction`` and
    ``errors``).

    Train with ``model.compile(optimizer=...)`` and ``model.fit(frames_dataset)``; no
    targets are needed (``train_step`` minimises :func:`prednet_loss`). After
    :meth:`freeze`, call ``compile`` again so the optimizer only tracks trainable weights.
    """

    def __init__(
        self,
        frame_shape: Sequence[int] = (64, 80, 1),
        stack_sizes: Sequence[int] = (1, 16, 32, 64),
        R_stack_sizes: Sequence[int] | None = None,
        A_filt_sizes: Sequence[int] = (3, 3, 3),
        Ahat_filt_sizes: Sequence[int] = (3, 3, 3, 3),
        R_filt_sizes: Sequence[int] = (3, 3, 3, 3),
        pixel_max: float = 1.0,
        layer_loss_weights: Sequence[float] = (1.0, 0.0, 0.0, 0.0),
        output_mode: str = "error",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.frame_shape = _as_int_tuple(frame_shape, "frame_shape")
        self.stack_sizes = _as_int_tuple(stack_sizes, "stack_sizes")
        self.R_stack_sizes = _as_int_tuple(
            stack_sizes if R_stack_sizes is None else R_stack_sizes, "R_stack_sizes"
        )
        self.A_filt_sizes = _as_int_tuple(A_filt_sizes, "A_filt_sizes")
        self.Ahat_filt_sizes = _as_int_tuple(Ahat_filt_sizes, "Ahat_filt_sizes")
        self.R_filt_sizes = _as_int_tuple(R_filt_sizes, "R_filt_sizes")
        self.layer_loss_weights = tuple(float(w) for w in layer_loss_weights)
        self.pixel_max = float(pixel_max)
        if not self.pixel_max > 0:
            raise ValueError(f"pixel_max must be positive, got {pixel_max}")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        self.output_mode = output_mode
        _validate_sizes(
            self.frame_shape,
            self.stack_sizes,
            self.R_stack_sizes,
            self.A_filt_sizes,
            self.Ahat_filt_sizes,
            self.R_filt_sizes,
            self.layer_loss_weights,
        )
        self.nb_layers = len(self.stack_sizes)

        r_convs, ahat_convs, a_convs = [], [], []
        for lvl in range(self.nb_layers):
            r_size = self.R_stack_sizes[lvl]
            k = self.R_filt_sizes[lvl]
            cin = self._r_conv_in_channels(lvl)
            # One conv for gates i, f, c, o. Scale Glorot so each R-filter block has the
            # limit sqrt(6 / (fan_in + fan_out)) of a separate conv with R filters.
            fan_in, fan_out = k * k * cin, k * k * r_size
            scale = (fan_in + 4 * fan_out) / (fan_in + fan_out)
            r_convs.append(
                keras.layers.Conv2D(
                    4 * r_size,
                    k,
                    padding="same",
                    kernel_initializer=keras.initializers.VarianceScaling(
                        scale=scale, mode="fan_avg", distribution="uniform"
                    ),
                    name=f"r_conv_{lvl}",
                )
            )
            bias_init = keras.initializers.Constant(0.5 * self.pixel_max) if lvl == 0 else "zeros"
            ahat_convs.append(
                keras.layers.Conv2D(
                    self.stack_sizes[lvl],
                    self.Ahat_filt_sizes[lvl],
                    padding="same",
                    activation="relu",
                    bias_initializer=bias_init,
                    name=f"ahat_conv_{lvl}",
                )
            )
            if lvl < self.nb_layers - 1:
                a_convs.append(
                    keras.layers.Conv2D(
                        self.stack_sizes[lvl + 1],
                        self.A_filt_sizes[lvl],
                        padding="same",
                        activation="relu",
                        name=f"a_conv_{lvl}",
                    )
                )
        self.r_convs = r_convs
        self.ahat_convs = ahat_convs
        self.a_convs = a_convs

        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.mae_tracker = keras.metrics.Mean(name="mae")
        # Build now so weights exist before load_model restores them.
        self.build((None, None, *self.frame_shape))

    # ------------------------------------------------------------------ structure
    def _r_conv_in_channels(self, lvl: int) -> int:
        """Channels of concat(R_l(t-1), E_l(t-1), upsample(R_{l+1}(t)))."""
        cin = self.R_stack_sizes[lvl] + 2 * self.stack_sizes[lvl]
        if lvl < self.nb_layers - 1:
            cin += self.R_stack_sizes[lvl + 1]
        return cin

    def _level_hw(self, lvl: int) -> tuple[int, int]:
        return self.frame_shape[0] // 2**lvl, self.frame_shape[1] // 2**lvl

    def build(self, input_shape: Sequence[int | None] | None = None) -> None:
        """Create all weights; ``input_shape`` is ``(B, T, H, W, C)`` with B, T may be None."""
        if input_shape is not None:
            input_shape = tuple(input_shape)
            if len(input_shape) != 5 or tuple(input_shape[2:]) != self.frame_shape:
                raise ValueError(
                    f"PredNet expects input (batch, T, *{self.frame_shape}), got {input_shape}"
                )
        for lvl in range(self.nb_layers):
            h, w = self._level_hw(lvl)
            if not self.r_convs[lvl].built:
                self.r_convs[lvl].build((None, h, w, self._r_conv_in_channels(lvl)))
            if not self.ahat_convs[lvl].built:
                self.ahat_convs[lvl].build((None, h, w, self.R_stack_sizes[lvl]))
            if lvl < self.nb_layers - 1 and not self.a_convs[lvl].built:
                self.a_convs[lvl].build((None, h, w, 2 * self.stack_sizes[lvl]))
        if getattr(self, "input_mean", None) is None:
            self.input_mean = self.add_weight(
                shape=self.frame_shape,
                initializer=keras.initializers.Constant(self.pixel_max / 2),
                trainable=False,
                name="input_mean",
            )

    def level_layers(self, level: int) -> list[keras.layers.Layer]:
        """Convs belonging to ``level``: its R (ConvLSTM) conv, its Ahat conv and, for
        ``level >= 1``, the A conv that produces ``A_level`` from ``E_{level-1}``."""
        if not 0 <= level < self.nb_layers:
            raise ValueError(f"level must be in [0, {self.nb_layers - 1}], got {level}")
        layers: list[keras.layers.Layer] = [self.r_convs[level], self.ahat_convs[level]]
        if level >= 1:
            layers.append(self.a_convs[level - 1])
        return layers

    def freeze(self, levels: int | Iterable[int]) -> None:
        """Make every conv of ``levels`` non-trainable (for transfer to a new camera).

        Call ``compile`` afterwards: a compiled training function and an optimizer built
        earlier still refer to the old trainable set. Frozen flags are not saved with the
        model; freeze again after loading.
        """
        self._set_levels_trainable(levels, False)

    def unfreeze(self, levels: int | Iterable[int]) -> None:
        """Undo :meth:`freeze` for ``levels`` (recompile afterwards)."""
        self._set_levels_trainable(levels, True)

    def _set_levels_trainable(self, levels: int | Iterable[int], trainable: bool) -> None:
        if isinstance(levels, int):
            levels = [levels]
        for lvl in levels:
            for layer in self.level_layers(int(lvl)):
                layer.trainable = trainable
        logger.debug("PredNet levels %s set trainable=%s; recompile before fit", levels, trainable)

    def set_input_mean(self, mean_frame: np.ndarray) -> None:
        """Set the per-pixel centring frame (usually the camera's mean training frame)."""
        mean_frame = np.asarray(mean_frame, dtype="float32")
        if mean_frame.shape != self.frame_shape:
            raise ValueError(
                f"mean_frame shape {mean_frame.shape} must equal frame_shape {self.frame_shape}"
            )
        self.input_mean.assign(mean_frame)

    # ------------------------------------------------------------------ forward
    def state_shapes(self) -> list[tuple[int, int, int]]:
        """Per-example shapes of the recurrent state: R, C and E of every layer, in the
        order :meth:`run_with_state` takes and returns them."""
        r = [(*self._level_hw(lvl), self.R_stack_sizes[lvl]) for lvl in range(self.nb_layers)]
        e = [(*self._level_hw(lvl), 2 * self.stack_sizes[lvl]) for lvl in range(self.nb_layers)]
        return [*r, *r, *e]

    def zero_state(self, batch: int) -> list[np.ndarray]:
        """The state a sequence starts from (all zeros), as float32 arrays."""
        return [np.zeros((batch, *shape), np.float32) for shape in self.state_shapes()]

    def run_with_state(self, frames: Any, state: Sequence[Any]) -> tuple[Any, Any, list[Any]]:
        """(prediction, errors, final state) of ``frames`` continuing from ``state``.

        Feeding a long sequence chunk by chunk, each call given the state the previous one
        returned, gives the same predictions as one call on the whole sequence: how long
        videos are scored without recomputing context at every chunk boundary.
        """
        return self._forward(frames, list(state))

    def _forward(self, frames: Any, state: list[Any] | None = None) -> tuple[Any, Any, Any]:
        """Run the unrolled recurrence from ``state`` (zeros when None); returns raw-space
        predictions, errors (B, T, L) and the final state."""
        frames = ops.cast(frames, self.compute_dtype)
        nt = frames.shape[1]
        if nt is None:
            raise ValueError("PredNet needs a static number of time steps (input shape[1])")
        half = self.pixel_max / 2
        centred = frames - self.input_mean + half
        batch = ops.shape(frames)[0]

        n = self.nb_layers
        if state is None:
            state = [
                ops.zeros((batch, *shape), dtype=frames.dtype) for shape in self.state_shapes()
            ]
        elif len(state) != 3 * n:
            raise ValueError(f"state must hold {3 * n} tensors (R, C, E per layer)")
        else:
            state = [ops.cast(s, frames.dtype) for s in state]
        r_state, c_state, e_state = state[:n], state[n : 2 * n], state[2 * n :]

        predictions, errors = [], []
        for t in range(nt):
            r_new: list[Any] = [None] * self.nb_layers
            c_new: list[Any] = [None] * self.nb_layers
            r_up = None
            # Top-down: update representation units from the top layer.
            for lvl in reversed(range(self.nb_layers)):
                parts = [r_state[lvl], e_state[lvl]]
                if r_up is not None:
                    parts.append(r_up)
                z = self.r_convs[lvl](ops.concatenate(parts, axis=-1))
                i, f, c_hat, o = ops.split(z, 4, axis=-1)
                c = _hard_sigmoid(f) * c_state[lvl] + _hard_sigmoid(i) * ops.tanh(c_hat)
                r = _hard_sigmoid(o) * ops.tanh(c)
                r_new[lvl], c_new[lvl] = r, c
                if lvl > 0:
                    r_up = ops.repeat(ops.repeat(r, 2, axis=1), 2, axis=2)
            # Bottom-up: predictions, error units, next-layer targets.
            a = centred[:, t]
            e_new, layer_err = [], []
            for lvl in range(self.nb_layers):
                ahat = self.ahat_convs[lvl](r_new[lvl])
                if lvl == 0:
                    ahat = ops.minimum(ahat, self.pixel_max)
                    predictions.append(ahat)
                # Same channel order as coxlab: (relu(Ahat - A), relu(A - Ahat)).
                e = ops.concatenate([ops.relu(ahat - a), ops.relu(a - ahat)], axis=-1)
                e_new.append(e)
                layer_err.append(ops.mean(e, axis=(1, 2, 3)))
                if lvl < self.nb_layers - 1:
                    a = ops.max_pool(self.a_convs[lvl](e), pool_size=2, strides=2)
            errors.append(ops.stack(layer_err, axis=-1))
            r_state, c_state, e_state = r_new, c_new, e_new

        pred_centred = ops.stack(predictions, axis=1)
        prediction = ops.clip(pred_centred + self.input_mean - half, 0.0, self.pixel_max)
        return prediction, ops.stack(errors, axis=1), [*r_state, *c_state, *e_state]

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        prediction, errors, _ = self._forward(inputs)
        if self.output_mode == "prediction":
            return prediction
        if self.output_mode == "error":
            return errors
        return {"prediction": prediction, "errors": errors}

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> Any:
        batch, nt = input_shape[0], input_shape[1]
        pred_shape = (batch, nt, *self.frame_shape)
        err_shape = (batch, nt, self.nb_layers)
        if self.output_mode == "prediction":
            return pred_shape
        if self.output_mode == "error":
            return err_shape
        return {"prediction": pred_shape, "errors": err_shape}

    # ------------------------------------------------------------------ training
    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        # Listing the trackers here makes Keras reset them at each epoch.
        return [self.loss_tracker, self.mae_tracker]

    @staticmethod
    def _frames_from_data(data: Any) -> Any:
        """Accept ``x``, ``(x,)`` or ``(x, y[, w])``; targets are ignored (self-supervised)."""
        while isinstance(data, (tuple, list)):
            data = data[0]
        return data

    def _loss_and_mae(self, frames: Any) -> tuple[Any, Any]:
        if frames.shape[1] is not None and frames.shape[1] < 2:
            # t = 0 has loss weight 0: a single frame carries no training signal.
            raise ValueError(f"PredNet training needs >= 2 time steps, got {frames.shape[1]}")
        prediction, errors, _ = self._forward(frames)
        loss = prednet_loss(errors, self.layer_loss_weights)
        frames = ops.cast(frames, prediction.dtype)
        mae = ops.mean(ops.abs(prediction[:, 1:] - frames[:, 1:]))
        return loss, mae

    def _update_metrics(self, loss: Any, mae: Any) -> dict[str, Any]:
        self.loss_tracker.update_state(loss)
        self.mae_tracker.update_state(mae)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data: Any) -> dict[str, Any]:
        import tensorflow as tf

        frames = self._frames_from_data(data)
        with tf.GradientTape() as tape:
            loss, mae = self._loss_and_mae(frames)
        weights = self.trainable_weights
        grads = tape.gradient(loss, weights)
        self.optimizer.apply(grads, weights)
        return self._update_metrics(loss, mae)

    def test_step(self, data: Any) -> dict[str, Any]:
        loss, mae = self._loss_and_mae(self._frames_from_data(data))
        return self._update_metrics(loss, mae)

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "frame_shape": list(self.frame_shape),
                "stack_sizes": list(self.stack_sizes),
                "R_stack_sizes": list(self.R_stack_sizes),
                "A_filt_sizes": list(self.A_filt_sizes),
                "Ahat_filt_sizes": list(self.Ahat_filt_sizes),
                "R_filt_sizes": list(self.R_filt_sizes),
                "pixel_max": self.pixel_max,
                "layer_loss_weights": list(self.layer_loss_weights),
                "output_mode": self.output_mode,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> PredNet:
        config = dict(config)
        if "dtype" in config and isinstance(config["dtype"], dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)


def with_output_mode(model: PredNet, mode: str) -> PredNet:
    """A new PredNet with ``model``'s config and weights (incl. input_mean) but ``mode``.

    Lets one trained model serve training (``error``), scoring (``all``) and display
    (``prediction``) without retraining. Trainable flags of the convs are copied too.
    """
    config = model.get_config()
    config["output_mode"] = mode
    config.pop("name", None)
    new = PredNet.from_config(config)
    if len(new.weights) != len(model.weights):
        raise ValueError("model and its copy have different weight lists")
    for dst, src in zip(new.weights, model.weights, strict=True):
        if tuple(dst.shape) != tuple(src.shape):
            raise ValueError(f"weight shape mismatch: {dst.path} vs {src.path}")
        dst.assign(src)
    for lvl in range(model.nb_layers):
        for dst_layer, src_layer in zip(
            new.level_layers(lvl), model.level_layers(lvl), strict=True
        ):
            dst_layer.trainable = src_layer.trainable
    return new


def flops_per_frame(model_or_config: PredNet | dict[str, Any]) -> float:
    """Analytical FLOPs (2 x MACs) of one time step for one frame, all convolutions.

    Each conv counts ``2 * k * k * Cin * Cout * H * W`` at its input resolution
    (elementwise ops, pooling and upsampling are ignored: they are a few percent).
    """
    if isinstance(model_or_config, PredNet):
        cfg = model_or_config.get_config()
    else:
        cfg = dict(model_or_config)
    height, width, _ = (int(v) for v in cfg.get("frame_shape", (64, 80, 1)))
    stacks = [int(v) for v in cfg.get("stack_sizes", (1, 16, 32, 64))]
    r_stacks = [int(v) for v in (cfg.get("R_stack_sizes") or stacks)]
    nb_layers = len(stacks)
    a_filt = [int(v) for v in cfg.get("A_filt_sizes", (3,) * (nb_layers - 1))]
    ahat_filt = [int(v) for v in cfg.get("Ahat_filt_sizes", (3,) * nb_layers)]
    r_filt = [int(v) for v in cfg.get("R_filt_sizes", (3,) * nb_layers)]

    def conv(k: int, cin: int, cout: int, hw: int) -> float:
        return 2.0 * k * k * cin * cout * hw

    total = 0.0
    for lvl in range(nb_layers):
        hw = (height // 2**lvl) * (width // 2**lvl)
        cin = r_stacks[lvl] + 2 * stacks[lvl]
        if lvl < nb_layers - 1:
            cin += r_stacks[lvl + 1]
        total += conv(r_filt[lvl], cin, 4 * r_stacks[lvl], hw)
        total += conv(ahat_filt[lvl], r_stacks[lvl], stacks[lvl], hw)
        if lvl < nb_layers - 1:
            total += conv(a_filt[lvl], 2 * stacks[lvl], stacks[lvl + 1], hw)
    return total
