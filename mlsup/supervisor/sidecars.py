"""Sidecars: extra processes the supervisor runs beside its models (the HTTP gateway, the queue
runner).

:func:`sidecar_specs` decides, purely from the configuration, which sidecars run and how;
:class:`Sidecars` runs them: it starts them once the control plane is up, respawns one that
exits (paced and bounded by :class:`~mlsup.supervisor.restart.RestartPolicy`, like a model
worker), and stops them on shutdown (SIGTERM to the process group, a grace period, SIGKILL).
Each sidecar leads its own process group, so stopping it also stops whatever it started. A
sidecar's output goes to the supervisor's own output, and every start, exit and respawn is
logged there.

A sidecar is an ordinary process that talks to the supervisor like any client (through
``$MLSUP_RUNTIME_DIR``), and watches ``$MLSUP_SUPERVISOR_PID`` to exit when the supervisor dies
without stopping it (SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlsup import defaults
from mlsup.gateway.settings import API_KEY_ENV, HttpSettings
from mlsup.queues.config import parse_queues
from mlsup.runtime import ENV_RUNTIME_DIR
from mlsup.supervisor.config import SupervisorConfig
from mlsup.supervisor.process import describe_exit, kill_group
from mlsup.supervisor.restart import RestartPolicy

__all__ = ["SUPERVISOR_PID_ENV", "SidecarSpec", "Sidecars", "raw_tables", "sidecar_specs"]

#: A sidecar finds the pid of the supervisor that started it here.
SUPERVISOR_PID_ENV = "MLSUP_SUPERVISOR_PID"


@dataclass(frozen=True)
class SidecarSpec:
    """One sidecar: a name for logs, the command, extra environment, the stop grace period."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    stop_grace_s: float = defaults.SIDECAR_STOP_GRACE_S


def raw_tables(config: SupervisorConfig) -> Mapping[str, Any]:
    """The manifest's tables that sidecars validate themselves (``http``, ``queues``), as the
    manifest keeps them: opaque plain data, absent ones left out."""
    manifest = config.manifest
    tables = {"http": manifest.http, "queues": manifest.queues}
    return {name: table for name, table in tables.items() if table is not None}


def sidecar_specs(
    config: SupervisorConfig,
    tables: Mapping[str, Any] | None = None,
    *,
    http: str | None = None,
) -> list[SidecarSpec]:
    """The sidecars to run: the gateway when ``[http] listen`` is set or ``http`` (``mlsup start
    --http ADDR``) is given. ``tables``: the manifest's own (:func:`raw_tables`) unless given.
    ConfigError for an invalid ``[http]`` table, before anything runs."""
    tables = raw_tables(config) if tables is None else tables
    specs: list[SidecarSpec] = []
    settings = HttpSettings.parse(tables.get("http"), config.manifest.source, listen=http)
    queues = parse_queues(tables, config.manifest)  # ConfigError for a bad [queues.<name>]
    if settings is not None:
        specs.append(gateway_spec(config, settings, with_queues=bool(queues)))
    if queues:
        specs.append(queue_runner_spec(config))
    return specs


def queue_runner_spec(config: SupervisorConfig) -> SidecarSpec:
    """The queue runner (``[queues.<name>]``); its grace lets running jobs finish."""
    argv = (
        sys.executable, "-m", "mlsup.queues",
        "--runtime", str(config.paths.root),
        "--config", str(Path(config.manifest.source).resolve()),
    )  # fmt: skip
    # Past its own grace the runner abandons its jobs and exits; this one covers that too.
    grace = defaults.QUEUE_STOP_GRACE_S + defaults.SIDECAR_STOP_GRACE_S
    return SidecarSpec(name="queues", argv=argv, stop_grace_s=grace)


def gateway_spec(
    config: SupervisorConfig, settings: HttpSettings, *, with_queues: bool = False
) -> SidecarSpec:
    """The gateway's command line; its API key travels in the environment, not in argv.
    ``with_queues``: the config names queues, whose job counts join the gateway's /metrics."""
    argv: tuple[str, ...] = (
        sys.executable, "-m", "mlsup.gateway",
        "--listen", settings.listen, "--max-queue", str(settings.max_queue),
    )  # fmt: skip
    if with_queues:
        argv = (*argv, "--config", config.manifest.source)
    env = {ENV_RUNTIME_DIR: str(config.paths.root)}
    if settings.api_key is not None:
        env[API_KEY_ENV] = settings.api_key
    return SidecarSpec(name="gateway", argv=argv, env=env)


class _Running:
    """One sidecar's process and the task that keeps it running."""

    def __init__(self, spec: SidecarSpec, policy: RestartPolicy) -> None:
        self.spec = spec
        self.policy = policy
        self.process: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[None] | None = None
        self.restarts = 0
        self.failed = False


class Sidecars:
    """Runs sidecars for a supervisor: :meth:`start` after the control plane is up,
    :meth:`stop` on shutdown."""

    def __init__(
        self,
        specs: Sequence[SidecarSpec],
        *,
        log: Callable[[str], None] = print,
        policy: Callable[[], RestartPolicy] = RestartPolicy,
    ) -> None:
        self.log = log
        self._sidecars = [_Running(spec, policy()) for spec in specs]
        self._stopping = False

    @property
    def specs(self) -> list[SidecarSpec]:
        return [s.spec for s in self._sidecars]

    def pids(self) -> dict[str, int | None]:
        """Each sidecar's current pid (None between a crash and its respawn, or after giving
        up)."""
        return {
            s.spec.name: s.process.pid
            if s.process is not None and s.process.returncode is None
            else None
            for s in self._sidecars
        }

    def restarts(self) -> dict[str, int]:
        """How many times each sidecar was respawned."""
        return {s.spec.name: s.restarts for s in self._sidecars}

    async def start(self) -> None:
        """Start every sidecar; each is then kept running until :meth:`stop`."""
        for sidecar in self._sidecars:
            await self._spawn(sidecar)
            sidecar.task = asyncio.ensure_future(self._keep(sidecar))

    async def stop(self) -> None:
        """Stop every sidecar: SIGTERM to its group, its grace period, then SIGKILL."""
        self._stopping = True
        for sidecar in self._sidecars:
            if sidecar.task is not None:
                sidecar.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sidecar.task
                sidecar.task = None
        await asyncio.gather(*(self._terminate(s) for s in self._sidecars))

    async def _spawn(self, sidecar: _Running) -> None:
        spec = sidecar.spec
        env = {**os.environ, **spec.env, SUPERVISOR_PID_ENV: str(os.getpid())}
        sidecar.process = await asyncio.create_subprocess_exec(
            *spec.argv, env=env, stdin=asyncio.subprocess.DEVNULL, start_new_session=True
        )
        self.log(f"sidecar {spec.name}: started pid {sidecar.process.pid}")

    async def _keep(self, sidecar: _Running) -> None:
        """Wait for the sidecar to end; respawn it as the restart policy says, or give up."""
        name = sidecar.spec.name
        while True:
            assert sidecar.process is not None
            code = await sidecar.process.wait()
            _kill_leftovers(sidecar.process.pid)
            decision = sidecar.policy.crashed(time.monotonic())
            if decision.give_up:
                sidecar.failed = True
                self.log(
                    f"sidecar {name}: pid {sidecar.process.pid} {describe_exit(code)}; it "
                    f"ended {decision.crashes} times within {sidecar.policy.window_s:g} s, "
                    "giving up (restart the supervisor once it is fixed)"
                )
                return
            self.log(
                f"sidecar {name}: pid {sidecar.process.pid} {describe_exit(code)}; "
                f"respawning in {decision.delay_s:g} s"
            )
            await asyncio.sleep(decision.delay_s)
            sidecar.restarts += 1
            await self._spawn(sidecar)

    async def _terminate(self, sidecar: _Running) -> None:
        process = sidecar.process
        if process is None:
            return
        if process.returncode is None:
            kill_group(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), sidecar.spec.stop_grace_s)
            except asyncio.TimeoutError:
                self.log(
                    f"sidecar {sidecar.spec.name}: still running "
                    f"{sidecar.spec.stop_grace_s:g} s after SIGTERM; killing it"
                )
                kill_group(process.pid, signal.SIGKILL)
            code = await process.wait()
            self.log(f"sidecar {sidecar.spec.name}: pid {process.pid} {describe_exit(code)}")
        _kill_leftovers(process.pid)


def _kill_leftovers(pgid: int) -> None:
    """SIGKILL what an ended sidecar left in its process group. Only the group: its own pid,
    reaped, may already belong to another process."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
