"""What a bare GPUBoss() takes from the workstation's mlsup.toml (explicit arguments win)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlsup.kit.leases.workstation import boss_defaults
from mlsup.kit.manifest import CONFIG_ENV, parse_manifest

MANIFEST = parse_manifest(
    {
        "redis": {"url": "redis://box:6379/2", "prefix": "team:"},
        "devices": [{"index": 0, "memory_mb": 4000}],
    },
    source="mlsup.toml",
    base_dir=Path("/"),
)


def test_the_manifest_fills_what_is_left_out() -> None:
    settings = boss_defaults(None, None, None, MANIFEST)
    assert settings.redis_url == "redis://box:6379/2" and settings.prefix == "team:"
    assert settings.devices == [{"index": 0, "memory_mb": 4000}]


def test_explicit_arguments_win() -> None:
    settings = boss_defaults("redis://other/0", "", [{"index": 1, "memory_mb": 10}], MANIFEST)
    assert settings.redis_url == "redis://other/0" and settings.prefix == ""
    assert settings.devices == [{"index": 1, "memory_mb": 10}]


def test_without_a_config_nothing_is_invented(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    settings = boss_defaults(None, None, None)
    # The URL is resolved at connect ($MLSUP_REDIS_URL, the published one, else ConfigError);
    # devices then come from NVML, Redis, or the CPU rule.
    assert (settings.redis_url, settings.prefix, settings.devices) == (None, "", None)


def test_the_config_is_read_from_mlsup_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "mlsup.toml"
    config.write_text('[redis]\nprefix = "from-env:"\n')
    monkeypatch.setenv(CONFIG_ENV, str(config))
    assert boss_defaults("redis://x/0", None, [{"index": 0, "memory_mb": 1}]).prefix == "from-env:"
