"""Per-frame features from a PredNet: rows, windows, bounded streaming, localisation."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_prednet

from videoanom.prednet import PredNet
from videoanom.scoring import features as feat
from videoanom.scoring.features import ExtractConfig, FeatureSet, extract_features

REQUIRED = [
    "err_mean",
    "err_std",
    "err_p50",
    "err_p75",
    "err_p90",
    "err_p95",
    "err_p99",
    "psnr",
    "err_cell_max",
    "layer1_err",
    "layer2_err",
    "frame_diff",
]


@pytest.fixture(scope="module")
def model() -> PredNet:
    return tiny_prednet()


def clip_frames(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    background = rng.integers(60, 120, size=(size, size, 1))
    frames = []
    for t in range(n):
        frame = background.copy()
        x = t % (size - 4)
        frame[4:8, x : x + 4] = 220
        frames.append(np.clip(frame + rng.normal(0, 3, frame.shape), 0, 255).astype(np.uint8))
    return np.stack(frames)


def test_rows_order_and_required_columns(model):
    frames = clip_frames(23)
    labels = (np.arange(23) >= 10).astype(int)
    fs = extract_features(
        model,
        iter(frames),
        "c1",
        ExtractConfig(window=8, warmup=2, batch_size=2),
        labels,
        "vehicle",
    )
    assert len(fs) == 23
    assert fs.table["frame"].tolist() == list(range(1, 24))
    assert (fs.table["clip"] == "c1").all() and (fs.table["kind"] == "vehicle").all()
    assert fs.table["label"].tolist() == labels.tolist()
    for col in REQUIRED:
        assert col in fs.table.columns, col
    assert fs.cells["pred_error"].shape == (23, 2, 2)
    assert fs.cells["frame_diff"].shape == (23, 2, 2)
    assert fs.cells["flow_dir"].shape == (23, 2, 2, feat.FLOW_BINS)
    assert np.isfinite(fs.table[fs.feature_columns].to_numpy()).all()
    assert all(np.isfinite(maps).all() for maps in fs.cells.values())
    # frame 1 has no prediction: it copies frame 2
    cols = fs.feature_columns
    np.testing.assert_array_equal(fs.table.loc[0, cols], fs.table.loc[1, cols])
    np.testing.assert_array_equal(fs.cells["pred_error"][0], fs.cells["pred_error"][1])


@pytest.mark.parametrize("n", [2, 3])
def test_short_clips(model, n):
    fs = extract_features(model, iter(clip_frames(n)), "short", ExtractConfig(window=8, warmup=2))
    assert fs.table["frame"].tolist() == list(range(1, n + 1))
    assert np.isfinite(fs.table[fs.feature_columns].to_numpy()).all()


def test_chunks_continue_the_recurrent_state_exactly(model):
    """A stream fed ``chunk`` steps at a time, each call continuing from the state the one
    before left, predicts exactly what one call over the whole stream predicts."""
    frames = clip_frames(30)
    chunked = extract_features(
        model, iter(frames), "c", ExtractConfig(window=32, chunk=8, warmup=2, batch_size=1)
    )
    whole = extract_features(
        model, iter(frames), "c", ExtractConfig(window=32, chunk=32, warmup=2, batch_size=1)
    )
    assert chunked.table["frame"].tolist() == whole.table["frame"].tolist() == list(range(1, 31))
    cols = chunked.feature_columns
    np.testing.assert_allclose(chunked.table[cols], whole.table[cols], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(chunked.cells["pred_error"], whole.cells["pred_error"], atol=1e-6)


def test_stream_boundaries_match_one_long_window(model):
    frames = clip_frames(30)
    short = extract_features(
        model, iter(frames), "c", ExtractConfig(window=8, warmup=2, batch_size=2)
    )
    long = extract_features(
        model, iter(frames), "c", ExtractConfig(window=32, warmup=2, batch_size=1)
    )
    assert short.table["frame"].tolist() == long.table["frame"].tolist() == list(range(1, 31))
    # the first stream has the same context: identical
    np.testing.assert_allclose(short.table["err_mean"][:8], long.table["err_mean"][:8], rtol=1e-5)
    # later streams rebuild context from `warmup` frames: close (an untrained model's state
    # depends more on history than a trained one's), no gaps or duplicates
    np.testing.assert_allclose(short.table["err_mean"], long.table["err_mean"], rtol=0.25)
    np.testing.assert_allclose(short.table["frame_diff"], long.table["frame_diff"], rtol=1e-5)
    # the optical flow needs only the frame before: stream boundaries never change it
    np.testing.assert_allclose(short.cells["flow_dir"], long.cells["flow_dir"], atol=1e-6)


@pytest.mark.parametrize("n", [1, 2, 5, 40, 119, 120, 121, 500, 933, 934, 2000])
def test_streams_cover_every_frame_once(n):
    """Kept frames of all streams are the clip's frames 1..n, each once, in order; no stream
    is longer than ``window``, no batch larger than ``batch_size``; a short clip's streams are
    cut to need as few model calls as possible."""
    config = ExtractConfig()
    frames = (np.full((4, 4, 1), i % 256, np.uint8) for i in range(n))
    kept, batches = [], list(feat._stream_batches(frames, config))
    for streams in batches:
        assert 1 <= len(streams) <= config.batch_size
        for w, start, offset in streams:
            assert 1 <= len(w) <= config.window
            np.testing.assert_array_equal(w[:, 0, 0, 0], np.arange(start, start + len(w)) % 256)
            kept.extend(range(start + offset, start + len(w)))
    assert kept == list(range(n))
    assert sum(len(streams) for streams in batches[:-1]) == config.batch_size * (len(batches) - 1)
    if n <= 4 * config.chunk:  # four 40-frame streams fit one batch: one call
        assert len(batches) == 1 and max(len(w) for w, _, _ in batches[0]) <= config.chunk


@pytest.mark.parametrize(("dy", "dx", "direction"), [(0, 1, 4), (0, -1, 0), (1, 0, 6), (-1, 0, 2)])
def test_flow_directions_bin_the_motion_of_a_moving_patch(dy, dx, direction):
    """A textured patch moving 1 px/frame puts its cell's flow mass in the bin of its
    direction (bin 0 points along -x, bins go counter-clockwise in image coordinates, y down);
    a still background has (almost) none."""
    rng = np.random.default_rng(0)
    canvas = np.full((40, 40), 100.0)
    patch = rng.uniform(0, 255, (10, 10))
    frames = []
    for t in range(4):
        img = canvas.copy()
        y, x = 15 + dy * t, 15 + dx * t
        img[y : y + 10, x : x + 10] = patch
        frames.append(img)
    frames = np.stack(frames).astype(np.uint8)[..., None]
    hist = feat._flow_directions(frames, 8)
    assert hist.shape == (3, 5, 5, feat.FLOW_BINS)
    centre = hist[:, 2, 2]  # the cell of pixels 16-23, inside the patch throughout
    assert (centre.argmax(axis=1) == direction).all()
    assert (centre[:, direction] > 0.5 * centre.sum(axis=1)).all()
    assert hist[:, 0, 0].sum() < 0.01 * centre.sum()
    # colour frames: the same histograms from their luma
    rgb = np.repeat(frames, 3, axis=-1)
    np.testing.assert_allclose(feat._flow_directions(rgb, 8), hist, atol=1e-5)


def moving_patch(n: int, dy: int, dx: int, size: int = 40) -> np.ndarray:
    """(n, size, size, 1) uint8: a textured 10x10 patch moving (dy, dx) px/frame."""
    rng = np.random.default_rng(0)
    patch = rng.uniform(0, 255, (10, 10))
    frames = np.full((n, size, size), 100.0)
    for t in range(n):
        y, x = 15 + dy * t, 15 + dx * t
        frames[t, y : y + 10, x : x + 10] = patch
    return frames.astype(np.uint8)[..., None]


def test_motion_is_measured_on_every_other_frame():
    """Even clip frames and frame 1 get the flow from the frame before (the same histograms
    as measuring every frame); every later odd frame repeats the even frame before it."""
    frames = moving_patch(12, 0, 1)
    every = feat._flow_directions(frames, 8)  # frames 1..11
    rows = feat._motion_every_other_frame(frames, 0, 1, 12, 8)
    assert rows.shape == every.shape
    measured = np.arange(1, 12) % 2 == 0
    measured[0] = True  # frame 1
    assert not np.isnan(rows[measured]).any() and np.isnan(rows[~measured]).all()
    np.testing.assert_allclose(rows[measured], every[measured], atol=1e-6)
    full = feat._fill_odd_motion(np.concatenate([rows[:1], rows]))  # frame 0 copies frame 1
    assert not np.isnan(full).any()
    np.testing.assert_array_equal(full[3::2], full[2:-1:2])
    assert (full[:, 2, 2].argmax(axis=1) == 4).all()  # the patch moves along +x throughout


def test_motion_of_a_stream_depends_on_clip_frame_numbers_only():
    """A stream starting mid-clip gets the rows the whole clip gets for the same frames."""
    frames = moving_patch(16, 1, 0)
    whole = feat._motion_every_other_frame(frames, 0, 1, 16, 8)
    for start in (3, 4):  # odd and even first frames
        part = feat._motion_every_other_frame(frames[start:], start, 1, 16 - start, 8)
        np.testing.assert_array_equal(part, whole[start:])
    with pytest.raises(ValueError, match="clip frame 4 needs the frame before"):
        feat._motion_every_other_frame(frames[4:], 4, 0, 12, 8)


@pytest.mark.parametrize(("window", "chunk"), [(8, 8), (12, 4)])
def test_generator_is_consumed_lazily(model, monkeypatch, window, chunk):
    config = ExtractConfig(window=window, chunk=chunk, warmup=2, batch_size=2)
    pulled = {"n": 0}
    ahead = []
    real_runner = feat._runner

    def spy_runner(m, steps):
        run = real_runner(m, steps)

        def wrapped(x, state):
            ahead.append(pulled["n"])
            return run(x, state)

        return wrapped

    monkeypatch.setattr(feat, "_runner", spy_runner)
    frames = clip_frames(12)

    def gen():
        for i in range(400):
            pulled["n"] += 1
            yield frames[i % 12]

    fs = extract_features(model, gen(), "long", config)
    assert len(fs) == 400
    assert fs.table["frame"].tolist() == list(range(1, 401))
    assert len(ahead) > 10
    # at each model call, at most one batch of streams (plus one frame) was read
    calls_per_batch = window // chunk
    full = window + (config.batch_size - 1) * (window - config.warmup)
    for i, n in enumerate(ahead[:-calls_per_batch]):
        assert n <= full + (i // calls_per_batch) * (full - config.warmup) + 1


def test_localized_anomaly_raises_max_cell_more_than_mean():
    model = tiny_prednet(32)
    rng = np.random.default_rng(1)
    background = rng.integers(60, 120, size=(32, 32, 1))
    frames = np.clip(background + rng.normal(0, 3, (30, 32, 32, 1)), 0, 255).astype(np.uint8)
    model.set_input_mean(frames.mean(axis=0).astype(np.float32) / 255.0)
    frames[20, 16:24, 16:24] = 255  # a small bright object appears for one frame
    fs = extract_features(model, iter(frames), "a", ExtractConfig(window=8, warmup=2, batch_size=2))
    t = fs.table
    normal = t.index.isin(range(5, 19))

    def ratio(col):
        return t.loc[20, col] / t.loc[normal, col].median()  # row 20 = frame 21

    assert ratio("err_cell_max") > 1.5 * ratio("err_mean")
    assert ratio("err_cell_max") > 2.0


def test_save_load_concat(tmp_path, model):
    config = ExtractConfig(window=8, warmup=2, batch_size=2)
    a = extract_features(model, iter(clip_frames(9)), "a", config, labels=np.zeros(9, int))
    b = extract_features(
        model, iter(clip_frames(5, seed=3)), "b", config, labels=np.ones(5, int), kind="k"
    )
    both = FeatureSet.concat([a, b])
    assert len(both) == 14 and both.cells["pred_error"].shape[0] == 14
    both.save(tmp_path / "fs")
    assert not list((tmp_path / "fs").glob("*.pkl"))
    loaded = FeatureSet.load(tmp_path / "fs")
    assert loaded.table["clip"].tolist() == both.table["clip"].tolist()
    assert loaded.table["kind"].tolist() == ["", *[""] * 8, *["k"] * 5][:14]
    np.testing.assert_allclose(
        loaded.table[both.feature_columns].to_numpy(),
        both.table[both.feature_columns].to_numpy(),
        rtol=1e-6,
    )
    for key in both.cells:
        np.testing.assert_array_equal(loaded.cells[key], both.cells[key])
