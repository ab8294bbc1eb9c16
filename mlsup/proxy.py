"""The in-process proxy: feature code calls supervised models as if they were local.

::

    import mlsup
    sup = mlsup.connect()                       # the supervisor of this user's runtime dir
    m = sup.model("smollm2")                    # loaded on first use
    m.chat([{"role": "user", "content": "hi"}], max_tokens=32)
    for piece in m.chat(messages, stream=True): ...
    m.embed(["a", "b"])                         # -> numpy array (n, dim)

Method names and results are those of the kit's in-process models, so swapping a model
loaded in-process for a supervised one is a one-line change.

Calls go straight to the model's worker; the supervisor is asked only to load the model and
say where it is. Every call has a deadline (``sup.model(id, timeout=...)``, default
:data:`~mlsup.defaults.CALL_TIMEOUT_S`) that covers loading, waiting and one retry. A worker
that dies during a call is noticed within :data:`~mlsup.defaults.LIVENESS_SLICE_S`; the call
then raises :class:`~mlsup.errors.WorkerCrashed` (or :class:`~mlsup.errors.Preempted` when the
supervisor took the model away) — unless the call is idempotent (:func:`idempotent`), in
which case it is retried once on the respawned worker. Streams are never retried mid-stream.

Safe for many threads (:class:`SupervisorProxy`) and many asyncio tasks
(:class:`AsyncSupervisorProxy`, from :func:`aconnect`); each process connects on its own
(connect after ``fork``, never before).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

from mlsup import defaults
from mlsup.contracts import ExitReason
from mlsup.errors import (
    MlsupError,
    PeerGone,
    Preempted,
    RequestTimeout,
    SupervisorUnavailable,
    WorkerCrashed,
    error_from_wire,
)
from mlsup.ipc.client import AsyncClient, Client
from mlsup.ipc.liveness import process_alive
from mlsup.runtime import CONTROL_SOCKET, runtime_dir

__all__ = [
    "AsyncModelProxy",
    "AsyncSupervisorProxy",
    "ModelProxy",
    "SupervisorProxy",
    "aconnect",
    "connect",
    "idempotent",
]

#: Operations whose result depends only on their arguments.
_PURE = frozenset({"embed", "run", "transcribe", "tokenize"})
#: Generations, deterministic only with a seed (or greedy decoding).
_GENERATIVE = frozenset({"chat", "complete", "generate", "generate_image"})


def idempotent(op: str, kwargs: Mapping[str, Any]) -> bool:
    """Whether ``op(**kwargs)`` may be sent twice: the retry policy, pure.

    Embeddings, ONNX runs, transcriptions and tokenization always are; a generation is when
    it is seeded or greedy (temperature 0), and not streamed.
    """
    if op in _PURE:
        return True
    if op in _GENERATIVE and not kwargs.get("stream"):
        return kwargs.get("seed") is not None or kwargs.get("temperature") == 0
    return False


def _control_endpoint(runtime: str | Path | None) -> tuple[Path, str]:
    root = Path(runtime) if runtime is not None else runtime_dir()
    socket = root / CONTROL_SOCKET
    if not socket.exists():
        raise SupervisorUnavailable(
            f"no supervisor is running on {root}; start one with `mlsup start` "
            "(or `mlsup start --detach` to run it in the background)",
            runtime=str(root),
        )
    return root, f"ipc://{socket}"


def _unavailable(root: Path, exc: Exception) -> SupervisorUnavailable:
    error = SupervisorUnavailable(
        f"the supervisor on {root} does not answer; is it stopped or hung? "
        "(`mlsup start` starts one)",
        runtime=str(root),
    )
    error.__cause__ = exc
    return error


def _load_args(
    model: str, priority: Any, wait: bool, timeout: float, implicit: bool
) -> dict[str, Any]:
    name = getattr(priority, "name", priority)  # a Priority, or its name
    return {"model": model, "priority": name.lower() if name else None, "wait": wait,
            "timeout": timeout, "implicit": implicit}  # fmt: skip


def _call_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


def _cleanly_unloaded(pid: int, row: Mapping[str, Any] | None) -> bool:
    """Whether the worker was stopped on purpose (idle, unload): it finished the request in
    hand and dropped the rest unread, so a call that got no answer was never run."""
    return (
        row is not None
        and row["pid"] != pid
        and row.get("exit_code") == 0
        and row.get("exit_reason") != ExitReason.PREEMPTED
    )


def _lost_worker(model: str, pid: int, row: Mapping[str, Any] | None) -> MlsupError:
    """What a caller is told when the worker it was talking to went away."""
    if row is not None and row.get("exit_reason") == ExitReason.PREEMPTED:
        return Preempted(
            f"model {model!r} gave its VRAM to a higher-priority request (worker pid {pid}); "
            "it reloads when called again and capacity allows",
            model=model,
            pid=pid,
        )
    if row is not None and row.get("error") and row["state"] in ("failed", "unloaded"):
        return error_from_wire(row["error"])
    exit_text = row.get("last_exit") if row is not None else None
    return WorkerCrashed(
        f"the worker of {model!r} (pid {pid}) {exit_text or 'died'}; it is being respawned",
        model=model,
        pid=pid,
        exit=exit_text,
    )


class _Deadline:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.at = time.monotonic() + timeout

    @property
    def remaining(self) -> float:
        return self.at - time.monotonic()

    def expired(self, what: str) -> RequestTimeout:
        return RequestTimeout(
            f"{what} did not finish within {self.timeout:g} s", timeout=self.timeout
        )


# -- synchronous --------------------------------------------------------------------------------


class SupervisorProxy:
    """A connection to a running supervisor; thread-safe. Use :func:`connect`."""

    def __init__(
        self, runtime: str | Path | None = None, *, timeout: float = defaults.CALL_TIMEOUT_S
    ) -> None:
        self.root, endpoint = _control_endpoint(runtime)
        self.timeout = timeout
        self._control = Client(endpoint, timeout=defaults.CONTROL_TIMEOUT_S)
        self._models: dict[tuple[str, float], ModelProxy] = {}
        self._lock = threading.Lock()

    def request(self, op: str, args: Any = None, *, timeout: float | None = None) -> Any:
        """One control-plane request (``status``, ``load``, ...)."""
        try:
            return self._control.call(op, args, timeout=timeout)
        except RequestTimeout as exc:
            if op == "load":
                raise
            raise _unavailable(self.root, exc) from exc

    def ping(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("ping")
        return result

    def status(self) -> list[dict[str, Any]]:
        """One row per model: state, pid, gpu, leased and measured MB, restarts, requests."""
        result: list[dict[str, Any]] = self.request("status")
        return result

    def row(self, model: str) -> dict[str, Any] | None:
        return next((r for r in self.status() if r["model"] == model), None)

    def load(
        self,
        model: str,
        priority: Any = None,
        *,
        wait: bool = True,
        timeout: float = defaults.ENSURE_TIMEOUT_S,
        implicit: bool = False,
    ) -> dict[str, Any]:
        """Load model (waiting until it serves, unless ``wait=False``); its status row.

        A FAILED model is reset and tried again, unless the load is ``implicit`` (a first use,
        not a request to load): then it stays parked for its cool-down, and this raises its
        :class:`~mlsup.errors.ModelFailed`. ``priority``: a :class:`~mlsup.Priority` or its
        name.
        """
        args = _load_args(model, priority, wait, timeout, implicit)
        result: dict[str, Any] = self.request("load", args, timeout=timeout + 5)
        return result

    def unload(self, model: str) -> dict[str, Any]:
        """Stop the model's worker and release its VRAM."""
        result: dict[str, Any] = self.request("unload", {"model": model}, timeout=60)
        return result

    def leases(self) -> list[dict[str, Any]]:
        """Every lease in Redis, from every process sharing it."""
        result: list[dict[str, Any]] = self.request("leases")
        return result

    def stop(self) -> None:
        """Stop the supervisor (and every worker)."""
        self.request("stop")

    def model(self, model_id: str, *, timeout: float | None = None) -> ModelProxy:
        """A handle on model_id; it is loaded on first use. ``timeout``: each call's deadline."""
        key = (model_id, self.timeout if timeout is None else timeout)
        with self._lock:
            proxy = self._models.get(key)
            if proxy is None:
                proxy = self._models[key] = ModelProxy(self, model_id, key[1])
            return proxy

    def close(self) -> None:
        with self._lock:
            models, self._models = list(self._models.values()), {}
        for proxy in models:
            proxy.close()
        self._control.close()

    def __enter__(self) -> SupervisorProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ModelProxy:
    """A supervised model with the methods of the kit's in-process models."""

    def __init__(self, supervisor: SupervisorProxy, model_id: str, timeout: float) -> None:
        self.supervisor = supervisor
        self.model_id = model_id
        self.timeout = timeout
        self._lock = threading.Lock()
        self._worker: tuple[int, int, Client] | None = None  # generation, pid, client
        self._checked_at = 0.0  # when the worker's pid was last seen alive

    # The kit's model methods.
    def chat(self, messages: list[dict[str, Any]], stream: bool = False, **gen: Any) -> Any:
        """The assistant's answer (str), or with ``stream=True`` an iterator of text pieces."""
        return (
            self._stream("chat", (messages,), gen) if stream else self.call("chat", messages, **gen)
        )

    def complete(self, prompt: str, stream: bool = False, **gen: Any) -> Any:
        """The continuation of prompt (str), or an iterator of pieces with ``stream=True``."""
        return (
            self._stream("complete", (prompt,), gen)
            if stream
            else self.call("complete", prompt, **gen)
        )

    def generate(self, prompt: str, stream: bool = False, **gen: Any) -> Any:
        """A transformers model's continuation of prompt (str, or pieces with ``stream``)."""
        return (
            self._stream("generate", (prompt,), gen)
            if stream
            else self.call("generate", prompt, **gen)
        )

    def embed(self, texts: list[str]) -> Any:
        """One embedding per text: a float32 array of shape (n, dim)."""
        return self.call("embed", texts)

    def tokenize(self, text: str) -> list[int]:
        result: list[int] = self.call("tokenize", text)
        return result

    def generate_image(self, prompt: str, **options: Any) -> Any:
        """A uint8 image array (H, W, 3)."""
        return self.call("generate_image", prompt, **options)

    def transcribe(self, audio: Any, **options: Any) -> dict[str, Any]:
        """``{"text", "segments", "language", ...}`` for float32 16 kHz mono audio or a path."""
        result: dict[str, Any] = self.call("transcribe", audio, **options)
        return result

    def run(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """An ONNX model's outputs, by name."""
        result: dict[str, Any] = self.call("run", inputs)
        return result

    # The mechanics.
    def _connect(self, deadline: _Deadline) -> tuple[int, int, Client]:
        with self._lock:
            if self._worker is not None:
                # Checking the pid costs a syscall and a /proc read: once a liveness slice is
                # enough (a worker that dies in between is caught during the call).
                now = time.monotonic()
                if now - self._checked_at < defaults.LIVENESS_SLICE_S:
                    return self._worker
                if process_alive(self._worker[1]):
                    self._checked_at = now
                    return self._worker
                self._worker[2].close()  # unloaded or crashed since: ask again
                self._worker = None
        if deadline.remaining <= 0:
            raise deadline.expired(f"loading {self.model_id!r}")
        row = self.supervisor.load(self.model_id, timeout=deadline.remaining, implicit=True)
        client = Client(row["endpoint"], timeout=self.timeout)
        with self._lock:
            if self._worker is not None:  # another thread connected meanwhile
                client.close()
                return self._worker
            self._worker = (row["generation"], row["pid"], client)
            return self._worker

    def _lost(self, generation: int, pid: int) -> tuple[MlsupError, bool]:
        with self._lock:
            if self._worker is not None and self._worker[0] == generation:
                self._worker[2].close()
                self._worker = None
        # The supervisor sees the exit through the process sentinel as we do; give it a
        # moment to record how the worker ended.
        wait_until = time.monotonic() + defaults.CRASH_REPORT_WAIT_S
        while True:
            try:
                row = self.supervisor.row(self.model_id)
            except SupervisorUnavailable:
                row = None
            if row is None or row["pid"] != pid or time.monotonic() > wait_until:
                return _lost_worker(self.model_id, pid, row), _cleanly_unloaded(pid, row)
            time.sleep(0.02)

    def call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        """``op(*args, **kwargs)`` on the worker, within this proxy's deadline."""
        deadline = _Deadline(self.timeout)
        retries = 1 if idempotent(op, kwargs) else 0
        while True:
            generation, pid, client = self._connect(deadline)
            try:
                return client.call(
                    op, _call_args(args, kwargs), timeout=max(deadline.remaining, 0.001),
                    alive=lambda pid=pid: process_alive(pid),  # type: ignore[misc]
                )  # fmt: skip
            except PeerGone:
                error, unread = self._lost(generation, pid)
                if unread and deadline.remaining > 0:
                    continue  # never run: sending it again is safe for any call
            if retries == 0 or not error.retryable or deadline.remaining <= 0:
                raise error
            retries -= 1

    def _stream(self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[Any]:
        deadline = _Deadline(self.timeout)
        generation, pid, client = self._connect(deadline)
        items = client.stream(
            f"{op}.stream", _call_args(args, kwargs), timeout=self.timeout,
            alive=lambda: process_alive(pid),
        )  # fmt: skip

        def pieces() -> Iterator[Any]:
            try:
                yield from items
            except PeerGone:
                raise self._lost(generation, pid)[0] from None

        return pieces()

    def close(self) -> None:
        with self._lock:
            if self._worker is not None:
                self._worker[2].close()
                self._worker = None

    def __repr__(self) -> str:
        return f"<ModelProxy {self.model_id!r} via {self.supervisor.root}>"


def connect(
    runtime: str | Path | None = None, *, timeout: float = defaults.CALL_TIMEOUT_S
) -> SupervisorProxy:
    """Connect to the supervisor of the runtime directory (default: ``$MLSUP_RUNTIME_DIR``,
    else ``$XDG_RUNTIME_DIR/mlsup``, else ``/tmp/mlsup-$UID``).

    Raises :class:`SupervisorUnavailable`, saying how to start one, when none runs there.
    """
    proxy = SupervisorProxy(runtime, timeout=timeout)
    try:
        proxy.ping()
    except BaseException:
        proxy.close()
        raise
    return proxy


# -- asynchronous -------------------------------------------------------------------------------


class AsyncSupervisorProxy:
    """The asyncio twin of :class:`SupervisorProxy`, for one event loop. Use :func:`aconnect`."""

    def __init__(
        self, runtime: str | Path | None = None, *, timeout: float = defaults.CALL_TIMEOUT_S
    ) -> None:
        self.root, endpoint = _control_endpoint(runtime)
        self.timeout = timeout
        self._control = AsyncClient(endpoint, timeout=defaults.CONTROL_TIMEOUT_S)
        self._models: dict[tuple[str, float], AsyncModelProxy] = {}

    async def request(self, op: str, args: Any = None, *, timeout: float | None = None) -> Any:
        try:
            return await self._control.call(op, args, timeout=timeout)
        except RequestTimeout as exc:
            if op == "load":
                raise
            raise _unavailable(self.root, exc) from exc

    async def ping(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("ping")
        return result

    async def status(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.request("status")
        return result

    async def row(self, model: str) -> dict[str, Any] | None:
        return next((r for r in await self.status() if r["model"] == model), None)

    async def load(
        self,
        model: str,
        priority: Any = None,
        *,
        wait: bool = True,
        timeout: float = defaults.ENSURE_TIMEOUT_S,
        implicit: bool = False,
    ) -> dict[str, Any]:
        args = _load_args(model, priority, wait, timeout, implicit)
        result: dict[str, Any] = await self.request("load", args, timeout=timeout + 5)
        return result

    async def unload(self, model: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("unload", {"model": model}, timeout=60)
        return result

    async def leases(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.request("leases")
        return result

    def model(self, model_id: str, *, timeout: float | None = None) -> AsyncModelProxy:
        key = (model_id, self.timeout if timeout is None else timeout)
        proxy = self._models.get(key)
        if proxy is None:
            proxy = self._models[key] = AsyncModelProxy(self, model_id, key[1])
        return proxy

    async def close(self) -> None:
        models, self._models = list(self._models.values()), {}
        for proxy in models:
            await proxy.close()
        await self._control.close()

    async def __aenter__(self) -> AsyncSupervisorProxy:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncModelProxy:
    """A supervised model for asyncio code; streams are async iterators."""

    def __init__(self, supervisor: AsyncSupervisorProxy, model_id: str, timeout: float) -> None:
        self.supervisor = supervisor
        self.model_id = model_id
        self.timeout = timeout
        self._lock = asyncio.Lock()
        self._worker: tuple[int, int, AsyncClient] | None = None

    async def chat(self, messages: list[dict[str, Any]], stream: bool = False, **gen: Any) -> Any:
        if stream:
            return self._stream("chat", (messages,), gen)
        return await self.call("chat", messages, **gen)

    async def complete(self, prompt: str, stream: bool = False, **gen: Any) -> Any:
        if stream:
            return self._stream("complete", (prompt,), gen)
        return await self.call("complete", prompt, **gen)

    async def generate(self, prompt: str, stream: bool = False, **gen: Any) -> Any:
        if stream:
            return self._stream("generate", (prompt,), gen)
        return await self.call("generate", prompt, **gen)

    async def embed(self, texts: list[str]) -> Any:
        return await self.call("embed", texts)

    async def tokenize(self, text: str) -> list[int]:
        result: list[int] = await self.call("tokenize", text)
        return result

    async def generate_image(self, prompt: str, **options: Any) -> Any:
        return await self.call("generate_image", prompt, **options)

    async def transcribe(self, audio: Any, **options: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("transcribe", audio, **options)
        return result

    async def run(self, inputs: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("run", inputs)
        return result

    async def _connect(self, deadline: _Deadline) -> tuple[int, int, AsyncClient]:
        async with self._lock:
            if self._worker is not None:
                if process_alive(self._worker[1]):
                    return self._worker
                await self._worker[2].close()
                self._worker = None
            if deadline.remaining <= 0:
                raise deadline.expired(f"loading {self.model_id!r}")
            row = await self.supervisor.load(
                self.model_id, timeout=deadline.remaining, implicit=True
            )
            self._worker = (
                row["generation"],
                row["pid"],
                AsyncClient(row["endpoint"], timeout=self.timeout),
            )
            return self._worker

    async def _lost(self, generation: int, pid: int) -> tuple[MlsupError, bool]:
        async with self._lock:
            if self._worker is not None and self._worker[0] == generation:
                await self._worker[2].close()
                self._worker = None
        wait_until = time.monotonic() + defaults.CRASH_REPORT_WAIT_S
        while True:
            try:
                row = await self.supervisor.row(self.model_id)
            except SupervisorUnavailable:
                row = None
            if row is None or row["pid"] != pid or time.monotonic() > wait_until:
                return _lost_worker(self.model_id, pid, row), _cleanly_unloaded(pid, row)
            await asyncio.sleep(0.02)

    async def call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        deadline = _Deadline(self.timeout)
        retries = 1 if idempotent(op, kwargs) else 0
        while True:
            generation, pid, client = await self._connect(deadline)
            try:
                return await _watched(
                    client.call(
                        op, _call_args(args, kwargs), timeout=max(deadline.remaining, 0.001)
                    ),
                    pid,
                )
            except PeerGone:
                error, unread = await self._lost(generation, pid)
                if unread and deadline.remaining > 0:
                    continue  # never run: sending it again is safe for any call
            if retries == 0 or not error.retryable or deadline.remaining <= 0:
                raise error
            retries -= 1

    async def _stream(
        self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncIterator[Any]:
        deadline = _Deadline(self.timeout)
        generation, pid, client = await self._connect(deadline)
        items = client.stream(f"{op}.stream", _call_args(args, kwargs), timeout=self.timeout)
        iterator = items.__aiter__()
        while True:
            try:
                item = await _watched(iterator.__anext__(), pid)
            except StopAsyncIteration:
                return
            except PeerGone:
                raise (await self._lost(generation, pid))[0] from None
            yield item

    async def close(self) -> None:
        if self._worker is not None:
            await self._worker[2].close()
            self._worker = None


async def _watched(awaitable: Any, pid: int) -> Any:
    """Await while checking, every ``LIVENESS_SLICE_S``, that the worker pid still lives."""
    task = asyncio.ensure_future(awaitable)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=defaults.LIVENESS_SLICE_S)
            if done:
                return task.result()
            if not process_alive(pid):
                raise PeerGone(f"worker pid {pid} died", pid=pid)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def aconnect(
    runtime: str | Path | None = None, *, timeout: float = defaults.CALL_TIMEOUT_S
) -> AsyncSupervisorProxy:
    """The async :func:`connect`."""
    proxy = AsyncSupervisorProxy(runtime, timeout=timeout)
    try:
        await proxy.ping()
    except BaseException:
        await proxy.close()
        raise
    return proxy
