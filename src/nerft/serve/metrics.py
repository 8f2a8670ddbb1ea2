"""The server's counters (bounded: a fixed set of numbers per route and status code, never a list that grows with
traffic) and their Prometheus text exposition (format 0.0.4, written here: no client library).

Series (``path`` is the template of the route that answered, or ``other``, so the label set stays bounded):

- ``nerft_http_requests_total{path, code}``: answered requests by status code (499: the client left first);
- ``nerft_http_request_duration_seconds{path}``: histogram of the time from the request's arrival to its last byte;
- ``nerft_requests_in_flight``: NER requests waiting for their answer;
- ``nerft_queue_depth``: requests queued for the batch worker (not yet taken into a batch);
- ``nerft_batch_texts``: histogram of texts per predictor call;
- ``nerft_texts_total``: texts predicted; ``nerft_texts_skipped_total``: texts never computed because their
  request was abandoned or past its deadline; ``nerft_batch_failures_total``: predictor calls that raised (their
  requests were then retried one by one).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from starlette.routing import Match

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
CLIENT_GONE = 499  # nginx's "client closed request": counted, never actually sent
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    """Fixed buckets (upper bounds), their counts, the sum and the count of observations."""

    def __init__(self, buckets: Iterable[float]):
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        i = next((k for k, bound in enumerate(self.bounds) if value <= bound), len(self.bounds))
        self.counts[i] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, observations <= le) per bucket, ending with +Inf (= count)."""
        out, running = [], 0
        for bound, n in zip([*self.bounds, math.inf], self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == math.inf else _number(bound), running))
        return out


@dataclass
class ServerStats:
    """Everything /metrics reports except the gauges read at scrape time (queue depth, requests in flight)."""

    requests: dict[tuple[str, int], int] = field(default_factory=dict)  # (path, status code) -> count
    latency: dict[str, Histogram] = field(default_factory=dict)  # path -> seconds
    batch_texts: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))
    texts: int = 0
    skipped_texts: int = 0
    failed_batches: int = 0
    max_batch_seen: int = 0

    @property
    def batches(self) -> int:
        return self.batch_texts.count

    def add_batch(self, n_texts: int) -> None:
        self.batch_texts.observe(n_texts)
        self.texts += n_texts
        self.max_batch_seen = max(self.max_batch_seen, n_texts)

    def add_request(self, path: str, status: int, seconds: float) -> None:
        self.requests[(path, status)] = self.requests.get((path, status), 0) + 1
        self.latency.setdefault(path, Histogram(LATENCY_BUCKETS)).observe(seconds)


def prometheus_text(stats: ServerStats, queue_depth: int, in_flight: int) -> str:
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"])

    def histogram(name: str, hist: Histogram, labels: str = "") -> None:
        sep = "," if labels else ""
        for le, n in hist.cumulative():
            lines.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {n}')
        braces = f"{{{labels}}}" if labels else ""
        lines.append(f"{name}_sum{braces} {_number(hist.sum)}")
        lines.append(f"{name}_count{braces} {hist.count}")

    family("nerft_http_requests_total", "counter", "HTTP requests answered, by route and status code.")
    for (path, code), n in sorted(stats.requests.items()):
        lines.append(f'nerft_http_requests_total{{path="{_label(path)}",code="{code}"}} {n}')
    family("nerft_http_request_duration_seconds", "histogram", "Time from a request's arrival to its last byte.")
    for path, hist in sorted(stats.latency.items()):
        histogram("nerft_http_request_duration_seconds", hist, f'path="{_label(path)}"')
    family("nerft_requests_in_flight", "gauge", "NER requests waiting for their answer.")
    lines.append(f"nerft_requests_in_flight {in_flight}")
    family("nerft_queue_depth", "gauge", "Requests queued for the batch worker.")
    lines.append(f"nerft_queue_depth {queue_depth}")
    family("nerft_batch_texts", "histogram", "Texts per predictor call.")
    histogram("nerft_batch_texts", stats.batch_texts)
    family("nerft_texts_total", "counter", "Texts predicted.")
    lines.append(f"nerft_texts_total {stats.texts}")
    family("nerft_texts_skipped_total", "counter", "Texts never computed: their request was abandoned or expired.")
    lines.append(f"nerft_texts_skipped_total {stats.skipped_texts}")
    family("nerft_batch_failures_total", "counter", "Predictor calls that raised (then retried request by request).")
    lines.append(f"nerft_batch_failures_total {stats.failed_batches}")
    return "\n".join(lines) + "\n"


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class RequestMetrics:
    """ASGI middleware (outermost): counts every HTTP response by route and status code and times it."""

    def __init__(self, app, stats: ServerStats, routes: Callable[[], list]):
        self.app, self.stats, self.routes = app, stats, routes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status, failed = time.monotonic(), None, False

        async def send_and_note(message) -> None:
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

    def route_of(self, scope) -> str:
        """The path template of the route that answered (or, for a request answered before routing, such as a 401,
        the route it was meant for); ``other`` for anything else, so that the label set stays bounded."""
        route = scope.get("route")  # set by the router once it dispatched
        if route is None:
            route = next((r for r in self.routes() if r.matches(scope)[0] != Match.NONE), None)
        path = getattr(route, "path", None)  # a mounted or included router has none: "other"
        return path if isinstance(path, str) else "other"
