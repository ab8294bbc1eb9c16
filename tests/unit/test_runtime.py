from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mlsup.errors import ConfigError
from mlsup.runtime import ensure_runtime_dir, runtime_dir


def test_runtime_dir_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSUP_RUNTIME_DIR", "/x/y")
    assert runtime_dir() == Path("/x/y")
    monkeypatch.delenv("MLSUP_RUNTIME_DIR")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/5")
    assert runtime_dir() == Path("/run/user/5/mlsup")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert runtime_dir() == Path(f"/tmp/mlsup-{os.getuid()}")


def test_created_private_and_tightened(tmp_path: Path) -> None:
    path = ensure_runtime_dir(tmp_path / "a" / "rt")
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    path.chmod(0o755)
    ensure_runtime_dir(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700


def test_a_file_in_the_way_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "rt"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="not a directory"):
        ensure_runtime_dir(blocker)
