"""The HTTP adapter over a Predictor: ``create_app(predictor, settings, routers)``.

``POST /v1/ner {"texts": [...], "labels": [optional codes]}`` -> ``{"results": [{"entities": [...]}], "model": ...}``;
``GET /health`` (never needs the key); ``GET /v1/labels``; ``GET /metrics`` (Prometheus text); OpenAPI docs at
``/docs``. Each request is checked on its own (types, sizes, valid Unicode, known labels) before it joins a batch.
Middleware, outermost first: request metrics, the connection limit, the Host check (when hosts are restricted),
bearer-key authentication (when a key is set), body-size limit.
Runtime state lives on ``app.state``: ``settings``, ``predictor``, ``stats`` and, while the app runs, ``batcher``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from ..config import ConfigError
from .batching import Batcher, ContinuousBatcher, RequestFailed
from .guards import BearerAuth, BodyLimit, ConnectionLimit, HostCheck, SafeJSONResponse
from .metrics import CONTENT_TYPE, RequestMetrics, ServerStats, prometheus_text
from .settings import ServeSettings

logger = logging.getLogger("nerft.serve")

if TYPE_CHECKING:
    from ..inference.base import Predictor
    from ..labels import LabelSet
    from .connections import ConnectionGuard


# Request and response bodies (module level: FastAPI resolves the annotations by name).
class NerRequest(BaseModel):
    texts: list[Any] = Field(..., description="texts to analyse")
    labels: list[Any] | None = Field(None, description="label codes to extract (default: all)")


class EntityOut(BaseModel):
    start: int | None
    end: int | None
    label: str
    text: str
    score: float | None = None


class TextResult(BaseModel):
    entities: list[EntityOut]


class NerResponse(BaseModel):
    results: list[TextResult]
    model: str


def checked_texts(texts: list[Any], settings: ServeSettings) -> list[str]:
    """The texts of one request, or RequestFailed naming the first bad one."""
    if not texts:
        raise RequestFailed(422, "texts must be a non-empty list of strings")
    if len(texts) > settings.max_texts:
        raise RequestFailed(413, f"too many texts: {len(texts)} > {settings.max_texts} per request")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise RequestFailed(422, f"texts[{i}] must be a string, got {type(text).__name__}")
        if not text.strip():
            raise RequestFailed(422, f"texts[{i}] is empty")
        if len(text) > settings.max_text_chars:
            raise RequestFailed(413, f"texts[{i}] has {len(text)} characters; the limit is {settings.max_text_chars}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate ("\ud800" in JSON): no tokenizer can read it
            raise RequestFailed(422, f"texts[{i}] is not valid Unicode: a lone surrogate at character "
                                     f"{exc.start}") from None
    return texts


def checked_labels(labels: list[Any] | None, label_set: LabelSet) -> tuple[str, ...] | None:
    """The label subset in the model's order (None: all labels), or RequestFailed naming unknown codes."""
    if labels is None:
        return None
    unknown = [c for c in labels if not isinstance(c, str) or c not in label_set]
    if unknown or not labels:
        shown = ", ".join(str(c)[:40] for c in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise RequestFailed(422, f"unknown label(s) {shown or '(empty list)'}; this model has "
                                 f"{', '.join(label_set.codes)}")
    wanted = tuple(c for c in label_set.codes if c in labels)
    return None if len(wanted) == len(label_set.codes) else wanted  # all labels: batch with the default


def make_batcher(predictor: Predictor, settings: ServeSettings, stats: ServerStats) -> Batcher:
    """The scheduler ``settings.scheduler`` names: continuous over a predictor that has a ContinuousDecoder (the
    transformers backend), else micro-batching (``auto`` says which in the log; ``continuous`` over a predictor
    without one is a ConfigError)."""
    from ..generation import ContinuousBatchingUnsupported

    if settings.scheduler != "micro":
        why = f"the {type(predictor).__name__} decodes in calls of its own engine"
        if hasattr(predictor, "continuous"):
            try:
                decoder = predictor.continuous(settings.max_batch, settings.max_batch_tokens)
                logger.info(f"scheduler: continuous batching, up to {settings.max_batch} rows and "
                            f"{settings.max_batch_tokens} KV positions")
                return ContinuousBatcher(predictor, settings, stats, decoder)
            except ContinuousBatchingUnsupported as exc:
                why = str(exc)
        if settings.scheduler == "continuous":
            raise ConfigError(f"--scheduler continuous is not possible here: {why}")
        logger.info(f"scheduler: micro-batching ({why})")
    return Batcher(predictor, settings, stats)


def create_app(predictor: Predictor, settings: ServeSettings | None = None, routers: Sequence[Any] = (),
               connections: ConnectionGuard | None = None) -> FastAPI:
    """A FastAPI app over ``predictor``. ``routers``: more ``fastapi.APIRouter``s to include (e.g. another API
    over the same model); they sit behind the same authentication, body limit and metrics, and reach the
    predictor and the batch queue through ``request.app.state`` (``await state.batcher.submit(texts, labels,
    request)``). ``connections``: the server's ``ConnectionGuard`` (open connections, for --max-connections and
    /metrics)."""
    settings = settings or ServeSettings()
    model_name = settings.model_name or predictor.name
    label_set = predictor.labels

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if connections is not None:  # accept() out of descriptors: one log line per interval, not per client
            connections.watch_accept_errors(asyncio.get_running_loop())
        app.state.batcher = make_batcher(predictor, settings, app.state.stats)
        await app.state.batcher.start()
        try:
            yield
        finally:  # refuse new work, finish what is queued or running
            await app.state.batcher.stop()

    app = FastAPI(title="nerft", description="Named-entity recognition with a fine-tuned LLM", lifespan=lifespan,
                  default_response_class=SafeJSONResponse)
    app.state.settings, app.state.predictor = settings, predictor
    app.state.stats, app.state.batcher = ServerStats(), None

    @app.exception_handler(RequestFailed)
    async def request_failed(request: Request, exc: RequestFailed) -> SafeJSONResponse:
        return SafeJSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> SafeJSONResponse:
        return SafeJSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)

    @app.get("/health")
    async def health() -> SafeJSONResponse:
        running = app.state.batcher is not None and app.state.batcher.accepting
        return SafeJSONResponse({"status": "ok" if running else "unavailable", "model": model_name},
                                status_code=200 if running else 503)

    @app.get("/v1/labels")
    async def labels() -> dict[str, Any]:
        return {"model": model_name, **label_set.to_dict()}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        batcher = app.state.batcher
        text = prometheus_text(app.state.stats, batcher.queue.qsize() if batcher else 0,
                               batcher.in_flight if batcher else 0, connections)
        return PlainTextResponse(text, media_type=CONTENT_TYPE)

    @app.post("/v1/ner", response_model=NerResponse)
    async def ner(body: NerRequest, request: Request) -> dict[str, Any]:
        texts = checked_texts(body.texts, settings)
        wanted = checked_labels(body.labels, label_set)
        if app.state.batcher is None:
            raise RequestFailed(503, "the server is starting")
        results = await app.state.batcher.submit(texts, wanted, request)
        return {"results": [{"entities": [e.to_dict() for e in ents]} for ents in results], "model": model_name}

    for router in routers:
        app.include_router(router)

    # Added innermost first: a request meets the metrics, the connection limit, the Host check, the key, the body limit.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, read_timeout=settings.timeout)
    if settings.api_key:
        app.add_middleware(BearerAuth, api_key=settings.api_key)
    if settings.allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=settings.allowed_hosts)
    if connections is not None:
        app.add_middleware(ConnectionLimit, max_connections=settings.max_connections, count=lambda: connections.open)
    app.add_middleware(RequestMetrics, stats=app.state.stats, routes=lambda: app.router.routes)
    return app
