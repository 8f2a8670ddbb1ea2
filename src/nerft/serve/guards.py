"""What stands between a client and the app: bearer-key authentication and a body-size limit, both ASGI
middleware that answer before any body is parsed, and a JSON response that survives text that is not valid
Unicode (a lone surrogate echoed back in an error message)."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import time
from collections.abc import Callable
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# reachable without the API key: probes of a load balancer, and the page at / (static: it asks for the key)
OPEN_PATHS = frozenset({"/health", "/"})


class SafeJSONResponse(JSONResponse):
    """JSON that never fails on a lone surrogate: it is written as its JSON escape (``\\ud800``)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode(
            "utf-8", "backslashreplace")


async def reject(send: Send, status: int, detail: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """Answer ``{"detail": ...}`` and close the connection (the rest of the body is never read)."""
    body = SafeJSONResponse({"detail": detail}).body
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": body})


def header(scope: Scope, name: bytes) -> bytes | None:
    return next((v for k, v in scope["headers"] if k.lower() == name), None)


class BearerAuth:
    """Every HTTP path but ``OPEN_PATHS`` needs ``Authorization: Bearer <key>`` (compared in constant time)."""

    def __init__(self, app: ASGIApp, api_key: str):
        self.app, self.key = app, api_key.encode("ascii")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS and not self.authorized(scope):
            await reject(send, 401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                         ((b"www-authenticate", b"Bearer"),))
            return
        await self.app(scope, receive, send)

    def authorized(self, scope: Scope) -> bool:
        scheme, _, token = (header(scope, b"authorization") or b"").partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)


class BodyLimit:
    """Reads each request body up to ``max_bytes`` within ``read_timeout`` seconds before the app sees it: 413 as
    soon as the declared Content-Length or the bytes received pass the limit, 408 for a body that trickles in too
    slowly. The app then reads the buffered body as usual."""

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout: float):
        self.app, self.max_bytes, self.read_timeout = app, max_bytes, read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared is not None and not declared.isdigit():
            await reject(send, 400, "invalid Content-Length header")
            return
        if declared is not None and int(declared) > self.max_bytes:
            await reject(send, 413, self.too_large(declared.decode()))
            return
        chunks, size, deadline = [], 0, time.monotonic() + self.read_timeout
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                await reject(send, 408, f"the request body did not arrive within {self.read_timeout:g} s")
                return
            if message["type"] == "http.disconnect":
                return  # the client left before sending its body: nothing to answer
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await reject(send, 413, self.too_large(f"more than {self.max_bytes}"))
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        buffered: dict | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Message:
            nonlocal buffered
            if buffered is not None:
                message, buffered = buffered, None
                return message
            return await receive()  # after the body: the disconnect notice, when it comes

        await self.app(scope, replay, send)

    def too_large(self, size: str) -> str:
        return f"the request body has {size} bytes; the limit is {self.max_bytes} (--max-body-bytes)"


class ConnectionLimit:
    """503 with ``Retry-After: 1`` while more than ``max_connections`` connections are open (``count()``), answered
    by the app so that ``/metrics`` counts it (uvicorn's own limit answers before any middleware). ``/health`` is
    answered even then: an orchestrator asking whether the server lives must not be told it does not."""

    def __init__(self, app: ASGIApp, max_connections: int, count: Callable[[], int]):
        self.app, self.max_connections, self.count = app, max_connections, count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.count() > self.max_connections and scope.get("path") != "/health":
            await reject(send, 503, f"more than {self.max_connections} open connections (--max-connections); "
                                    "retry later", ((b"retry-after", b"1"),))
            return
        await self.app(scope, receive, send)


def host_name(value: bytes) -> str:
    """The name in a Host header, without its port: ``[::1]:8000`` -> ``::1``, ``Localhost.:80`` -> ``localhost``."""
    text = value.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1:].partition("]")[0]
    return text.rpartition(":")[0].rstrip(".") if text.count(":") == 1 else text.rstrip(".")


def is_loopback_name(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HostCheck:
    """421 for a request whose Host header is not an allowed name: a server on loopback without a key answers only
    loopback names (``localhost``, ``127.x.y.z``, ``[::1]``, and the bound host), so a web page that rebinds its
    own DNS name to 127.0.0.1 cannot use it. ``allowed``: host names (a port is ignored); ``loopback`` stands for
    every loopback name and address; ``*`` allows any."""

    def __init__(self, app: ASGIApp, allowed: list[str]):
        self.app = app
        self.any = "*" in allowed
        self.allowed = {host_name(a.encode()) for a in allowed}
        self.loopback = "loopback" in self.allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.any and not self.accepts(header(scope, b"host")):
            await reject(send, 421, "this server answers only requests addressed to an allowed host name "
                                    "(--allowed-hosts); on loopback: localhost, 127.0.0.1 or [::1]")
            return
        await self.app(scope, receive, send)

    def accepts(self, value: bytes | None) -> bool:
        if value is None:  # HTTP/1.0 without Host: the client reached the socket directly
            return True
        name = host_name(value)
        return name in self.allowed or (self.loopback and is_loopback_name(name))
