"""The gateway's FastAPI application: the OpenAI routes, /health and /metrics, Bearer
authentication, OpenAI error bodies for every failure (validation, mlsup's typed errors,
unknown routes), and the dashboard at /ui (:mod:`mlsup.gateway.ui`).

::

    app = create_app(api_key="sekret", max_queue=64)   # connects to $MLSUP_RUNTIME_DIR's
    uvicorn.run(app, host="127.0.0.1", port=8000)        # supervisor at startup
"""

from __future__ import annotations

import contextlib
import hmac
import os
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from mlsup import defaults
from mlsup.errors import ConfigError, MlsupError, SupervisorUnavailable
from mlsup.gateway.http_errors import http_error
from mlsup.gateway.media import audio_format
from mlsup.gateway.operations import public_state
from mlsup.gateway.requests import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    ImageRequest,
    chat_call,
    completion_call,
    embedding_texts,
    image_options,
)
from mlsup.gateway.service import Gateway, OpenStream
from mlsup.gateway.shapes import error_body, model_object, transcription_response
from mlsup.gateway.ui import gateway_latency, mount_dashboard
from mlsup.proxy import aconnect

__all__ = ["create_app"]


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # msgspec: embeddings are thousands of floats; FastAPI's encoder is far slower on them.
    return Response(msgspec.json.encode(body), status, headers, media_type="application/json")


def _error(status: int, message: str, type_: str, code: str, param: str | None = None) -> Response:
    return _json(error_body(message, type_, code, param), status)


class _EventStream(StreamingResponse):
    """An SSE response that always ends its stream (ticket, worker generation), even when the
    client leaves before the first byte is sent."""

    def __init__(self, stream: OpenStream) -> None:
        super().__init__(stream.events, media_type="text/event-stream")
        self.headers["Cache-Control"] = "no-cache"
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._stream.close()


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


async def _authorized(request: Request) -> None:
    """Every route but /health requires the Bearer key, when one is configured."""
    api_key: str | None = request.app.state.api_key
    if api_key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), api_key.encode()
    ):
        raise _UnauthorizedError


Gw = Annotated[Gateway, Depends(_gateway)]
public = APIRouter()
api = APIRouter(dependencies=[Depends(_authorized)])


def create_app(
    *,
    api_key: str | None = None,
    max_queue: int = defaults.GATEWAY_MAX_QUEUE,
    runtime: str | None = None,
    dashboard: bool = True,
    config: str | None = None,
) -> FastAPI:
    """The gateway application; it connects to the supervisor when it starts. With
    ``dashboard``, the dashboard is served at ``/ui`` (its latency columns from this gateway's
    request histograms); with ``config`` (the supervisor's mlsup.toml), its ``[queues]`` join
    ``/metrics`` as ``mlsup_queue_jobs``."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        proxy = await aconnect(runtime)
        app.state.gateway = gateway = Gateway(proxy, max_queue)
        if config is not None:
            from mlsup.queues.metrics import register_queue_metrics

            register_queue_metrics(gateway.metrics.registry, config)
        try:
            yield
        finally:
            await proxy.close()

    app = FastAPI(title="mlsup OpenAI-compatible gateway", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)  # fmt: skip
    app.state.api_key = api_key
    app.state.started = int(time.time())
    _install_error_handlers(app)
    app.include_router(public)
    app.include_router(api)
    if dashboard:
        mount_dashboard(app, runtime, gateway_latency(app))
    return app


@public.get("/health")
async def health(gw: Gw) -> Response:
    try:
        await gw.proxy.ping()
    except SupervisorUnavailable as exc:
        return _json({"status": "unavailable", "message": exc.message}, 503)
    return _json({"status": "ok"})


@api.get("/metrics")
async def metrics(gw: Gw) -> Response:
    body = await gw.metrics_text()
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


@api.get("/v1/models")
async def models(request: Request, gw: Gw) -> Response:
    started = request.app.state.started
    data = [
        model_object(row.model, row.kind, public_state(row.state), started)
        for row in await gw.rows()
    ]
    return _json({"object": "list", "data": data})


@api.get("/v1/models/{model_id:path}")
async def model(model_id: str, request: Request, gw: Gw) -> Response:
    await gw.kind(model_id)  # 404 when unknown
    row = next(r for r in await gw.rows() if r.model == model_id)
    state = public_state(row.state)
    return _json(model_object(row.model, row.kind, state, request.app.state.started))


@api.post("/v1/chat/completions")
async def chat(body: ChatRequest, gw: Gw) -> Response:
    return await _generation(gw, "chat", body.model, chat_call(body))


@api.post("/v1/completions")
async def completions(body: CompletionRequest, gw: Gw) -> Response:
    return await _generation(gw, "complete", body.model, completion_call(body))


@api.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, gw: Gw) -> Response:
    texts = embedding_texts(body)
    work = gw.embed(body.model, texts, body.encoding_format)
    return _json(await _measured(gw, body.model, "embed", work))


@api.post("/v1/images/generations")
async def images(body: ImageRequest, gw: Gw) -> Response:
    work = gw.images(body.model, body.prompt, body.n, image_options(body))
    return _json(await _measured(gw, body.model, "generate_image", work))


@api.post("/v1/audio/transcriptions")
async def transcriptions(
    *,
    gw: Gw,
    file: Annotated[UploadFile, File()],
    model: Annotated[str, Form()],
    language: Annotated[str | None, Form()] = None,
    prompt: Annotated[str | None, Form()] = None,
    response_format: Annotated[Literal["json", "text", "verbose_json"], Form()] = "json",
    temperature: Annotated[float | None, Form(ge=0, le=1)] = None,
) -> Response:
    options: dict[str, Any] = {"language": language, "initial_prompt": prompt,
                               "temperature": temperature}  # fmt: skip
    options = {key: value for key, value in options.items() if value not in (None, "")}
    with _upload(file) as path:
        result = await _measured(gw, model, "transcribe", gw.transcribe(model, path, options))
    body, media_type = transcription_response(result, response_format)
    if isinstance(body, str):
        return Response(body, media_type=media_type)
    return _json(body)


class _UnauthorizedError(Exception):
    """No or a wrong Bearer key (answered 401)."""


async def _generation(gw: Gateway, op: str, model: str, call: Any) -> Response:
    if not call.stream:
        return _json(await _measured(gw, model, op, gw.generate(op, model, call)))
    started = time.monotonic()
    try:
        stream = await gw.stream(op, model, call)
    except MlsupError as exc:
        gw.record(model, op, http_error(exc).status, started)
        raise
    return _EventStream(stream)


async def _measured(gw: Gateway, model: str, op: str, work: Any) -> Any:
    """Await ``work``, counting the request and its duration under its status."""
    started = time.monotonic()
    try:
        body = await work
    except MlsupError as exc:
        gw.record(model, op, http_error(exc).status, started)
        raise
    gw.record(model, op, 200, started)
    return body


@contextlib.contextmanager
def _upload(file: UploadFile) -> Any:
    """The upload in a private temporary file (the worker reads it by path); removed after."""
    source = file.file
    head = source.read(16)
    kind = audio_format(head)
    source.seek(0, os.SEEK_END)
    size = source.tell()
    if size > defaults.GATEWAY_MAX_UPLOAD_BYTES:
        raise ConfigError(
            f"file: {size} bytes; the largest accepted is {defaults.GATEWAY_MAX_UPLOAD_BYTES}",
            field="file",
        )
    source.seek(0)
    with tempfile.NamedTemporaryFile(prefix="mlsup-audio-", suffix=f".{kind}") as out:
        while chunk := source.read(1 << 20):
            out.write(chunk)
        out.flush()
        yield out.name


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MlsupError)
    async def mlsup_error(request: Request, exc: MlsupError) -> Response:
        answer = http_error(exc, param=exc.context.get("field"))
        return _json(answer.body, answer.status, answer.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = [str(part) for part in first.get("loc", ()) if part != "body"]
        param = ".".join(where) or None
        message = f"{param or 'body'}: {first.get('msg', 'invalid request')}"
        return _error(400, message, "invalid_request_error", "invalid_value", param)

    @app.exception_handler(_UnauthorizedError)
    async def unauthorized(request: Request, exc: _UnauthorizedError) -> Response:
        response = _error(
            401,
            "missing or wrong API key: send the [http] api_key as 'Authorization: Bearer KEY'",
            "invalid_request_error",
            "invalid_api_key",
        )
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(HTTPException)
    async def http_exception(request: Request, exc: HTTPException) -> Response:
        code = "not_found" if exc.status_code == 404 else "invalid_request"
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return _error(exc.status_code, message, "invalid_request_error", code)
