"""``nerft serve``: flags, the refusal to expose an unauthenticated server, and uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
from typing import TYPE_CHECKING, Any

from .. import config as cfglib
from ..inference.options import PredictOptions
from ..schema import NerftError
from .connections import ConnectionGuard, connection_limit
from .settings import ServeSettings

if TYPE_CHECKING:
    from ..inference.base import Predictor

API_KEY_ENV = "NERFT_API_KEY"


def register(subparsers: Any, name: str, summary: str) -> argparse.ArgumentParser:
    from ..inference.options import add_load_arguments

    p = subparsers.add_parser(name, help=summary, description=summary)
    add_load_arguments(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="bind address (default: localhost only; any other address needs an API key or --no-auth)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--no-auth", action="store_true",
                   help="serve a non-loopback --host without an API key: anyone who can reach it may use it")
    cfglib.add_config_arguments(p, ServeSettings, skip={"model_name"})
    p.add_argument("--config", metavar="FILE.yaml", help="decoding options (the flags below) from a YAML file")
    cfglib.add_config_arguments(p, PredictOptions, skip={"batch_size"})  # ServeSettings' --batch-size sets it
    p.set_defaults(func=run_serve)
    return p


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name may resolve to any interface


def check_exposure(host: str, api_key: str | None, no_auth: bool) -> None:
    """Refuse to bind anything but loopback without a key, unless --no-auth says so explicitly."""
    if no_auth and api_key:
        raise NerftError(f"--no-auth contradicts the API key given (--api-key or {API_KEY_ENV}); drop one")
    if not is_loopback(host) and not api_key and not no_auth:
        raise NerftError(f"--host {host} would let anyone who reaches this machine use the model without a key; "
                         f"set {API_KEY_ENV} (or --api-key), or pass --no-auth to serve it open")


def check_port(host: str, port: int) -> None:
    """Refuse a port out of range or one this address cannot bind (in use, not ours), before the model loads."""
    if not 1 <= port <= 65535:
        raise NerftError(f"--port {port} is not a TCP port (1-65535)")
    try:  # as uvicorn binds (SO_REUSEADDR), then released at once
        socket.create_server((host.strip("[]"), port), family=socket.AF_INET6 if ":" in host else socket.AF_INET).close()
    except OSError as exc:
        raise NerftError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def host_rules(settings: ServeSettings, host: str) -> None:
    """On loopback without a key, answer only requests addressed to loopback names (DNS rebinding), unless
    --allowed-hosts says otherwise."""
    if settings.allowed_hosts is None and is_loopback(host) and not settings.api_key:
        settings.allowed_hosts = ["loopback", host]


def uvicorn_options(settings: ServeSettings, guard: ConnectionGuard) -> dict:
    """How ``nerft serve`` runs uvicorn: in-flight requests get their timeout to finish on shutdown; connections
    go through ``guard`` (header timeout); no ``limit_concurrency`` (the app's ConnectionLimit answers instead)."""
    return {"timeout_graceful_shutdown": int(settings.timeout) + 5, "http": guard.protocol_class()}


WARM_UP_TEXT = "张三昨天在北京参观了清华大学。John Smith visited Paris."


def warm_up(predictor: Predictor) -> float:
    """One prediction before the server listens (kernels chosen, caches built, lazy imports done: the first call
    of a model costs seconds more than the next, measured 7.2 s against 0.2-1 s); returns its seconds, logged."""
    import time

    start = time.perf_counter()
    predictor.predict([WARM_UP_TEXT])
    seconds = time.perf_counter() - start
    logging.getLogger("nerft.serve").info(f"warm-up prediction: {seconds:.2f} s")
    return seconds


def run_serve(args: argparse.Namespace) -> int:
    settings = cfglib.build_config(ServeSettings, args, base={"api_key": os.environ.get(API_KEY_ENV) or None})
    check_exposure(args.host, settings.api_key, args.no_auth)  # before the model loads: fails in a second
    check_port(args.host, args.port)
    host_rules(settings, args.host)

    import uvicorn

    from ..inference.loading import open_predictor
    from ..inference.location import decoding_options
    from ..inference.options import LoadOptions
    from .app import create_app
    from .openai_api import openai_router  # POST /v1/chat/completions, GET /v1/models
    from .page import describe_model, page_router  # GET / (the page), GET /v1/info

    load = cfglib.build_config(LoadOptions, args)
    options = decoding_options(load, args, config_path=args.config)  # the run's, under --config/flags
    options.batch_size = settings.max_batch
    predictor = open_predictor(load, options)
    warm_up(predictor)  # before the port opens: the first client does not pay for first-call set-up
    auth = "bearer key" if settings.api_key else "none (--no-auth)" if args.no_auth else "none (loopback only)"
    logging.getLogger("nerft.serve").info(f"{predictor.name} on http://{args.host}:{args.port}; "
                                          f"authentication: {auth}")
    routers = [openai_router(), page_router(describe_model(load))]
    # Connections that do not finish their headers in time are closed; beyond --max-connections the app answers
    # 503 (counted in /metrics), not uvicorn's limit_concurrency, which counted idle sockets and answered unseen.
    settings.max_connections, lowered = connection_limit(settings.max_connections)
    if lowered:
        logging.getLogger("nerft.serve").warning(lowered)
    guard = ConnectionGuard(settings.header_timeout, settings.max_connections, settings.min_body_rate)
    uvicorn.run(create_app(predictor, settings, routers=routers, connections=guard), host=args.host,
                port=args.port, **uvicorn_options(settings, guard))
    return 0
