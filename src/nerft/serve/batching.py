"""Micro-batching: requests wait in a bounded queue; one worker gathers them (up to ``max_batch`` texts, at most
``max_wait_ms`` after the first), groups them by label subset and runs the predictor in a thread. Each request
gets its own answer or its own error:

- a request whose client has gone, or whose deadline has passed, before its texts' turn is not computed;
- a group is run in predictor calls of at most ``max_batch`` texts and ``max_batch_chars`` characters, each
  preceded by that check, so a request whose client leaves half-way costs at most the call already running;
- when a call holding several requests raises, each request's part is rerun alone, so only the request that
  caused it fails: 400 for bad input (``NerftError``, ``ValueError``, ``UnicodeError``), 500 for anything else.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..schema import Entity, NerftError
from .metrics import CLIENT_GONE, ServerStats
from .settings import ServeSettings

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.types import Receive

logger = logging.getLogger("nerft.serve")

BAD_INPUT = (NerftError, ValueError)  # UnicodeError is a ValueError
# One call at a time per predictor, whichever Batcher makes it (the /v1/ner one, and any that a router adds): a
# model and its caches are not assumed to be safe to use from two threads at once. Apps over other predictors are
# not held up. Keyed by the predictor object (weakly: the lock goes with it).
_PREDICTOR_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()
RETRY_SOON = {"Retry-After": "1"}


def predictor_lock(predictor: Any) -> threading.Lock:
    """The lock every Batcher over ``predictor`` holds while it calls the predictor."""
    with _LOCKS_LOCK:
        return _PREDICTOR_LOCKS.setdefault(predictor, threading.Lock())


class RequestFailed(Exception):
    """What a request gets instead of entities: an HTTP status and a message for the client."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


def failure_of(exc: BaseException) -> RequestFailed:
    if isinstance(exc, BAD_INPUT):
        return RequestFailed(400, str(exc) or type(exc).__name__)
    logger.error("prediction failed", exc_info=exc)
    return RequestFailed(500, f"prediction failed ({type(exc).__name__}); the server log has the details")


@dataclass(eq=False)
class Job:
    """One request's texts, waiting for their entities; ``results`` fills up call by call."""

    texts: list[str]
    labels: tuple[str, ...] | None
    deadline: float  # time.monotonic()
    future: asyncio.Future
    results: list[list[Entity] | None] = field(init=False)
    released: bool = field(default=False, init=False)  # task_done() called for it (continuous scheduler)

    def __post_init__(self) -> None:
        self.results = [None] * len(self.texts)

    @property
    def wanted(self) -> bool:
        """Someone still waits for the answer: not answered, failed, cancelled (client gone) or expired."""
        return not self.future.done() and time.monotonic() < self.deadline

    def fail(self, error: RequestFailed) -> None:
        if not self.future.done():
            self.future.set_exception(error)

    def finish_if_complete(self) -> None:
        if not self.future.done() and all(r is not None for r in self.results):
            self.future.set_result(self.results)


async def _client_gone(receive: Receive) -> None:
    """Returns when the client disconnects: once the body is read, the next ASGI message is the disconnect."""
    while (await receive())["type"] != "http.disconnect":
        pass


class Batcher:
    """The queue and its worker. ``submit`` is what a route calls; ``start``/``stop`` belong to the app's
    lifespan (``stop`` refuses new work and finishes what is queued or running)."""

    def __init__(self, predictor: Any, settings: ServeSettings, stats: ServerStats,
                 lock: threading.Lock | None = None):
        """``lock``: held around each predictor call (default: ``predictor_lock(predictor)``; a Batcher over a
        wrapper of a predictor passes the predictor's)."""
        self.predictor, self.settings, self.stats = predictor, settings, stats
        self.lock = lock or predictor_lock(predictor)
        self.queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=settings.queue_size)
        self.accepting = False
        self.in_flight = 0  # requests waiting in submit
        self._worker: asyncio.Task | None = None

    async def start(self) -> None:
        self.accepting = True
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self.accepting = False
        await self.queue.join()
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass

    async def submit(self, texts: list[str], labels: tuple[str, ...] | None, request: Request | None = None) -> list[Any]:
        """Entities for each text, or RequestFailed: 503 (stopping, or the queue is full), 504 (no answer by the
        deadline), 499 (``request``'s client disconnected), 400 / 500 (the predictor raised)."""
        if not self.accepting:
            raise RequestFailed(503, "the server is not accepting requests (starting or shutting down)", RETRY_SOON)
        loop = asyncio.get_running_loop()
        job = Job(texts, labels, time.monotonic() + self.settings.timeout, loop.create_future())
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            raise RequestFailed(503, "the server is busy; retry later", RETRY_SOON) from None
        self.in_flight += 1
        gone = asyncio.ensure_future(_client_gone(request.receive)) if request is not None else None
        try:
            await asyncio.wait({job.future} | ({gone} if gone else set()), timeout=self.settings.timeout,
                               return_when=asyncio.FIRST_COMPLETED)
            if job.future.done():
                return job.future.result()
            if gone is not None and gone.done():
                raise RequestFailed(CLIENT_GONE, "the client closed the connection")
            raise RequestFailed(504, f"no answer within {self.settings.timeout:g} s (the server's --timeout)")
        finally:  # the worker skips a job whose future is done: answered, cancelled here, or failed
            self.in_flight -= 1
            job.future.cancel()
            if gone is not None:
                gone.cancel()
                if gone.done() and not gone.cancelled():
                    gone.exception()  # a receive that raised counts as the client gone; nothing left to log

    async def _run(self) -> None:
        while True:
            jobs = await self._gather()
            try:
                groups: dict[tuple[str, ...] | None, list[Job]] = {}
                for job in jobs:
                    groups.setdefault(job.labels, []).append(job)
                for labels, group in groups.items():
                    await self._run_group(labels, group)
            except Exception as exc:  # a fault of the worker itself fails this round, never the server
                for job in jobs:
                    job.fail(failure_of(exc))
            finally:
                for _ in jobs:
                    self.queue.task_done()

    async def _gather(self) -> list[Job]:
        """The next batch: the first queued job, plus whatever arrives within max_wait_ms up to max_batch texts."""
        jobs = [await self.queue.get()]
        n = len(jobs[0].texts)
        until = time.monotonic() + self.settings.max_wait_ms / 1000
        while n < self.settings.max_batch:
            timeout = until - time.monotonic()
            if timeout <= 0:
                break
            try:
                job = await asyncio.wait_for(self.queue.get(), timeout)
            except asyncio.TimeoutError:
                break
            jobs.append(job)
            n += len(job.texts) if job.wanted else 0
        return jobs

    async def _run_group(self, labels: tuple[str, ...] | None, jobs: list[Job]) -> None:
        pending = deque((job, i) for job in jobs for i in range(len(job.texts)))
        while pending:
            chunk: list[tuple[Job, int]] = []
            chars = 0
            while pending and len(chunk) < self.settings.max_batch:
                job, i = pending[0]
                if not job.wanted:  # checked just before each call: abandoned or expired texts are never computed
                    pending.popleft()
                    self.stats.skip_texts()
                    continue
                if chunk and chars + len(job.texts[i]) > self.settings.max_batch_chars:
                    break
                chunk.append(pending.popleft())
                chars += len(job.texts[i])
            if chunk:
                await self._predict(labels, chunk)

    async def _predict(self, labels: tuple[str, ...] | None, chunk: list[tuple[Job, int]]) -> None:
        texts = [job.texts[i] for job, i in chunk]
        try:
            results = await asyncio.to_thread(self._call, texts, list(labels) if labels else None)
            if len(results) != len(texts):
                raise RuntimeError(f"the predictor returned {len(results)} results for {len(texts)} texts")
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # BaseException too: a tokenizer panic (pyo3's PanicException) is one
            self.stats.add_failed_batch()
            await self._isolate(chunk, exc)
            return
        self.stats.add_batch(len(texts))
        for (job, i), entities in zip(chunk, results, strict=True):
            job.results[i] = entities
        for job in dict.fromkeys(job for job, _ in chunk):
            job.finish_if_complete()

    def _call(self, texts: list[str], labels: list[str] | None) -> list:
        with self.lock:
            return self.predictor.predict(texts, labels)

    async def _isolate(self, chunk: list[tuple[Job, int]], exc: BaseException) -> None:
        """A call (or a decode step) failed: with one request in it, that request fails; with several, each is rerun
        alone (with its own label subset)."""
        jobs = list(dict.fromkeys(job for job, _ in chunk))
        if len(jobs) == 1:
            jobs[0].fail(failure_of(exc))
            return
        for job in jobs:
            if job.wanted:
                await self._predict(job.labels, [(j, i) for j, i in chunk if j is job])


class ContinuousBatcher(Batcher):
    """Iteration-level scheduling over a predictor's ``ContinuousDecoder`` (the transformers backend): the worker
    runs decode steps back to back; before each, every queued request joins (its texts' prefill runs in that step)
    and requests no one waits for any more (client gone, deadline passed) leave, their rows freed at once; after
    each, every text whose answer ended goes back to its request, which is answered when its last text is.

    Kept from the micro-batching worker: the bounded queue (503 beyond it), deadlines (504), the client-gone check
    (499), bad input failing only its own request (400: a label subset is checked when the request joins), the
    predictor's lock around each step, and a failed step's requests rerun one by one through ``predict`` so only
    the request that caused it fails. Results are ``Prediction``s; ``submit`` gives entities, or the predictions
    themselves with ``detailed=True`` (the chat route's raw answers)."""

    def __init__(self, predictor: Any, settings: ServeSettings, stats: ServerStats, decoder: Any,
                 lock: threading.Lock | None = None):
        super().__init__(predictor, settings, stats, lock)
        self.decoder = decoder
        self.running: dict[int, Job] = {}  # admitted to the decoder, by id

    async def submit(self, texts: list[str], labels: tuple[str, ...] | None, request: Any = None,
                     detailed: bool = False) -> list[Any]:
        predictions: list[Any] = await super().submit(texts, labels, request)
        return predictions if detailed else [p.entities for p in predictions]

    def _call(self, texts: list[str], labels: list[str] | None) -> list[Any]:
        with self.lock:
            return self.predictor.predict_detailed(texts, labels)

    async def _run(self) -> None:
        while True:
            joining = [] if self.running else [await self.queue.get()]
            while True:
                try:
                    joining.append(self.queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            try:
                await self._advance(joining)
            except Exception as exc:  # a fault of the worker itself fails the jobs it holds, never the server
                for job in list(self.running.values()) + joining:
                    job.fail(failure_of(exc))
                    self._release(job)
                self.running.clear()
                await asyncio.to_thread(self._reset)

    async def _advance(self, joining: list[Job]) -> None:
        # jobs no one waits for any more (answered, failed, client gone, past the deadline) leave in this step
        leaving = [job for job in self.running.values() if not job.wanted]
        for job in joining:
            if not job.wanted:
                self.stats.skip_texts(len(job.texts))
                self._release(job)
        joining = [job for job in joining if job.wanted]
        self.running.update((id(job), job) for job in joining)
        try:
            completed, refused, rows = await asyncio.to_thread(self._step, joining, leaving)
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # the step itself failed: start afresh, rerun each request alone
            self.stats.add_failed_batch()
            jobs = list(self.running.values())
            self.running.clear()
            await asyncio.to_thread(self._reset)
            await self._isolate([(job, i) for job in jobs if job.wanted
                                 for i in range(len(job.texts)) if job.results[i] is None], exc)
            for job in jobs:
                self._release(job)
            return
        for job in leaving:
            self.running.pop(id(job), None)
            self._release(job)
        for job, error in refused:
            job.fail(failure_of(error))
        for job, i, prediction in completed:
            job.results[i] = prediction
            job.finish_if_complete()
        for job in dict.fromkeys([job for job, _ in refused] + [job for job, _, _ in completed]):
            if job.future.done():  # answered or failed: its rows are already out of the decoder
                self.running.pop(id(job), None)
                self._release(job)
        self.stats.add_step(rows, len(completed))

    def _release(self, job: Job) -> None:
        """The job is done with the queue (once): ``stop`` waits for every queued job to be released."""
        if not job.released:
            job.released = True
            self.queue.task_done()

    def _step(self, joining: list[Job], leaving: list[Job]) -> tuple[list, list, int]:
        completed, refused = [], []
        with self.lock:
            for job in leaving:
                self.decoder.drop(job)
            for job in joining:
                try:
                    completed += self.decoder.admit(job, job.texts, list(job.labels) if job.labels else None)
                except BAD_INPUT as exc:
                    self.decoder.drop(job)
                    refused.append((job, exc))
            rows = 0
            if self.decoder.busy:
                completed += self.decoder.step()
                rows = self.decoder.rows_last_step
        return completed, refused, rows

    def _reset(self) -> None:
        with self.lock:
            self.decoder.reset()
