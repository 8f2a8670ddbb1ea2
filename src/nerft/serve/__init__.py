"""``nerft serve``: an HTTP service (FastAPI + uvicorn) over a Predictor, safe under hostile or careless clients.

The package imports only downward: ``settings`` (limits, the flags' schema) <- ``metrics`` (bounded counters,
Prometheus text) <- ``guards`` (API key, body limit) and ``batching`` (queue, worker, per-request deadlines and
failure isolation) <- ``app`` (``create_app``: routes and middleware) <- ``cli`` (flags, bind check, uvicorn).
"""

from __future__ import annotations

from .app import NerRequest, NerResponse, create_app
from .batching import Batcher, RequestFailed
from .cli import check_exposure, is_loopback, register, run_serve
from .metrics import ServerStats, prometheus_text
from .settings import ServeSettings

__all__ = ["create_app", "ServeSettings", "ServerStats", "Batcher", "RequestFailed", "NerRequest", "NerResponse",
           "prometheus_text", "register", "run_serve", "check_exposure", "is_loopback"]
