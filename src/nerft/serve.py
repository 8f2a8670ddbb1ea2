"""``nerft serve``: an HTTP service (FastAPI + uvicorn) over a Predictor.

``POST /v1/ner {"texts": [...], "labels": [optional codes]}`` -> ``{"results": [{"entities": [...]}], "model": ...}``;
``GET /health``; ``GET /v1/labels``; OpenAPI docs at ``/docs``. Concurrent requests are micro-batched: a worker
takes requests from a bounded queue, waits at most ``max_wait_ms`` for more (up to ``max_batch`` texts), and runs
one generation batch per label subset in a worker thread. The app is a thin adapter: ``create_app(predictor,
settings)``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from . import config as cfglib
from .predict.options import PredictOptions
from .schema import NerftError


@dataclass
class ServeSettings:
    max_batch: int = 16  # texts per generation batch
    max_wait_ms: float = 10.0  # how long the first request of a batch waits for company
    max_texts: int = 32  # per request
    max_text_chars: int = 4000
    queue_size: int = 256  # requests waiting; beyond it the server answers 503
    model_name: str = ""


@dataclass
class ServerStats:
    """Counters of a running server (bounded: numbers, not lists)."""

    batches: int = 0
    texts: int = 0
    max_batch_seen: int = 0

    def add_batch(self, n_texts: int) -> None:
        self.batches += 1
        self.texts += n_texts
        self.max_batch_seen = max(self.max_batch_seen, n_texts)


# Request and response bodies (module level: FastAPI resolves the annotations by name).
class NerRequest(BaseModel):
    texts: list[Any] = Field(..., description="texts to analyse")
    labels: list[str] | None = Field(None, description="label codes to extract (default: all)")


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


@dataclass
class _Job:
    texts: list[str]
    labels: tuple[str, ...] | None
    future: asyncio.Future


async def _batch_worker(queue: asyncio.Queue, predictor, settings: ServeSettings, stats: ServerStats) -> None:
    while True:
        first: _Job = await queue.get()
        jobs, n = [first], len(first.texts)
        deadline = time.monotonic() + settings.max_wait_ms / 1000
        while n < settings.max_batch:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            try:
                job = await asyncio.wait_for(queue.get(), timeout)
            except asyncio.TimeoutError:
                break
            jobs.append(job)
            n += len(job.texts)
        groups: dict[tuple[str, ...] | None, list[_Job]] = {}
        for job in jobs:
            groups.setdefault(job.labels, []).append(job)
        for labels, group in groups.items():
            texts = [t for job in group for t in job.texts]
            stats.add_batch(len(texts))
            try:
                results = await asyncio.to_thread(predictor.predict, texts, list(labels) if labels else None)
            except Exception as exc:  # the requests fail, the server lives on
                for job in group:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            k = 0
            for job in group:
                if not job.future.done():
                    job.future.set_result(results[k: k + len(job.texts)])
                k += len(job.texts)
        for _ in jobs:
            queue.task_done()


def create_app(predictor, settings: ServeSettings | None = None):
    from fastapi import FastAPI, HTTPException

    settings = settings or ServeSettings()
    model_name = settings.model_name or getattr(predictor, "name", "nerft")
    label_set = predictor.labels

    @contextlib.asynccontextmanager
    async def lifespan(app):
        app.state.queue = asyncio.Queue(maxsize=settings.queue_size)
        app.state.accepting = True
        worker = asyncio.create_task(_batch_worker(app.state.queue, predictor, settings, app.state.stats))
        try:
            yield
        finally:
            app.state.accepting = False  # refuse new work, finish what is queued or running
            await app.state.queue.join()
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    app = FastAPI(title="nerft", description="Named-entity recognition with a fine-tuned LLM", lifespan=lifespan)
    app.state.settings = settings
    app.state.stats = ServerStats()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        stats = app.state.stats
        return {"status": "ok", "model": model_name, "batches": stats.batches, "texts": stats.texts,
                "max_batch_seen": stats.max_batch_seen}

    @app.get("/v1/labels")
    async def labels() -> dict[str, Any]:
        return {"model": model_name, **label_set.to_dict()}

    @app.post("/v1/ner", response_model=NerResponse)
    async def ner(request: NerRequest) -> dict[str, Any]:
        texts = request.texts
        if not texts:
            raise HTTPException(422, "texts must be a non-empty list of strings")
        if len(texts) > settings.max_texts:
            raise HTTPException(413, f"too many texts: {len(texts)} > {settings.max_texts} per request")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise HTTPException(422, f"texts[{i}] must be a string, got {type(t).__name__}")
            if not t.strip():
                raise HTTPException(422, f"texts[{i}] is empty")
            if len(t) > settings.max_text_chars:
                raise HTTPException(413, f"texts[{i}] has {len(t)} characters; the limit is {settings.max_text_chars}")
        wanted = None
        if request.labels is not None:
            unknown = [c for c in request.labels if c not in label_set]
            if unknown or not request.labels:
                raise HTTPException(422, f"unknown label(s) {', '.join(unknown) or '(empty list)'}; "
                                         f"this model has {', '.join(label_set.codes)}")
            wanted = tuple(request.labels)
        state = app.state
        if not getattr(state, "accepting", False):
            raise HTTPException(503, "the server is not accepting requests (starting or shutting down)")
        future = asyncio.get_running_loop().create_future()
        try:
            state.queue.put_nowait(_Job(list(texts), wanted, future))
        except asyncio.QueueFull:
            raise HTTPException(503, "the server is busy; retry later") from None
        try:
            results = await future
        except NerftError as exc:
            raise HTTPException(400, str(exc)) from None
        return {"results": [{"entities": [e.to_dict() for e in ents]} for ents in results], "model": model_name}

    return app


def register(subparsers, name: str, summary: str) -> argparse.ArgumentParser:
    from .predict import add_load_arguments

    p = subparsers.add_parser(name, help=summary, description=summary)
    add_load_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: localhost only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=16, help="texts per generation batch")
    p.add_argument("--max-wait-ms", type=float, default=10.0, help="how long a request waits for company")
    p.add_argument("--max-texts", type=int, default=32, help="texts per request")
    p.add_argument("--max-text-chars", type=int, default=4000, help="characters per text")
    p.add_argument("--config", metavar="FILE.yaml", help="decoding options (the flags below) from a YAML file")
    cfglib.add_config_arguments(p, PredictOptions, skip={"batch_size"})  # --max-batch sets the batch
    p.set_defaults(func=run_serve)
    return p


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .predict import LoadOptions, open_predictor

    options = cfglib.build_config(PredictOptions, args, config_path=args.config)
    options.batch_size = args.max_batch
    predictor = open_predictor(cfglib.build_config(LoadOptions, args), options)
    settings = ServeSettings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_texts=args.max_texts,
                             max_text_chars=args.max_text_chars)
    uvicorn.run(create_app(predictor, settings), host=args.host, port=args.port, timeout_graceful_shutdown=30)
    return 0
