"""The frozen app config: flags win over environment, which wins over defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from appconfig import PROJECT_DIR, build_config


def test_defaults_live_in_the_project_data_folder():
    config = build_config([], env={})
    assert config.data_dir == PROJECT_DIR / "data"
    assert config.db_path == PROJECT_DIR / "data" / "polypturing.db"
    assert (config.host, config.port, config.device) == ("127.0.0.1", 7860, "auto")


def test_environment_then_flags():
    env = {"POLYP_DATA_DIR": "/d", "PORT": "9000", "POLYP_DEVICE": "cpu"}
    config = build_config([], env=env)
    assert (config.data_dir, config.checkpoints_dir, config.port, config.device) == (Path("/d"), Path("/d/checkpoints"), 9000, "cpu")
    assert build_config(["--port", "7000", "--db", "/x.db"], env=env).port == 7000
    assert build_config(["--db", "/x.db"], env=env).db_path == Path("/x.db")


@pytest.mark.parametrize("env", [{"PORT": "http"}, {"PORT": "70000"}, {"POLYP_DEVICE": "tpu"}])
def test_bad_environment_values_are_refused(env, capsys):
    with pytest.raises(SystemExit):
        build_config([], env=env)
    assert next(iter(env)) in capsys.readouterr().err


def test_config_is_frozen():
    config = build_config([], env={})
    with pytest.raises(AttributeError):
        config.port = 1


def test_base_pipeline_for_training_outputs():
    assert build_config([], env={}).base is None
    assert build_config([], env={"POLYP_BASE": "/sd"}).base == Path("/sd")
    assert build_config(["--base", "/other"], env={"POLYP_BASE": "/sd"}).base == Path("/other")


def test_kiosk_flags_and_its_own_database():
    config = build_config([], env={"POLYP_DATA_DIR": "/d"})
    assert (config.kiosk, config.kiosk_db_path, config.kiosk_idle_s) == (False, Path("/d/kiosk.db"), 75.0)
    assert config.kiosk_db_path != config.db_path
    env = {"POLYP_KIOSK_DB": "/k.db", "POLYP_KIOSK_IDLE": "30"}
    assert (build_config([], env=env).kiosk_db_path, build_config([], env=env).kiosk_idle_s) == (Path("/k.db"), 30.0)
    flags = build_config(["--kiosk", "--kiosk-db", "/f.db", "--kiosk-idle", "2"], env=env)
    assert (flags.kiosk, flags.kiosk_db_path, flags.kiosk_idle_s) == (True, Path("/f.db"), 2.0)


@pytest.mark.parametrize("env", [{"POLYP_KIOSK_IDLE": "soon"}, {"POLYP_KIOSK_IDLE": "0"}])
def test_bad_kiosk_idle_times_are_refused(env, capsys):
    with pytest.raises(SystemExit):
        build_config([], env=env)
    assert "idle" in capsys.readouterr().err.lower()


def test_config_from_keyword_flags_skips_none(tmp_path) -> None:
    from appconfig import build_config, config_from

    env = {"POLYP_DATA_DIR": str(tmp_path / "env-data")}
    assert config_from(env, db=tmp_path / "x.db", data_dir=None) == build_config(["--db", str(tmp_path / "x.db")], env)
    assert config_from(env, kiosk_db=tmp_path / "k.db", device="cpu").kiosk_db_path == tmp_path / "k.db"
    assert config_from(env).data_dir == tmp_path / "env-data"
