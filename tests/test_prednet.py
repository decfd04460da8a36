"""Behaviour of the Keras 3 PredNet: maths of one step, loss, centring, saving, freezing."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from videoanom.prednet import (
    PredNet,
    flops_per_frame,
    prednet_loss,
    with_output_mode,
)

FRAME = (16, 16, 1)
STACKS = (1, 4, 8)
NT = 4
SMALL = {
    "frame_shape": FRAME,
    "stack_sizes": STACKS,
    "A_filt_sizes": (3, 3),
    "Ahat_filt_sizes": (3, 3, 3),
    "R_filt_sizes": (3, 3, 3),
    "layer_loss_weights": (1.0, 0.0, 0.0),
}


def small_model(output_mode: str = "all", seed: int = 0, **overrides) -> PredNet:
    keras.utils.set_random_seed(seed)
    return PredNet(**{**SMALL, **overrides}, output_mode=output_mode)


def random_frames(batch: int = 2, nt: int = NT, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, nt, *FRAME), dtype=np.float32)


def moving_square_clips(n_clips: int, nt: int = 6, seed: int = 0) -> np.ndarray:
    """Bright square moving 1 px per frame over a fixed noisy background (static camera)."""
    rng = np.random.default_rng(seed)
    h, w, _ = FRAME
    background = rng.uniform(0.2, 0.4, size=(h, w)).astype(np.float32)
    clips = np.empty((n_clips, nt, h, w, 1), np.float32)
    for i in range(n_clips):
        row, col = rng.integers(2, h - 6), rng.integers(0, w - 4 - nt)
        for t in range(nt):
            frame = background.copy()
            frame[row : row + 4, col + t : col + t + 4] = 0.9
            frame += rng.normal(0, 0.01, frame.shape).astype(np.float32)
            clips[i, t, ..., 0] = np.clip(frame, 0, 1)
    return clips


def weights_by_path(model: PredNet) -> dict[str, np.ndarray]:
    return {w.path: w.numpy() for w in model.weights}


# ---------------------------------------------------------------- shapes and maths


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("prediction", (2, NT, *FRAME)), ("error", (2, NT, len(STACKS)))],
)
def test_output_shapes(mode: str, expected: tuple[int, ...]) -> None:
    out = small_model(mode)(random_frames())
    assert tuple(out.shape) == expected


def test_output_shape_all_mode_and_static_shape() -> None:
    model = small_model("all")
    out = model(random_frames())
    assert set(out) == {"prediction", "errors"}
    assert tuple(out["prediction"].shape) == (2, NT, *FRAME)
    assert tuple(out["errors"].shape) == (2, NT, len(STACKS))
    assert model.compute_output_shape((None, None, *FRAME)) == {
        "prediction": (None, None, *FRAME),
        "errors": (None, None, len(STACKS)),
    }


def _reference_forward(model: PredNet, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Independent transcription of coxlab/prednet's ``step`` with separate gate kernels."""

    def conv(x, layer, act=None):
        kernel, bias = (v.numpy() for v in layer.weights)
        y = tf.nn.conv2d(x, kernel, 1, "SAME") + bias
        return tf.nn.relu(y) if act == "relu" else y

    def hard_sigmoid(x):  # Keras 1/2 definition, as coxlab ran it
        return tf.clip_by_value(0.2 * x + 0.5, 0.0, 1.0)

    nb, pm = model.nb_layers, model.pixel_max
    mean = model.input_mean.numpy()
    batch = frames.shape[0]
    shapes = [(FRAME[0] // 2**lvl, FRAME[1] // 2**lvl) for lvl in range(nb)]
    r = [tf.zeros((batch, *shapes[lvl], model.R_stack_sizes[lvl])) for lvl in range(nb)]
    c = [tf.zeros_like(x) for x in r]
    e = [tf.zeros((batch, *shapes[lvl], 2 * STACKS[lvl])) for lvl in range(nb)]
    preds, errs = [], []
    for t in range(frames.shape[1]):
        new_r, new_c = [None] * nb, [None] * nb
        for lvl in reversed(range(nb)):
            inputs = [r[lvl], e[lvl]]
            if lvl < nb - 1:
                up = new_r[lvl + 1]
                inputs.append(tf.repeat(tf.repeat(up, 2, axis=1), 2, axis=2))
            z = conv(tf.concat(inputs, -1), model.r_convs[lvl])
            size = model.R_stack_sizes[lvl]
            gi, gf, gc, go = (z[..., k * size : (k + 1) * size] for k in range(4))
            new_c[lvl] = hard_sigmoid(gf) * c[lvl] + hard_sigmoid(gi) * tf.tanh(gc)
            new_r[lvl] = hard_sigmoid(go) * tf.tanh(new_c[lvl])
        a = frames[:, t] - mean + pm / 2
        new_e, layer_errs = [], []
        for lvl in range(nb):
            ahat = conv(new_r[lvl], model.ahat_convs[lvl], "relu")
            if lvl == 0:
                ahat = tf.minimum(ahat, pm)
                preds.append(np.clip(ahat + mean - pm / 2, 0, pm))
            new_e.append(tf.concat([tf.nn.relu(ahat - a), tf.nn.relu(a - ahat)], -1))
            layer_errs.append(tf.reduce_mean(new_e[-1], axis=(1, 2, 3)))
            if lvl < nb - 1:
                a = tf.nn.max_pool2d(conv(new_e[-1], model.a_convs[lvl], "relu"), 2, 2, "VALID")
        errs.append(np.stack(layer_errs, -1))
        r, c, e = new_r, new_c, new_e
    return np.stack(preds, 1), np.stack(errs, 1)


def test_matches_reference_step_equations() -> None:
    model = small_model("all", seed=3)
    # Non-trivial centring and larger weights so every nonlinearity is exercised.
    model.set_input_mean(np.random.default_rng(4).uniform(0.2, 0.8, FRAME))
    for w in model.trainable_weights:
        w.assign(w.numpy() * 3 + 0.05)
    frames = random_frames(seed=5)
    out = model(frames)
    ref_pred, ref_err = _reference_forward(model, frames)
    np.testing.assert_allclose(np.array(out["prediction"]), ref_pred, atol=1e-5)
    np.testing.assert_allclose(np.array(out["errors"]), ref_err, rtol=1e-5, atol=1e-6)


def test_run_with_state_continues_a_sequence_exactly() -> None:
    """Two chunks, the second started from the state the first returned, predict what one
    call over the whole sequence predicts; from the zero state, a chunk starts afresh."""
    model = small_model("all", seed=3)
    frames = random_frames(nt=8, seed=6)
    whole = model(frames)
    assert [tuple(s) for s in model.state_shapes()] == [
        (16, 16, 1), (8, 8, 4), (4, 4, 8), (16, 16, 1), (8, 8, 4), (4, 4, 8),
        (16, 16, 2), (8, 8, 8), (4, 4, 16),
    ]  # fmt: skip
    pred_a, err_a, state = model.run_with_state(frames[:, :3], model.zero_state(2))
    pred_b, err_b, _ = model.run_with_state(frames[:, 3:], state)
    np.testing.assert_allclose(
        np.concatenate([pred_a, pred_b], axis=1), whole["prediction"], atol=1e-6
    )
    np.testing.assert_allclose(
        np.concatenate([err_a, err_b], axis=1), whole["errors"], rtol=1e-5, atol=1e-7
    )
    fresh, _, _ = model.run_with_state(frames[:, 3:], model.zero_state(2))
    np.testing.assert_allclose(fresh, model(frames[:, 3:])["prediction"], atol=1e-6)
    assert not np.allclose(fresh, pred_b, atol=1e-4)
    with pytest.raises(ValueError, match="state must hold 9 tensors"):
        model.run_with_state(frames, model.zero_state(2)[:3])


def test_layer0_error_is_half_mean_abs_prediction_error() -> None:
    # With the default centring (pixel_max / 2) nothing is clipped in raw space, so
    # mean(concat(relu(A - Ahat), relu(Ahat - A))) == mean|frame - prediction| / 2.
    model = small_model("all")
    frames = random_frames()
    out = model(frames)
    pred, errors = np.array(out["prediction"]), np.array(out["errors"])
    assert pred.min() > 0 and pred.max() < 1  # no clipping at either end
    expected = np.abs(frames - pred).mean(axis=(2, 3, 4)) / 2
    np.testing.assert_allclose(errors[:, :, 0], expected, rtol=1e-5, atol=1e-6)
    assert (errors >= 0).all()


def test_initial_layer0_prediction_is_mid_grey() -> None:
    # Layer-0 Ahat bias starts at pixel_max / 2: the ReLU cannot start dead.
    model = small_model("prediction", pixel_max=255.0)
    np.testing.assert_array_equal(model.ahat_convs[0].bias.numpy(), 127.5)
    pred = np.array(model(random_frames() * 255))
    assert pred.min() > 0


def test_layer0_prediction_never_exceeds_pixel_max() -> None:
    model = small_model("all")
    model.ahat_convs[0].bias.assign(np.full((1,), 100.0, np.float32))
    frames = np.full((1, NT, *FRAME), 1000.0, np.float32)
    out = model(frames)
    pred, errors = np.array(out["prediction"]), np.array(out["errors"])
    assert pred.max() <= model.pixel_max
    np.testing.assert_array_equal(pred, model.pixel_max)
    # Internally Ahat_0 is capped at pixel_max too (an uncapped 100+ would give less).
    np.testing.assert_allclose(errors[..., 0], (1000.0 - model.pixel_max) / 2, rtol=1e-6)


def test_prednet_loss_weights_time_and_layers() -> None:
    rng = np.random.default_rng(0)
    errors = rng.random((3, 5, 3)).astype(np.float32)
    lw = (1.0, 0.5, 0.0)
    expected = np.mean(np.sum(errors[:, 1:] @ np.array(lw), axis=1) / 4)
    assert float(prednet_loss(errors, lw)) == pytest.approx(expected, rel=1e-6)
    changed = errors.copy()
    changed[:, 0] += 10.0  # t = 0 has weight 0
    changed[:, :, 2] += 10.0  # layer weight 0
    assert float(prednet_loss(changed, lw)) == pytest.approx(expected, rel=1e-6)
    changed[:, 2, 1] += 1.0  # weight 0.5 * 1/(T-1), per sample, then batch mean
    assert float(prednet_loss(changed, lw)) == pytest.approx(expected + 0.5 / 4, rel=1e-6)
    with pytest.raises(ValueError, match="layer_loss_weights"):
        prednet_loss(errors, (1.0, 0.0))


# ---------------------------------------------------------------- centring and saving


def test_input_mean_centring_is_used_and_saved(tmp_path: Path) -> None:
    model = small_model("all")
    mean = np.random.default_rng(2).uniform(0.3, 0.7, FRAME).astype(np.float32)
    shifted = small_model("all")
    shifted.set_weights(model.get_weights())
    shifted.set_input_mean(mean)
    frames = random_frames() * 0.2 + 0.4  # stays inside [0, 1] after shifting
    frames_shifted = frames + (mean - 0.5)
    # Same centred input A_0 -> same errors; raw predictions shift by mean - 0.5.
    np.testing.assert_allclose(
        np.array(model(frames)["errors"]), np.array(shifted(frames_shifted)["errors"]), atol=1e-6
    )
    assert any(w is shifted.input_mean for w in shifted.non_trainable_weights)
    assert not any(w is shifted.input_mean for w in shifted.trainable_weights)

    path = tmp_path / "centred.keras"
    shifted.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.input_mean.numpy(), mean)
    with pytest.raises(ValueError, match="mean_frame shape"):
        loaded.set_input_mean(np.zeros((8, 8, 1)))


def test_save_load_round_trip_identical(tmp_path: Path) -> None:
    model = small_model("all", pixel_max=2.0, layer_loss_weights=(1.0, 0.1, 0.0))
    model.set_input_mean(np.full(FRAME, 0.7, np.float32))
    frames = random_frames() * 2
    path = tmp_path / "prednet.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, PredNet)
    assert {k: v for k, v in loaded.get_config().items() if k != "name"} == {
        k: v for k, v in model.get_config().items() if k != "name"
    }
    out, out_loaded = model(frames), loaded(frames)
    for key in ("prediction", "errors"):
        np.testing.assert_array_equal(np.array(out[key]), np.array(out_loaded[key]))


def test_config_round_trip_restores_tuples() -> None:
    model = small_model("error", R_stack_sizes=(2, 4, 6))
    clone = PredNet.from_config(model.get_config())
    assert clone.R_stack_sizes == (2, 4, 6)
    assert clone.frame_shape == FRAME
    assert clone.output_mode == "error"
    assert [w.shape for w in clone.weights] == [w.shape for w in model.weights]


def test_with_output_mode_shares_weights() -> None:
    model = small_model("error")
    model.set_input_mean(np.full(FRAME, 0.45, np.float32))
    model.freeze([0])
    frames = random_frames()
    pred_model = with_output_mode(model, "prediction")
    all_model = with_output_mode(model, "all")
    assert pred_model.output_mode == "prediction"
    np.testing.assert_array_equal(pred_model.input_mean.numpy(), np.float32(0.45))
    out_all = all_model(frames)
    np.testing.assert_array_equal(np.array(model(frames)), np.array(out_all["errors"]))
    np.testing.assert_array_equal(np.array(pred_model(frames)), np.array(out_all["prediction"]))
    assert not pred_model.r_convs[0].trainable and pred_model.r_convs[1].trainable
    with pytest.raises(ValueError, match="output_mode"):
        with_output_mode(model, "frames")


# ---------------------------------------------------------------- training


def test_level_layers() -> None:
    model = small_model()
    assert model.level_layers(0) == [model.r_convs[0], model.ahat_convs[0]]
    assert model.level_layers(2) == [model.r_convs[2], model.ahat_convs[2], model.a_convs[1]]
    with pytest.raises(ValueError, match="level"):
        model.level_layers(3)


def test_freeze_really_freezes_and_survives_recompile() -> None:
    model = small_model("error")
    model.freeze([0, 1])
    frozen = {w.path for lvl in (0, 1) for layer in model.level_layers(lvl) for w in layer.weights}
    assert len(frozen) == 2 * 5  # r0, ahat0, r1, ahat1, a0: kernel + bias each
    clips = moving_square_clips(4, nt=NT)
    before = weights_by_path(model)
    for _ in range(2):  # compile, fit, compile again, fit again
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
        model.fit(clips, batch_size=2, epochs=1, verbose=0)
    after = weights_by_path(model)
    for path, value in before.items():
        if path in frozen or path.endswith("input_mean"):
            np.testing.assert_array_equal(after[path], value, err_msg=path)
        else:
            assert not np.array_equal(after[path], value), f"{path} did not train"


def test_train_and_test_step_accept_tuples() -> None:
    model = small_model("error")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    clips = moving_square_clips(2, nt=NT)
    logs = model.train_on_batch(clips, clips, return_dict=True)
    assert set(logs) == {"loss", "mae"}
    logs = model.test_on_batch((clips,), return_dict=True)
    assert logs["loss"] > 0 and 0 < logs["mae"] < 1
    x_only = tf.data.Dataset.from_tensor_slices((clips,)).batch(2)
    assert model.evaluate(x_only, return_dict=True, verbose=0)["loss"] == pytest.approx(
        logs["loss"]
    )
    with pytest.raises(ValueError, match="2 time steps"):
        model.test_on_batch(clips[:, :1])


@pytest.mark.slow
def test_short_fit_reduces_val_loss() -> None:
    keras.utils.set_random_seed(0)
    clips = moving_square_clips(48, nt=6, seed=0)
    train, val = clips[:40], clips[40:]
    model = small_model("error")
    model.set_input_mean(train.reshape(-1, *FRAME).mean(axis=0))
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    train_ds = tf.data.Dataset.from_tensor_slices(train).shuffle(40, seed=0).batch(8)
    val_ds = tf.data.Dataset.from_tensor_slices(val).batch(8)
    start = model.evaluate(val_ds, return_dict=True, verbose=0)
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=8,
        shuffle=False,  # the dataset shuffles itself
        verbose=0,
        callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", restore_best_weights=True)],
    )
    assert {"loss", "mae", "val_loss", "val_mae"} <= set(history.history)
    end = model.evaluate(val_ds, return_dict=True, verbose=0)
    assert end["loss"] < 0.8 * start["loss"], (start, history.history)
    assert end["mae"] < start["mae"]


# ---------------------------------------------------------------- validation and FLOPs


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"stack_sizes": (3, 4, 8)}, "channel count"),
        ({"frame_shape": (18, 16, 1)}, "divisible"),
        ({"A_filt_sizes": (3, 3, 3)}, "A_filt_sizes"),
        ({"Ahat_filt_sizes": (3, 3)}, "Ahat_filt_sizes"),
        ({"R_filt_sizes": (3,)}, "R_filt_sizes"),
        ({"R_stack_sizes": (1, 4)}, "R_stack_sizes"),
        ({"layer_loss_weights": (1.0,)}, "layer_loss_weights"),
        ({"output_mode": "frames"}, "output_mode"),
        ({"frame_shape": (16, 16)}, "frame_shape"),
    ],
)
def test_config_validation(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PredNet(**{**SMALL, **overrides})


def test_wrong_input_shape_is_rejected() -> None:
    model = small_model()
    with pytest.raises(ValueError, match="expects input"):
        model.build((None, NT, 8, 8, 1))


def test_flops_per_frame_matches_known_sizes() -> None:
    paper = {"frame_shape": (128, 160, 3), "stack_sizes": (3, 48, 96, 192)}
    assert flops_per_frame(paper) == pytest.approx(13.75e9, rel=0.01)
    assert flops_per_frame(PredNet()) == pytest.approx(0.38e9, rel=0.01)
    # One level: R conv (1+2 -> 4 channels) + Ahat conv (1 -> 1), 3x3 on 4x4.
    single = {"frame_shape": (4, 4, 1), "stack_sizes": (1,), "A_filt_sizes": ()}
    assert flops_per_frame(single) == 2 * 9 * 16 * (3 * 4 + 1 * 1)
