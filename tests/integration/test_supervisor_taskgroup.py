"""The supervisor in-process: its background tasks run in one task group, so a bug in one of
them ends ``serve()`` with that error after the same clean shutdown — never only a log line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mlsup.contracts import ExitReason
from mlsup.supervisor.config import SupervisorConfig
from mlsup.supervisor.daemon import Supervisor
from mlsup.supervisor.models import ModelRecord
from mlsup.supervisor.states import ModelState
from mlsup.testing.redis import TestRedis
from mlsup.testing.supervisor import manifest

from .test_supervisor import PROBE, leases_under


def _supervisor(tmp_path: Path, redis_server: TestRedis, prefix: str) -> Supervisor:
    config = tmp_path / "sup.toml"
    config.write_text(manifest(redis_server.url, prefix, PROBE))
    (tmp_path / "probe.txt").write_text("probe\n")
    return Supervisor(SupervisorConfig.load(config), log=lambda line: None)


async def test_a_bug_in_a_lifecycle_task_ends_serving_cleanly_and_is_raised(
    tmp_path: Path, runtime_dir: Path, redis_server: TestRedis, redis_prefix: str
) -> None:
    supervisor = _supervisor(tmp_path, redis_server, redis_prefix)
    await supervisor.start()

    async def broken_bring_up(record: ModelRecord) -> None:
        raise RuntimeError("a bug in the supervisor")

    supervisor.bring_up = broken_bring_up  # type: ignore[method-assign]
    serving = asyncio.ensure_future(supervisor.serve())
    while supervisor._group is None:
        await asyncio.sleep(0)
    await supervisor.ensure("probe", wait=False)
    with pytest.raises(Exception) as info:  # an ExceptionGroup (ruff's target is still 3.10)
        await asyncio.wait_for(serving, 60)
    assert type(info.value).__name__ == "ExceptionGroup"
    errors = getattr(info.value, "exceptions", ())
    assert [str(e) for e in errors if isinstance(e, RuntimeError)] == ["a bug in the supervisor"]
    record = supervisor.models["probe"]
    assert record.state is ModelState.UNLOADED and record.stop.reason is ExitReason.SHUTDOWN
    assert not supervisor.paths.state.exists() and not supervisor.paths.control.exists()
    assert leases_under(redis_server, redis_prefix) == []
    # The runtime directory is free again: a new supervisor can take it.
    again = _supervisor(tmp_path, redis_server, redis_prefix)
    await again.start()
    again.stop()
    await asyncio.wait_for(again.serve(), 60)
