"""The server's metrics, kept with ``prometheus_client`` in a registry of the app's own (two apps in one process
never share a counter), exposed at ``GET /metrics`` in the Prometheus text format 0.0.4. Every series is bounded:
a fixed set per route and status code, never a label that grows with traffic.

Series (``path`` is the template of the route that answered, or ``other``):

- ``nerft_http_requests_total{path, code}``: answered requests by status code (499: the client left first);
- ``nerft_http_request_duration_seconds{path}``: histogram of the time from the request's arrival to its last byte;
- ``nerft_requests_in_flight``: NER requests waiting for their answer;
- ``nerft_queue_depth``: requests queued for the batch worker (not yet taken into a batch);
- ``nerft_batch_texts``: histogram of texts per predictor call (the continuous scheduler: rows per decode step);
- ``nerft_texts_total``: texts predicted; ``nerft_texts_skipped_total``: texts never computed because their
  request was abandoned or past its deadline; ``nerft_batch_failures_total``: predictor calls that raised (their
  requests were then retried one by one);
- ``nerft_open_connections``: TCP connections open now; ``nerft_connections_timed_out_total``: connections closed
  because their request headers were not complete in time (``--header-timeout``); ``nerft_connections_closed_total``
  by ``reason``: ``slow_body`` (a body below ``--min-body-rate``), ``for_room`` (the longest waiting connection,
  closed to let a new one in at ``--max-connections``); ``nerft_accept_errors_total``: connections the operating
  system refused to accept (out of file descriptors); all under ``nerft serve``.
Each counter and histogram also has the library's ``_created`` series (when it started counting).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from .connections import ConnectionGuard

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
CLIENT_GONE = 499  # nginx's "client closed request": counted, never actually sent
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServerStats:
    """One app's counters, histograms and gauges (the gauges are set when /metrics is read)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._requests = Counter("nerft_http_requests", "HTTP requests answered, by route and status code.",
                                 ["path", "code"], registry=r)
        self._latency = Histogram("nerft_http_request_duration_seconds",
                                  "Time from a request's arrival to its last byte.", ["path"],
                                  buckets=LATENCY_BUCKETS, registry=r)
        self._in_flight = Gauge("nerft_requests_in_flight", "NER requests waiting for their answer.", registry=r)
        self._queue_depth = Gauge("nerft_queue_depth", "Requests queued for the batch worker.", registry=r)
        self._batch_texts = Histogram("nerft_batch_texts", "Texts per predictor call.", buckets=BATCH_BUCKETS,
                                      registry=r)
        self._texts = Counter("nerft_texts", "Texts predicted.", registry=r)
        self._skipped = Counter("nerft_texts_skipped",
                                "Texts never computed: their request was abandoned or expired.", registry=r)
        self._failed = Counter("nerft_batch_failures",
                               "Predictor calls that raised (then retried request by request).", registry=r)
        self._open_connections = Gauge("nerft_open_connections", "TCP connections open now.", registry=r)
        self._timed_out = Counter("nerft_connections_timed_out",
                                  "Connections closed because their request headers were not complete in time.",
                                  registry=r)  # counted by the connection guard, brought up to it when read
        self._closed = Counter("nerft_connections_closed", "Connections closed by the server, by reason.",
                               ["reason"], registry=r)
        self._accept_errors = Counter("nerft_accept_errors", "Connections accept() failed on (out of descriptors).",
                                      registry=r)
        self.max_batch_seen = 0  # the largest predictor call so far (for tests and logs; not exported)

    def add_batch(self, n_texts: int) -> None:
        self._batch_texts.observe(n_texts)
        self._texts.inc(n_texts)
        self.max_batch_seen = max(self.max_batch_seen, n_texts)

    def add_step(self, rows: int, texts_done: int) -> None:
        """One decode step of the continuous scheduler over ``rows`` rows, which completed ``texts_done`` texts."""
        self._batch_texts.observe(rows)
        self._texts.inc(texts_done)
        self.max_batch_seen = max(self.max_batch_seen, rows)

    def add_request(self, path: str, status: int, seconds: float) -> None:
        self._requests.labels(path, str(status)).inc()
        self._latency.labels(path).observe(seconds)

    def skip_texts(self, n: int = 1) -> None:
        self._skipped.inc(n)

    def add_failed_batch(self) -> None:
        self._failed.inc()

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when it has not been counted yet)."""
        return self.registry.get_sample_value(name, labels) or 0.0

    @property
    def texts(self) -> int:
        return int(self.value("nerft_texts_total"))

    @property
    def skipped_texts(self) -> int:
        return int(self.value("nerft_texts_skipped_total"))

    @property
    def failed_batches(self) -> int:
        return int(self.value("nerft_batch_failures_total"))

    @property
    def batches(self) -> int:
        return int(self.value("nerft_batch_texts_count"))

    def requests(self, path: str, status: int) -> int:
        return int(self.value("nerft_http_requests_total", path=path, code=str(status)))


def prometheus_text(stats: ServerStats, queue_depth: int, in_flight: int,
                    connections: ConnectionGuard | None = None) -> str:
    """The exposition of ``stats``, with the gauges read at this moment (``connections``: the server's
    ``ConnectionGuard``, when there is one)."""
    stats._queue_depth.set(queue_depth)
    stats._in_flight.set(in_flight)
    if connections is not None:
        stats._open_connections.set(connections.open)
        stats._timed_out.inc(connections.timed_out - stats.value("nerft_connections_timed_out_total"))
        for reason, count in (("slow_body", connections.slow_bodies), ("for_room", connections.evicted)):
            stats._closed.labels(reason).inc(count - stats.value("nerft_connections_closed_total", reason=reason))
        stats._accept_errors.inc(connections.accept_errors - stats.value("nerft_accept_errors_total"))
    return generate_latest(stats.registry).decode("utf-8")


class RequestMetrics:
    """ASGI middleware (outermost): counts every HTTP response by route and status code and times it."""

    def __init__(self, app: ASGIApp, stats: ServerStats, routes: Callable[[], list]):
        self.app, self.stats, self.routes = app, stats, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status, failed = time.monotonic(), None, False

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception:
            failed = True  # the outermost error middleware answers 500 unless a response had begun
            raise
        finally:  # a request cancelled (its client gone) before any response counts as 499
            code = status if status is not None else (500 if failed else CLIENT_GONE)
            self.stats.add_request(self.route_of(scope), code, time.monotonic() - start)

    def route_of(self, scope: Scope) -> str:
        """The path template of the route that answered (or, for a request answered before routing, such as a 401,
        the route it was meant for); ``other`` for anything else, so that the label set stays bounded."""
        route = scope.get("route")  # set by the router once it dispatched
        if route is None:
            route = next((r for r in self.routes() if r.matches(scope)[0] != Match.NONE), None)
        path = getattr(route, "path", None)  # a mounted or included router has none: "other"
        return path if isinstance(path, str) else "other"
