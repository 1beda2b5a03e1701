"""Settings: validation, layering, and how they reach the runtime."""

from __future__ import annotations

from pathlib import Path

import pytest

from riera.config import Settings, load_settings, setting_sources
from riera.errors import ConfigError


def test_defaults_are_sane(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for k in list(__import__("os").environ):
        if k.startswith("RIERA_"):
            monkeypatch.delenv(k)
    s = load_settings()
    assert s.workers >= 1 and s.exchange == "auto" and s.shm_dir == Path("/dev/shm")
    assert all(v == "default" for v in setting_sources(s).values())


def test_argument_beats_env_beats_toml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "riera.toml").write_text('workers = 5\nexchange = "shm"\nmax_task_retries = 7\n')
    monkeypatch.setenv("RIERA_WORKERS", "4")
    assert load_settings().workers == 4
    assert load_settings().max_task_retries == 7
    assert load_settings(workers=2).workers == 2
    assert setting_sources(load_settings())["max_task_retries"] == "riera.toml"


def test_invalid_values_name_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="workers"):
        load_settings(workers=0)
    with pytest.raises(ConfigError, match="start_method"):
        load_settings(start_method="telepathy")
    (tmp_path / "riera.toml").write_text("wrokers = 3\n")
    with pytest.raises(ConfigError, match="wrokers"):
        load_settings()


def test_settings_are_frozen_and_replace_validates() -> None:
    s = load_settings(workers=2)
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        s.workers = 3  # type: ignore[misc]
    assert s.replace(workers=3).workers == 3
    with pytest.raises(ConfigError):
        s.replace(workers=-1)
    assert isinstance(s.replace(), Settings)


def test_home_is_expanded() -> None:
    assert "~" not in str(load_settings(home="~/x").home)


def test_env_values_are_parsed_by_type_and_names_ignore_case(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RIERA_SPILL", "false")
    monkeypatch.setenv("riera_inline_bytes", "0")
    monkeypatch.setenv("RIERA_SHM_BUDGET", "1048576")
    monkeypatch.setenv("RIERA_NOT_A_SETTING", "whatever")  # other RIERA_* variables are not ours
    s = load_settings()
    assert (s.spill, s.inline_bytes, s.shm_budget) == (False, 0, 1048576)
    sources = setting_sources(s)
    assert sources["spill"] == sources["inline_bytes"] == sources["shm_budget"] == "env"
    monkeypatch.setenv("RIERA_WORKERS", "many")
    with pytest.raises(ConfigError, match=r"'workers' \(env RIERA_WORKERS.*got 'many'"):
        load_settings()


def test_a_broken_settings_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bad = tmp_path / "conf.toml"
    bad.write_text("workers = \n")
    monkeypatch.setenv("RIERA_CONFIG", str(bad))
    with pytest.raises(ConfigError, match=r"cannot read the settings file .*conf\.toml"):
        load_settings()
