"""Training, warm start, freezing and the search, on tiny data (seconds, not minutes)."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from videoanom.data.dataset import SplitData
from videoanom.training.search import run_search
from videoanom.training.search_space import DEFAULTS, SEARCH_SPACE, Choice, suggest
from videoanom.training.trainer import TrainConfig, build_prednet, mean_frame, train_prednet
from videoanom.training.windows import copy_last_mae, gather, validation_starts

TINY = {
    "stack_sizes": "8,16",
    "filter_sizes": "3,3",
    "batch_size": 8,
    "learning_rate": 5e-3,
    "lr_decay": 0.0,
}


def scene(n_clips: int, n_frames: int = 30, seed: int = 0) -> SplitData:
    """A static textured background with sensor noise and a square walking right."""
    rng = np.random.default_rng(seed)
    background = np.random.default_rng(99).integers(40, 200, size=(16, 20)).astype(np.float32)
    frames, clip, number = [], [], []
    for c in range(n_clips):
        row = rng.integers(2, 10)
        for t in range(n_frames):
            frame = background.copy()
            x = (t + 3 * c) % 16
            frame[row : row + 4, x : x + 4] = 250
            frame += rng.normal(0, 6, frame.shape)
            frames.append(np.clip(frame, 0, 255).astype(np.uint8)[:, :, None])
            clip.append(c)
            number.append(t + 1)
    return SplitData(
        frames=np.stack(frames),
        clip=np.array(clip, np.int32),
        frame=np.array(number, np.int32),
        label=np.zeros(len(frames), np.int8),
        clips=[f"c{i}" for i in range(n_clips)],
    )


FAST = TrainConfig(
    nt=6, max_epochs=6, windows_per_epoch=96, max_val_windows=16, patience=3, verbose=0
)


@pytest.fixture(scope="module")
def tiny_data() -> tuple[SplitData, SplitData]:
    return scene(4, seed=1), scene(1, seed=2)


@pytest.fixture(scope="module")
def trained(tiny_data):
    train, val = tiny_data
    return train_prednet(TINY, train, val, FAST)


@pytest.mark.slow
def test_short_training_beats_copy_last_frame(trained) -> None:
    assert trained.val_mae < trained.copy_last_mae, trained.summary()
    history = trained.history["val_loss"]
    assert min(history) < history[0], "validation loss never improved"
    assert trained.val_loss == pytest.approx(min(history), rel=0.05), "best epoch must be kept"


def test_copy_last_baseline_is_mean_absolute_frame_difference() -> None:
    windows = np.zeros((1, 3, 2, 2, 1), np.uint8)
    windows[0, 1] = 255
    assert copy_last_mae(windows) == pytest.approx(1.0)  # both steps differ by 255 everywhere


def test_mean_frame_is_stored_in_the_model(trained, tiny_data) -> None:
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(trained.model.input_mean), mean_frame(tiny_data[0]), atol=1e-6
    )


@pytest.mark.slow
def test_warm_start_with_frozen_levels_really_freezes(trained, tiny_data, tmp_path: Path) -> None:
    train, val = tiny_data
    source = tmp_path / "source.keras"
    trained.model.save(source)
    loaded = keras.saving.load_model(source)
    config = TrainConfig(nt=6, max_epochs=2, windows_per_epoch=32, max_val_windows=8, verbose=0)
    result = train_prednet(TINY, train, val, config, init_model=loaded, freeze_levels=(0,))
    for before, after in zip(
        trained.model.level_layers(0), result.model.level_layers(0), strict=True
    ):
        for w0, w1 in zip(before.get_weights(), after.get_weights(), strict=True):
            np.testing.assert_array_equal(w0, w1)
    changed = [
        not np.array_equal(w0, w1)
        for before, after in zip(
            trained.model.level_layers(1), result.model.level_layers(1), strict=True
        )
        for w0, w1 in zip(before.get_weights(), after.get_weights(), strict=True)
    ]
    assert any(changed), "unfrozen levels should keep training"


def test_warm_start_refuses_another_frame_shape(tiny_data) -> None:
    train, val = tiny_data
    other = build_prednet(TINY, (32, 40, 1))
    other.build((None, 6, 32, 40, 1))
    with pytest.raises(ValueError, match=r"takes \(32, 40, 1\) frames"):
        train_prednet(TINY, train, val, FAST, init_model=other)


def test_validation_windows_need_nt_frames(tiny_data) -> None:
    with pytest.raises(ValueError, match="no validation clip has 40 consecutive frames"):
        validation_starts(tiny_data[1], 40, 10)
    assert gather(tiny_data[1].frames, np.array([0, 6]), 6).shape == (2, 6, 16, 20, 1)


def test_search_space_suggestions_stay_in_the_space() -> None:
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        params = suggest(study.ask())
        for name, dist in SEARCH_SPACE.items():
            if isinstance(dist, Choice):
                assert params[name] in dist.values
            else:
                assert dist.low <= params[name] <= dist.high
    assert set(DEFAULTS) == set(SEARCH_SPACE)


@pytest.mark.slow
def test_search_keeps_the_best_trial(tiny_data, tmp_path: Path) -> None:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("search-test")
    train, val = tiny_data
    space = {
        **SEARCH_SPACE,
        "stack_sizes": Choice(("8,16", "4,8")),
        "filter_sizes": Choice(("3,3",)),
    }
    config = TrainConfig(nt=6, max_epochs=2, windows_per_epoch=32, max_val_windows=8, verbose=0)
    with mlflow.start_run():
        result = run_search(train, val, tmp_path / "out", 2, config, space=space, first_params=TINY)
    assert len(result.trials) == 2
    assert result.trials[0]["params"]["stack_sizes"] == "8,16", "first trial = defaults"
    kept = [t for t in result.trials if not t["pruned"]]
    assert result.best.val_loss == pytest.approx(min(t["val_loss"] for t in kept))
    reloaded = keras.saving.load_model(result.model_path)
    x = gather(val.frames, np.array([0]), 6).astype("float32") / 255
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), result.best.model.predict(x, verbose=0)
    )
    runs = mlflow.search_runs(experiment_names=["search-test"])
    assert len(runs) == 3, "one parent run and one nested run per trial"


def test_one_trial_with_fixed_hyperparameters_uses_exactly_them(tiny_data, tmp_path: Path) -> None:
    """How each HyperDrive / sweep trial runs the train step: a one-point space."""
    import mlflow

    from videoanom.steps.train import build_parser, fixed_space

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("one-trial")
    flags = ["--prepared-data", "p", "--trained-model", "t", "--trials", "1"]
    flags += ["--batch-size", "4", "--stack-sizes", "4,8", "--filter-sizes", "3,3"]
    flags += ["--learning-rate", "0.004"]
    space = fixed_space(build_parser().parse_args(flags))
    config = TrainConfig(nt=6, max_epochs=1, windows_per_epoch=16, max_val_windows=4, verbose=0)
    train, val = tiny_data
    with mlflow.start_run() as outer:
        result = run_search(
            train,
            val,
            tmp_path / "out",
            1,
            config,
            space=space,
            first_params={k: d.values[0] for k, d in space.items()},
        )
    assert result.trials[0]["params"] == {
        "batch_size": 4,
        "filter_sizes": "3,3",
        "stack_sizes": "4,8",
        "learning_rate": 0.004,
        "lr_decay": DEFAULTS["lr_decay"],
    }
    curve = mlflow.MlflowClient().get_metric_history(outer.info.run_id, "val_loss")
    assert [m.step for m in curve] == [1], "the epoch curve is on the step's own run too"
