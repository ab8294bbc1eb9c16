"""What ``mlsup status``, ``leases`` and ``load`` show, from JSON-shaped rows, without a
supervisor."""

from __future__ import annotations

import io
from typing import Any

import msgspec
import pytest
from rich.console import Console, RenderableType

from mlsup.supervisor.render import (
    LoadOutcome,
    leases_table,
    load_line,
    load_view,
    plain_rows,
    status_table,
)


def render(renderable: RenderableType, *, terminal: bool = False) -> str:
    out = io.StringIO()
    # Like the CLI's console: rich picks colours for a terminal, none for a pipe or a file.
    colours = "standard" if terminal else "auto"
    console = Console(file=out, width=200, force_terminal=terminal, color_system=colours)
    console.print(renderable)
    return out.getvalue()


def row(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": "smollm2", "loader": "gguf", "state": "ready", "stage": "", "pid": 4242,
        "endpoint": "ipc:///x", "generation": 1, "gpu": 0, "leased_mb": 600, "lease_id": "ab",
        "measured_mb": 512, "restarts": 1, "requests": 7, "idle_s": 3.5, "priority": "normal",
        "exit_code": None, "last_exit": None, "reason": None, "error": None, "timeline": {},
        "bytes_read": None, "bytes_total": None,
    }  # fmt: skip
    return {**base, **fields}


def cells(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line.strip()]


def test_status_shows_one_line_per_model_with_its_counts() -> None:
    rows = [row(), row(model="minilm", state="unloaded", pid=None, gpu=None, leased_mb=None,
                       measured_mb=None, restarts=0, requests=0, idle_s=None,
                       reason="unloaded on request")]  # fmt: skip
    lines = cells(render(status_table(rows)))
    assert lines[0] == ["MODEL", "STATE", "PID", "GPU", "LEASED", "MB", "MEASURED", "MB",
                        "RESTARTS", "IDLE", "S", "REQUESTS", "NOTE"]  # fmt: skip
    assert lines[1] == ["smollm2", "ready", "4242", "0", "600", "512", "1", "3.5", "7", "-"]
    assert lines[2][:9] == ["minilm", "unloaded", "-", "-", "-", "-", "0", "-", "0"]
    assert " ".join(lines[2][9:]) == "unloaded on request"


def test_status_notes_say_what_a_model_is_doing_or_why_it_failed() -> None:
    starting = row(state="starting", stage="loading m.gguf with gguf",
                   bytes_read=3 << 20, bytes_total=12 << 20)  # fmt: skip
    failed = row(model="bad", state="failed", error={"type": "ModelLoadError",
                 "message": "cannot load /m/bad.gguf", "context": {}})  # fmt: skip
    text = render(status_table([starting, failed]))
    assert "loading m.gguf with gguf (3.0 MiB of 12.0 MiB)" in text
    assert "cannot load /m/bad.gguf" in text


def test_no_models_and_no_leases_say_so() -> None:
    assert render(status_table([])).strip() == "no models in the manifest"
    assert render(leases_table([])).strip() == "no leases"


def test_states_are_coloured_on_a_terminal_only() -> None:
    table = status_table([row(), row(model="bad", state="failed")])
    assert "\x1b[" in render(table, terminal=True)
    assert "\x1b[" not in render(table)


def test_no_color_turns_colour_off_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    def on_a_terminal() -> str:
        out = io.StringIO()
        Console(file=out, force_terminal=True, color_system="standard").print(status_table([row()]))
        return out.getvalue()

    green = ";32m"  # "ready" is bold green
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert green in on_a_terminal()
    monkeypatch.setenv("NO_COLOR", "1")
    plain = on_a_terminal()
    assert "smollm2" in plain and "ready" in plain and green not in plain


def lease(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "gpu": 0, "capacity_mb": 1000, "id": "1a2b", "model_id": "smollm2", "vram_mb": 600,
        "priority": "normal", "owner": "host:42", "pid": 42, "host": "host", "epoch": 1,
        "age_s": 12.345678, "expires_in_s": 9.1, "preempt_in_s": None,
    }  # fmt: skip
    return {**base, **fields}


def test_leases_show_who_holds_what_and_how_full_each_gpu_is() -> None:
    rows = [lease(), lease(id="3c4d", model_id="minilm", vram_mb=300, priority="low",
                           preempt_in_s=4.25)]  # fmt: skip
    text = render(leases_table(rows))
    lines = cells(text)
    assert lines[1] == ["0", "1a2b", "smollm2", "600", "normal", "42", "host", "12.3", "-"]
    assert lines[2][:8] == ["0", "3c4d", "minilm", "300", "low", "42", "host", "12.3"]
    assert "asked to yield; revoked in 4.2 s" in text
    assert "GPU 0: 900 of 1000 MB leased" in text


def test_loading_shows_stage_and_bytes_then_ready() -> None:
    view = load_view(row(state="starting", stage="loading m.gguf with gguf",
                         bytes_read=1 << 20, bytes_total=4 << 20))  # fmt: skip
    assert view.outcome is LoadOutcome.WAITING
    assert view.description == "smollm2: starting loading m.gguf with gguf"
    assert (view.completed, view.total) == (1 << 20, 4 << 20)
    assert load_line(view, 1.25) == (
        "[   1.2 s] smollm2: starting loading m.gguf with gguf (1.0 MiB of 4.0 MiB)"
    )
    ready = load_view(row())
    assert ready.outcome is LoadOutcome.READY
    assert ready.description == "smollm2 is ready: pid 4242, 600 MB on GPU 0"


def test_waiting_for_vram_and_respawning_are_named() -> None:
    leasing = load_view(row(state="leasing", pid=None))
    assert leasing.description == "smollm2: leasing waiting for VRAM"
    assert leasing.total is None and load_line(leasing, 0).endswith("waiting for VRAM")
    backoff = load_view(row(state="backoff", last_exit="exited with signal SIGKILL"))
    assert "respawning after a crash (exited with signal SIGKILL)" in backoff.description


def test_a_failed_load_says_why() -> None:
    error = {"type": "ModelLoadError", "message": "cannot load /m/x.gguf", "context": {}}
    failed = load_view(row(state="failed", error=error))
    assert failed.outcome is LoadOutcome.FAILED
    assert failed.description == "smollm2 did not load: cannot load /m/x.gguf"
    lost = load_view(row(state="unloaded", reason="lease timed out"))
    assert lost.description == "smollm2 did not load: lease timed out"


class TypedRow(msgspec.Struct):
    model: str
    state: str
    requests: int


def test_typed_rows_render_like_mappings() -> None:
    rows = plain_rows([TypedRow("smollm2", "ready", 2), {"model": "m", "state": "x"}])
    assert rows == [
        {"model": "smollm2", "state": "ready", "requests": 2},
        {"model": "m", "state": "x"},
    ]
    assert "smollm2" in render(status_table(rows))
