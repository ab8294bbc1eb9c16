"""The gateway's calls to models, through the async proxy (no second path to the workers):
admission to the model's queue, on-demand loading (the proxy does it), token usage from the
model's own tokenizer, streams as server-sent events, and metrics of each request."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from mlsup.errors import (
    DeviceError,
    MlsupError,
    ModelLoadError,
    ModelNotFound,
    ProtocolError,
    UnsupportedOperation,
)
from mlsup.gateway.admission import ModelQueue, Ticket
from mlsup.gateway.http_errors import http_error
from mlsup.gateway.media import png
from mlsup.gateway.metrics import GatewayMetrics, Snapshot
from mlsup.gateway.operations import ROUTES, ModelRow, check_kind, read_row
from mlsup.gateway.requests import GenerationCall
from mlsup.gateway.shapes import (
    DONE,
    Head,
    Usage,
    chat_chunk,
    chat_response,
    embeddings_response,
    finish_reason,
    images_response,
    new_id,
    sse,
    text_chunk,
    text_response,
)
from mlsup.kit.devices import discover_nvml
from mlsup.proxy import AsyncModelProxy, AsyncSupervisorProxy

__all__ = ["Gateway", "OpenStream"]

_NO_TOKENIZER = -1


class OpenStream:
    """A generation whose first piece has arrived: the events to send, and :meth:`close` to
    end it (releases the model's queue place, stops the worker if still generating)."""

    def __init__(self, events: AsyncIterator[bytes], close: Callable[[], Any]) -> None:
        self.events = events
        self._close = close

    async def close(self) -> None:
        await self._close()


class Gateway:
    """Model calls for the routes; one per gateway process, on its event loop."""

    def __init__(self, proxy: AsyncSupervisorProxy, max_queue: int) -> None:
        self.proxy = proxy
        self.max_queue = max_queue
        self.queues: dict[str, ModelQueue] = {}
        self.metrics = GatewayMetrics(self.queues)
        self._kinds: dict[str, str] = {}
        self._specials: dict[str, int] = {}
        self._nvml = True  # until NVML says there is no GPU

    # -- models ---------------------------------------------------------------------------------

    async def rows(self) -> list[ModelRow]:
        rows = [read_row(raw) for raw in await self.proxy.status()]
        self._kinds = {row.model: row.kind for row in rows}
        return rows

    async def kind(self, model: str) -> str:
        """The model's kind (its loader); ModelNotFound (404) listing the known models."""
        if model not in self._kinds:
            await self.rows()  # the manifest is fixed, but look again before saying no
        if model not in self._kinds:
            known = ", ".join(sorted(self._kinds)) or "none"
            raise ModelNotFound(
                f"the model {model!r} does not exist; known models: {known}", model=model
            )
        return self._kinds[model]

    async def admit(self, model: str, op: str) -> tuple[AsyncModelProxy, Ticket]:
        """Check the model and its kind, then wait for its turn (QueueFull past the bound)."""
        check_kind(model, await self.kind(model), op)
        queue = self.queues.get(model)
        if queue is None:
            queue = self.queues[model] = ModelQueue(model, self.max_queue)
        return self.proxy.model(model), await queue.enter()

    async def metrics_text(self) -> bytes:
        rows = await self.rows()
        leases = await self.proxy.leases()
        gpus = await self.proxy.request("gpus")  # every GPU: ``leases`` omits idle ones
        used = await self._gpu_used()
        snapshot = Snapshot(rows=rows, leases=leases, gpu_used=used, gpus=gpus)
        # Off the loop: collectors may ask Redis (the queues' job counts).
        return await asyncio.to_thread(self.metrics.render, snapshot)

    async def _gpu_used(self) -> dict[int, int]:
        """Bytes in use on each real GPU, from NVML; {} where there is none (remembered)."""
        if not self._nvml:
            return {}
        try:
            devices = await asyncio.to_thread(discover_nvml)
        except DeviceError:
            return {}
        if devices is None:
            self._nvml = False
            return {}
        return {
            d.index: (d.total_mb - d.free_mb) << 20
            for d in devices
            if d.total_mb is not None and d.free_mb is not None
        }

    def record(self, model: str, op: str, status: int, started: float) -> None:
        self.metrics.count(model, op, status)
        self.metrics.duration.labels(model, op).observe(time.monotonic() - started)

    @contextlib.asynccontextmanager
    async def _served(self, model: str, op: str) -> AsyncIterator[None]:
        """A loader error from a model that loaded fine means that this model cannot do
        ``op`` (an hf encoder asked to chat): a 400, not a 500."""
        try:
            yield
        except ModelLoadError as exc:
            row = next((r for r in await self.rows() if r.model == model), None)
            if row is None or row.state != "ready":
                raise
            raise UnsupportedOperation(
                f"model {model!r} cannot serve {ROUTES[op].path}: {exc.message}", model=model
            ) from exc

    # -- token usage ----------------------------------------------------------------------------

    async def _tokens(self, proxy: AsyncModelProxy, text: str) -> int:
        """Tokens of ``text`` by the model's tokenizer, without the special tokens (BOS, CLS,
        SEP) that it adds to any text: those of the empty string. 0 for a model without a
        tokenizer (its worker does not serve ``tokenize``)."""
        model = proxy.model_id
        if model not in self._specials:
            self.metrics.tally.gateway_sent(model)
            try:
                self._specials[model] = len(await proxy.tokenize(""))
            except ProtocolError:  # unknown operation: no tokenizer to count with
                self._specials[model] = _NO_TOKENIZER
        if self._specials[model] == _NO_TOKENIZER:
            return 0
        self.metrics.tally.gateway_sent(model)
        return max(0, len(await proxy.tokenize(text)) - self._specials[model])

    async def prompt_tokens(self, proxy: AsyncModelProxy, prompt: Any) -> int:
        """Tokens of a prompt, or of a conversation's contents (the chat template's own
        markup is not counted: the model applies it in the worker)."""
        if isinstance(prompt, str):
            return await self._tokens(proxy, prompt)
        return await self._tokens(proxy, "\n".join(m["content"] for m in prompt))

    async def texts_tokens(self, proxy: AsyncModelProxy, texts: list[str]) -> int:
        """Tokens of several inputs, in one call: their sum, with each input's special
        tokens counted once per input."""
        joined = await self._tokens(proxy, "\n".join(texts))
        return joined + max(0, self._specials[proxy.model_id]) * len(texts)

    # -- generation -----------------------------------------------------------------------------

    async def generate(self, op: str, model: str, call: GenerationCall) -> dict[str, Any]:
        """A non-streamed chat or completion response."""
        proxy, ticket = await self.admit(model, op)
        try:
            async with self._served(model, op):
                text = await proxy.call(op, call.prompt, **call.kwargs)
            self.metrics.tally.gateway_sent(model)
            usage = Usage(
                await self.prompt_tokens(proxy, call.prompt), await self._tokens(proxy, text)
            )
        finally:
            ticket.release()
        head = Head(new_id("chatcmpl" if op == "chat" else "cmpl"), int(time.time()), model)
        finish = finish_reason(usage.completion_tokens, call.max_tokens)
        build = chat_response if op == "chat" else text_response
        return build(head, text, usage, finish)

    async def stream(self, op: str, model: str, call: GenerationCall) -> OpenStream:
        """Start a streamed chat or completion; returns once the first piece is there, so that
        a failure to load or to start is an HTTP error, not a broken stream."""
        started = time.monotonic()
        proxy, ticket = await self.admit(model, op)
        pieces: Any = None
        try:
            async with self._served(model, op):
                pieces = await getattr(proxy, op)(call.prompt, stream=True, **call.kwargs)
                first = await _first(pieces)
        except BaseException:
            ticket.release()
            await _aclose(pieces)
            raise
        self.metrics.tally.gateway_sent(model)
        self.metrics.ttft.labels(model).observe(time.monotonic() - started)
        head = Head(new_id("chatcmpl" if op == "chat" else "cmpl"), int(time.time()), model)
        outcome = {"status": 499}  # until the stream ends: the client went away
        events = self._events(
            op=op, proxy=proxy, call=call, head=head, first=first, pieces=pieces, outcome=outcome
        )

        async def close() -> None:
            await _aclose(events)
            await _aclose(pieces)  # the worker stops generating for nobody
            ticket.release()
            self.record(model, op, outcome["status"], started)

        return OpenStream(events, close)

    async def _events(
        self,
        *,
        op: str,
        proxy: AsyncModelProxy,
        call: GenerationCall,
        head: Head,
        first: str | None,
        pieces: AsyncIterator[str],
        outcome: dict[str, int],
    ) -> AsyncIterator[bytes]:
        """The stream's events: pieces, the finish_reason, the usage chunk if asked, [DONE];
        or an error event when the generation breaks (its worker crashed, was preempted)."""
        include = call.include_usage
        chat = op == "chat"

        def piece(text: str) -> bytes:
            if chat:
                return sse(chat_chunk(head, {"content": text}, with_usage=include))
            return sse(text_chunk(head, text, with_usage=include))

        if chat:
            yield sse(chat_chunk(head, {"role": "assistant", "content": ""}, with_usage=include))
        text: list[str] = []
        try:
            if first is not None:
                text.append(first)
                yield piece(first)
                async for item in pieces:
                    text.append(item)
                    yield piece(item)
            completion = await self._tokens(proxy, "".join(text))
            finish = finish_reason(completion, call.max_tokens)
            if chat:
                yield sse(chat_chunk(head, {}, finish, with_usage=include))
            else:
                yield sse(text_chunk(head, "", finish, with_usage=include))
            if include:
                usage = Usage(await self.prompt_tokens(proxy, call.prompt), completion)
                last = chat_chunk if chat else text_chunk
                yield sse(last(head, None, usage=usage, with_usage=True))
        except MlsupError as exc:
            outcome["status"] = http_error(exc).status
            yield error_event(exc)
            return
        outcome["status"] = 200
        yield DONE

    # -- embeddings, audio, images -------------------------------------------------------------

    async def embed(self, model: str, texts: list[str], encoding: Any) -> dict[str, Any]:
        proxy, ticket = await self.admit(model, "embed")
        try:
            async with self._served(model, "embed"):
                vectors = await proxy.embed(texts)
            self.metrics.tally.gateway_sent(model)
            tokens = await self.texts_tokens(proxy, texts)
        finally:
            ticket.release()
        return embeddings_response(model, vectors, encoding, tokens)

    async def transcribe(self, model: str, path: str, options: dict[str, Any]) -> dict[str, Any]:
        """The runtime decodes the file itself (faster-whisper reads wav, flac, mp3)."""
        proxy, ticket = await self.admit(model, "transcribe")
        try:
            result = await proxy.transcribe(path, **options)
            self.metrics.tally.gateway_sent(model)
        finally:
            ticket.release()
        return result

    async def images(
        self, model: str, prompt: str, n: int, options: dict[str, Any]
    ) -> dict[str, Any]:
        """``n`` images; with a ``seed``, image i uses seed + i (reproducible, all different)."""
        proxy, ticket = await self.admit(model, "generate_image")
        pngs = []
        try:
            for i in range(n):
                seeded = {**options}
                if "seed" in options:
                    seeded["seed"] = int(options["seed"]) + i
                image = await proxy.generate_image(prompt, **seeded)
                self.metrics.tally.gateway_sent(model)
                pngs.append(png(image))
        finally:
            ticket.release()
        return images_response(int(time.time()), pngs)


async def _first(pieces: AsyncIterator[str]) -> str | None:
    try:
        return await pieces.__anext__()
    except StopAsyncIteration:
        return None


async def _aclose(iterator: Any) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


def error_event(exc: BaseException) -> bytes:
    """The event that ends a stream broken by ``exc``: an OpenAI error body."""
    if isinstance(exc, MlsupError):
        body = http_error(exc).body
    else:
        body = {"error": {"message": f"internal error: {exc!r}", "type": "server_error",
                          "param": None, "code": None}}  # fmt: skip
    return sse(body)
