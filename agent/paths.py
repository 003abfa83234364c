"""Per-user directories (XDG on Linux, via platformdirs; honours $XDG_*_HOME)."""

from __future__ import annotations

from pathlib import Path

import platformdirs

APP = "v4code"


def config_dir() -> Path:
    return Path(platformdirs.user_config_dir(APP, appauthor=False))


def cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir(APP, appauthor=False))


def state_dir() -> Path:
    return Path(platformdirs.user_state_dir(APP, appauthor=False))


def user_config_file() -> Path:
    return config_dir() / "config.toml"
