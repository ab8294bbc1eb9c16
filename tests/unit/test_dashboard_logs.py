"""The dashboard's log tail: only configured models, never outside the log directory, bounded
in lines and in bytes read."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlsup import defaults
from mlsup.dashboard.logs import check_lines, check_model_id, read_log_tail, tail_lines
from mlsup.errors import ConfigError, ModelNotFound


def test_tail_lines_keeps_the_last_n() -> None:
    assert tail_lines(b"a\nb\nc\n", 2, truncated=False) == ["b", "c"]
    assert tail_lines(b"a\nb", 5, truncated=False) == ["a", "b"]


def test_tail_lines_drops_a_partial_first_line_of_a_truncated_read() -> None:
    assert tail_lines(b"rt of a line\nwhole\n", 10, truncated=True) == ["whole"]
    assert tail_lines(b"\nwhole\n", 10, truncated=True) == ["", "whole"]


def test_tail_lines_replaces_undecodable_bytes() -> None:
    assert tail_lines(b"ok \xff\xfe\n", 1, truncated=False) == ["ok \ufffd\ufffd"]


@pytest.mark.parametrize("model", ["nope", "../etc/passwd", "", "a/b", "x" * 10_000])
def test_unknown_models_are_refused(model: str) -> None:
    with pytest.raises(ModelNotFound, match="configured: a, b") as info:
        check_model_id(model, {"a", "b"})
    assert len(str(info.value)) < 200  # a hostile id is not echoed whole


@pytest.mark.parametrize("lines", [0, -1, defaults.DASHBOARD_LOG_MAX_LINES + 1])
def test_line_counts_are_bounded(lines: int) -> None:
    with pytest.raises(ConfigError, match="lines must be within"):
        check_lines(lines)


def test_reads_the_tail_of_a_configured_model(tmp_path: Path) -> None:
    (tmp_path / "m.log").write_text("".join(f"line {i}\n" for i in range(10)))
    tail = read_log_tail(tmp_path, "m", {"m"}, 3)
    assert tail.lines == ["line 7", "line 8", "line 9"]
    assert tail.truncated and tail.exists


def test_a_model_without_a_log_yet_has_an_empty_tail(tmp_path: Path) -> None:
    tail = read_log_tail(tmp_path, "m", {"m"}, 3)
    assert (tail.lines, tail.exists, tail.truncated) == ([], False, False)


def test_reads_at_most_max_bytes_from_the_end(tmp_path: Path) -> None:
    (tmp_path / "big.log").write_bytes(b"x" * 5000 + b"\n" + b"last line\n")
    tail = read_log_tail(tmp_path, "big", {"big"}, 100, max_bytes=64)
    assert tail.lines == ["last line"]
    assert tail.truncated


def test_a_manifest_id_naming_another_directory_is_refused(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (tmp_path / "secret.log").write_text("secret\n")
    with pytest.raises(ModelNotFound, match="no log file"):
        read_log_tail(logs, "../secret", {"../secret"}, 10)


def test_an_unknown_model_reads_nothing(tmp_path: Path) -> None:
    (tmp_path / "other.log").write_text("x\n")
    with pytest.raises(ModelNotFound):
        read_log_tail(tmp_path, "other", {"m"}, 10)
