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
(connect after ``fork``, never before). Both are thin drivers of one call core
(:mod:`mlsup.proxy_core`), so they behave alike; ``transport=`` replaces ZeroMQ, for example by
:class:`mlsup.testing.transport.FakeTransport` in tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlsup import defaults
from mlsup.ipc.plans import aiterate, arun, iterate, run
from mlsup.ipc.transport import AsyncZmqTransport, Transport, ZmqTransport
from mlsup.proxy_core import ModelCore, SupervisorCore, idempotent

__all__ = [
    "AsyncModelProxy",
    "AsyncSupervisorProxy",
    "ModelProxy",
    "SupervisorProxy",
    "aconnect",
    "connect",
    "idempotent",
]

Row = dict[str, Any]


class _SupervisorDriver:
    """What both supervisor proxies are made of: a supervisor core over a transport."""

    def __init__(
        self,
        runtime: str | Path | None = None,
        *,
        timeout: float = defaults.CALL_TIMEOUT_S,
        transport: Transport | None = None,
    ) -> None:
        self.core = SupervisorCore(runtime, transport or self._default_transport(), timeout)
        self.root, self.timeout = self.core.root, timeout

    @staticmethod
    def _default_transport() -> Transport:
        raise NotImplementedError


class _ModelDriver:
    """What both model proxies are made of: a model core, and their supervisor proxy."""

    def __init__(self, supervisor: Any, core: ModelCore) -> None:
        self.supervisor = supervisor
        self.core = core
        self.model_id, self.timeout = core.model_id, core.timeout

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.model_id!r} via {self.supervisor.root}>"


class SupervisorProxy(_SupervisorDriver):
    """A connection to a running supervisor; thread-safe. Use :func:`connect`."""

    _default_transport = ZmqTransport

    def request(self, op: str, args: Any = None, *, timeout: float | None = None) -> Any:
        """One control-plane request (``status``, ``load``, ...)."""
        return run(self.core.request(op, args, timeout=timeout))

    def ping(self) -> Row:
        """The supervisor's identity and uptime."""
        result: Row = self.request("ping")
        return result

    def status(self) -> list[Row]:
        """One row per model: state, pid, gpu, leased and measured MB, restarts, requests."""
        result: list[Row] = self.request("status")
        return result

    def row(self, model: str) -> Row | None:
        """The status row of model (None: no such model)."""
        return run(self.core.row(model))

    def load(
        self, model: str, priority: Any = None, *, wait: bool = True, timeout: float | None = None
    ) -> Row:
        """Load model (waiting until it serves, unless ``wait=False``); its status row.

        A FAILED model is reset and tried again. ``priority``: a :class:`~mlsup.Priority` or
        its name; ``timeout``: how long to wait (default
        :data:`~mlsup.defaults.ENSURE_TIMEOUT_S`).
        """
        result: Row = run(self.core.load(model, priority, wait, timeout))
        return result

    def unload(self, model: str) -> Row:
        """Stop the model's worker and release its VRAM; its status row."""
        result: Row = run(self.core.unload(model))
        return result

    def leases(self) -> list[Row]:
        """Every lease in Redis, from every process sharing it."""
        result: list[Row] = self.request("leases")
        return result

    def stop(self) -> None:
        """Stop the supervisor (and every worker)."""
        self.request("stop")

    def model(self, model_id: str, *, timeout: float | None = None) -> ModelProxy:
        """A handle on model_id; it is loaded on first use. ``timeout``: each call's deadline."""
        handle: ModelProxy = self.core.handle(
            model_id, timeout, lambda core: ModelProxy(self, core)
        )
        return handle

    def close(self) -> None:
        """Close the connections to the workers and the supervisor (models stay loaded)."""
        run(self.core.close())

    def __enter__(self) -> SupervisorProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ModelProxy(_ModelDriver):
    """A supervised model with the methods of the kit's in-process models."""

    supervisor: SupervisorProxy

    def chat(self, messages: list[dict[str, Any]], stream: bool = False, **gen: Any) -> Any:
        """The assistant's answer (str), or with ``stream=True`` an iterator of text pieces."""
        return self._invoke("chat", (messages,), gen, stream)

    def complete(self, prompt: str, stream: bool = False, **gen: Any) -> Any:
        """The continuation of prompt (str), or an iterator of pieces with ``stream=True``."""
        return self._invoke("complete", (prompt,), gen, stream)

    def generate(self, prompt: str, stream: bool = False, **gen: Any) -> Any:
        """A transformers model's continuation of prompt (str, or pieces with ``stream``)."""
        return self._invoke("generate", (prompt,), gen, stream)

    def embed(self, texts: list[str]) -> Any:
        """One embedding per text: a float32 array of shape (n, dim)."""
        return self.call("embed", texts)

    def tokenize(self, text: str) -> list[int]:
        """The model's token ids for text."""
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

    def call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        """``op(*args, **kwargs)`` on the worker, within this proxy's deadline."""
        return run(self.core.call(op, args, kwargs))

    def _invoke(self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any], stream: bool) -> Any:
        if stream:
            return iterate(self.core.stream(op, args, kwargs))
        return run(self.core.call(op, args, kwargs))

    def close(self) -> None:
        """Close the connection to the worker (the model stays loaded)."""
        run(self.core.close())


def connect(
    runtime: str | Path | None = None,
    *,
    timeout: float = defaults.CALL_TIMEOUT_S,
    transport: Transport | None = None,
) -> SupervisorProxy:
    """Connect to the supervisor of the runtime directory (default: ``$MLSUP_RUNTIME_DIR``,
    else ``$XDG_RUNTIME_DIR/mlsup``, else ``/tmp/mlsup-$UID``).

    Raises :class:`SupervisorUnavailable`, saying how to start one, when none runs there.
    """
    proxy = SupervisorProxy(runtime, timeout=timeout, transport=transport)
    try:
        proxy.ping()
    except BaseException:
        proxy.close()
        raise
    return proxy


class AsyncSupervisorProxy(_SupervisorDriver):
    """:class:`SupervisorProxy` for one asyncio event loop. Use :func:`aconnect`."""

    _default_transport = AsyncZmqTransport

    async def request(self, op: str, args: Any = None, *, timeout: float | None = None) -> Any:
        """See :meth:`SupervisorProxy.request`."""
        return await arun(self.core.request(op, args, timeout=timeout))

    async def ping(self) -> Row:
        """See :meth:`SupervisorProxy.ping`."""
        result: Row = await self.request("ping")
        return result

    async def status(self) -> list[Row]:
        """See :meth:`SupervisorProxy.status`."""
        result: list[Row] = await self.request("status")
        return result

    async def row(self, model: str) -> Row | None:
        """See :meth:`SupervisorProxy.row`."""
        return await arun(self.core.row(model))

    async def load(
        self, model: str, priority: Any = None, *, wait: bool = True, timeout: float | None = None
    ) -> Row:
        """See :meth:`SupervisorProxy.load`."""
        result: Row = await arun(self.core.load(model, priority, wait, timeout))
        return result

    async def unload(self, model: str) -> Row:
        """See :meth:`SupervisorProxy.unload`."""
        result: Row = await arun(self.core.unload(model))
        return result

    async def leases(self) -> list[Row]:
        """See :meth:`SupervisorProxy.leases`."""
        result: list[Row] = await self.request("leases")
        return result

    async def stop(self) -> None:
        """See :meth:`SupervisorProxy.stop`."""
        await self.request("stop")

    def model(self, model_id: str, *, timeout: float | None = None) -> AsyncModelProxy:
        """See :meth:`SupervisorProxy.model`."""
        handle: AsyncModelProxy = self.core.handle(
            model_id, timeout, lambda core: AsyncModelProxy(self, core)
        )
        return handle

    async def close(self) -> None:
        """See :meth:`SupervisorProxy.close`."""
        await arun(self.core.close())

    async def __aenter__(self) -> AsyncSupervisorProxy:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncModelProxy(_ModelDriver):
    """:class:`ModelProxy` for asyncio: the same methods, awaited; streams are async
    iterators (``async for piece in await m.chat(messages, stream=True)``)."""

    supervisor: AsyncSupervisorProxy

    async def chat(self, messages: list[dict[str, Any]], stream: bool = False, **gen: Any) -> Any:
        """See :meth:`ModelProxy.chat`."""
        return await self._invoke("chat", (messages,), gen, stream)

    async def complete(self, prompt: str, stream: bool = False, **gen: Any) -> Any:
        """See :meth:`ModelProxy.complete`."""
        return await self._invoke("complete", (prompt,), gen, stream)

    async def generate(self, prompt: str, stream: bool = False, **gen: Any) -> Any:
        """See :meth:`ModelProxy.generate`."""
        return await self._invoke("generate", (prompt,), gen, stream)

    async def embed(self, texts: list[str]) -> Any:
        """See :meth:`ModelProxy.embed`."""
        return await self.call("embed", texts)

    async def tokenize(self, text: str) -> list[int]:
        """See :meth:`ModelProxy.tokenize`."""
        result: list[int] = await self.call("tokenize", text)
        return result

    async def generate_image(self, prompt: str, **options: Any) -> Any:
        """See :meth:`ModelProxy.generate_image`."""
        return await self.call("generate_image", prompt, **options)

    async def transcribe(self, audio: Any, **options: Any) -> dict[str, Any]:
        """See :meth:`ModelProxy.transcribe`."""
        result: dict[str, Any] = await self.call("transcribe", audio, **options)
        return result

    async def run(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """See :meth:`ModelProxy.run`."""
        result: dict[str, Any] = await self.call("run", inputs)
        return result

    async def call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        """See :meth:`ModelProxy.call`."""
        return await arun(self.core.call(op, args, kwargs))

    async def _invoke(
        self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any], stream: bool
    ) -> Any:
        if stream:
            return aiterate(self.core.stream(op, args, kwargs))
        return await arun(self.core.call(op, args, kwargs))

    async def close(self) -> None:
        """See :meth:`ModelProxy.close`."""
        await arun(self.core.close())


async def aconnect(
    runtime: str | Path | None = None,
    *,
    timeout: float = defaults.CALL_TIMEOUT_S,
    transport: Transport | None = None,
) -> AsyncSupervisorProxy:
    """The async :func:`connect`."""
    proxy = AsyncSupervisorProxy(runtime, timeout=timeout, transport=transport)
    try:
        await proxy.ping()
    except BaseException:
        await proxy.close()
        raise
    return proxy
