"""``ManagedModel``: a model loaded under a lease, whose operations are awaitable.

``await model.chat(messages)`` runs the loaded model's ``chat`` in a worker thread, so the
event loop (and with it the lease's renewal) keeps running during inference; ``stream=True``
gives an async iterator of text pieces. Every call is counted while it runs, so that an unload
waits for the calls in flight instead of freeing weights under them.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from mlsup.errors import MlsupError

if TYPE_CHECKING:
    from mlsup.kit.leases import GPULease
    from mlsup.kit.loaders import ModelLoader

__all__ = ["OPERATIONS", "ManagedModel", "ManagedModelState", "in_thread"]

T = TypeVar("T")

#: The model operations a managed model makes awaitable (each loaded model has some of them).
OPERATIONS = (
    "chat",
    "complete",
    "embed",
    "generate",
    "generate_image",
    "run",
    "tokenize",
    "transcribe",
)

_END = object()


class ManagedModelState(enum.Enum):
    """Where a managed model is in its life (not the supervisor's worker states)."""

    LOADED = "loaded"
    UNLOADED = "unloaded"
    PREEMPTED = "preempted"
    LOST = "lost"


class ManagedModel:
    """A model loaded under a lease by a :class:`~mlsup.kit.managed.ManagedModelLoader`.

    Its operations (``chat``, ``complete``, ``embed``, ``generate``, ``tokenize``,
    ``generate_image``, ``transcribe``, ``run``) are awaitable and take the loaded model's
    arguments; with ``stream=True`` they return an async iterator. Once it is gone they raise
    why: :class:`Preempted`, :class:`LeaseLost`, or :class:`ModelError` after an unload.
    ``owns_lease`` is False for a model loaded inside the caller's ``async with
    boss.acquire(...)`` block: that block releases the lease, not the model's unload.
    """

    def __init__(
        self,
        model_id: str,
        lease: GPULease,
        loader: ModelLoader,
        *,
        owns_lease: bool,
        unload: Callable[[ManagedModel], Awaitable[None]],
    ) -> None:
        self.model_id = model_id
        self.lease = lease
        self.owns_lease = owns_lease
        self.state = ManagedModelState.LOADED
        self._loader = loader
        self._unload = unload
        self._gone: MlsupError | None = None
        self._calls = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def loaded(self) -> bool:
        """Whether the model is loaded (and its lease held)."""
        return self.state is ManagedModelState.LOADED

    @property
    def model(self) -> Any:
        """The loader's model object (synchronous calls); raises why it is gone once unloaded."""
        if self._gone is not None:
            raise self._gone
        return self._loader.model

    @property
    def loader(self) -> ModelLoader:
        """The loader holding the model (its ``load_report``, ``path``...)."""
        return self._loader

    @property
    def calls_in_flight(self) -> int:
        """Operations running on the model now."""
        return self._calls

    async def unload(self) -> None:
        """Unload the model and release its lease (unless an ``async with`` block owns it)."""
        await self._unload(self)

    def chat(self, messages: list[Any], stream: bool = False, **gen: Any) -> Any:
        """Answer a conversation: ``await`` it for the text, or ``async for`` with stream."""
        return self._operation("chat", stream, messages, **gen)

    def complete(self, prompt: str, stream: bool = False, **gen: Any) -> Any:
        """Continue ``prompt``: ``await`` it for the text, or ``async for`` with stream."""
        return self._operation("complete", stream, prompt, **gen)

    def generate(self, prompt: str, stream: bool = False, **gen: Any) -> Any:
        """Generate text from ``prompt`` (transformers models); like :meth:`complete`."""
        return self._operation("generate", stream, prompt, **gen)

    async def embed(self, texts: list[str], **options: Any) -> Any:
        """One embedding per text."""
        return await self._call("embed", (texts,), options)

    async def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        result: list[int] = await self._call("tokenize", (text,), {})
        return result

    async def generate_image(self, prompt: str, **options: Any) -> Any:
        """An image for ``prompt`` (diffusers models)."""
        return await self._call("generate_image", (prompt,), options)

    async def transcribe(self, audio: Any, **options: Any) -> Any:
        """Transcribe ``audio`` (whisper models)."""
        return await self._call("transcribe", (audio,), options)

    async def run(self, inputs: Any, **options: Any) -> Any:
        """Run the graph on ``inputs`` (ONNX models)."""
        return await self._call("run", (inputs,), options)

    def __getattr__(self, name: str) -> Any:
        # Only called for names this class lacks: the loaded model's other attributes.
        return getattr(self.model, name)

    def __repr__(self) -> str:
        return f"<ManagedModel {self.model_id!r} {self.state.value} lease={self.lease.id}>"

    # -- for the managed loader -----------------------------------------------------------------

    def retire(self, state: ManagedModelState, error: MlsupError) -> bool:
        """Refuse new calls from now on; False if the model was retired already."""
        if self.state is not ManagedModelState.LOADED:
            return False
        self.state, self._gone = state, error
        return True

    async def wait_idle(self, timeout: float | None) -> bool:
        """Wait until no call runs (at most ``timeout`` seconds); True if none runs."""
        if self._calls == 0:  # also with a timeout of 0 (a preemption deadline already past)
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def unload_weights(self) -> None:
        """Free the model's memory (blocking; the loader calls it in a thread once idle)."""
        self._loader.unload()

    # -- calls ----------------------------------------------------------------------------------

    def _operation(self, name: str, stream: bool, *args: Any, **kwargs: Any) -> Any:
        if stream:
            return self._stream(name, args, kwargs)
        return self._call(name, args, kwargs)

    async def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        target = getattr(self.model, name)  # raises why the model is gone
        self._enter()
        try:
            return await in_thread(target, *args, **kwargs)
        finally:
            self._exit()

    async def _stream(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncIterator[Any]:
        target = getattr(self.model, name)
        self._enter()
        try:
            pieces = await in_thread(target, *args, stream=True, **kwargs)
            while True:
                piece = await in_thread(next, pieces, _END)
                if piece is _END:
                    return
                yield piece
        finally:
            self._exit()

    def _enter(self) -> None:
        self._calls += 1
        self._idle.clear()

    def _exit(self) -> None:
        self._calls -= 1
        if self._calls == 0:
            self._idle.set()


async def in_thread(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking call in a thread. A thread cannot be stopped: on cancellation, wait for
    it to finish (so that what it loaded can be unloaded), then re-raise the cancellation."""
    done = asyncio.ensure_future(asyncio.to_thread(call, *args, **kwargs))
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        await asyncio.wait([done])
        raise
