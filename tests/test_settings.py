from pathlib import Path

import pytest

from ml_service.util.env_variables import Settings, SettingsError, describe_settings

ROOT = Path(__file__).resolve().parents[1]


def test_precedence_flag_then_env_then_dotenv_then_default(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("VIDEOANOM_TRIALS=5\nVIDEOANOM_MAX_EPOCHS=7\nVIDEOANOM_NT=6\n")
    environ = {"VIDEOANOM_TRIALS": "9", "VIDEOANOM_MAX_EPOCHS": "8"}
    settings = Settings.load({"trials": 2, "max_epochs": None}, env_file=env_file, environ=environ)
    assert settings.trials == 2  # flag
    assert settings.max_epochs == 8  # environment
    assert settings.nt == 6  # .env
    assert settings.image_height == 64  # default


def test_default_tracking_uri_is_sqlite_under_home(tmp_path: Path) -> None:
    settings = Settings.load({"home": str(tmp_path / "h")}, env_file=None, environ={})
    assert settings.tracking_uri == f"sqlite:///{tmp_path / 'h' / 'mlflow.db'}"
    assert settings.step_environment()["MLFLOW_TRACKING_URI"] == settings.tracking_uri


def test_bad_value_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="VIDEOANOM_TRIALS='many' is not a whole number"):
        Settings.load(env_file=None, environ={"VIDEOANOM_TRIALS": "many"})


def test_env_example_lists_every_variable() -> None:
    text = (ROOT / ".env.example").read_text()
    missing = [name for name, _, _ in describe_settings() if f"{name}=" not in text]
    assert not missing, f".env.example lacks {missing}"
