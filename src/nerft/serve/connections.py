"""Connections that hold a slot without doing their part: uvicorn times out a keep-alive connection after a
response, but not one that is still sending (or never sends) its request line and headers, nor a body that
trickles in, and its ``limit_concurrency`` counts those sockets, so a few hundred of them used to turn every
client away with 503 for as long as they stayed (and past the descriptor limit, accept() itself failed).

``ConnectionGuard`` counts the open connections and builds an h11 protocol class for uvicorn that

- closes a connection whose request headers are not complete within ``header_timeout`` seconds of its opening
  (or of its previous response), and one whose body does not arrive at ``min_body_rate`` bytes a second (with
  ``header_timeout`` seconds of grace): a slow body is closed like a slow header;
- when ``max_connections`` are open and another arrives, closes the one that has waited longest without a request
  for the app (an idle keep-alive connection, one still sending headers, or the slowest body), so a new client
  always gets in while the open connections only wait; connections whose request the app is answering are never
  closed for room. Only when every connection is busy in the app does the new one's request get the app's 503
  (``guards.ConnectionLimit``, so /metrics counts it; /health is answered even then).

``watch_accept_errors`` keeps asyncio's "socket.accept() out of system resource" (EMFILE: the process is out of
file descriptors) from logging a traceback per refused connection: one line per ``interval`` seconds with the
count. ``connection_limit`` derives the limit from the descriptor limit, so the guard's limit is reached first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

log = logging.getLogger("nerft.serve")

HEADERS, BODY, APP = "headers", "body", "app"  # what a connection is doing: waiting for it, or for the app


def connection_limit(wanted: int, reserve: int = 64) -> tuple[int, str | None]:
    """(the connection limit to use, why it is lower than ``wanted``): at most the process's soft descriptor limit
    less ``reserve`` (the model's files, logs, the listening socket), so connections run out before descriptors."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # not POSIX, or no limit to read
        return wanted, None
    if soft == resource.RLIM_INFINITY or wanted <= soft - reserve:
        return wanted, None
    limit = max(soft - reserve, 1)
    return limit, (f"--max-connections {wanted} lowered to {limit}: the process may open {soft} files (ulimit -n) "
                   f"and keeps {reserve} for its own")


class ConnectionGuard:
    """Open connections of one server, and the ones closed: headers too late (``timed_out``), a body too slow
    (``slow_bodies``), closed to make room for a new one (``evicted``); accept() failures (``accept_errors``)."""

    def __init__(self, header_timeout: float, max_connections: int | None = None, min_body_rate: float = 8192.0):
        self.header_timeout, self.max_connections, self.min_body_rate = header_timeout, max_connections, min_body_rate
        self.open = 0
        self.timed_out = self.slow_bodies = self.evicted = self.accept_errors = 0
        self.connections: dict = {}  # protocol -> (phase, since): the ones that can be asked to make room

    def make_room(self, newcomer: asyncio.Protocol) -> None:
        """Close the connection that has waited longest without giving the app a request (never one the app is
        answering, nor the newcomer; one that has been answered before only when no other waits), when the limit
        is passed."""
        if self.max_connections is None or self.open <= self.max_connections:
            return
        # a connection that has been answered before (a client's keep-alive between requests) goes only after every
        # one that has not: under a flood of fresh connections, closing it races the client's next request
        waiting = {p: (p.answered > 0, since) for p, (phase, since) in self.connections.items()
                   if phase != APP and p is not newcomer}
        if waiting:
            victim = min(waiting, key=waiting.__getitem__)
            self.evicted += 1
            victim.close_for_room()

    def watch_accept_errors(self, loop: asyncio.AbstractEventLoop, interval: float = 10.0) -> None:
        """Count asyncio's accept() resource errors on ``loop`` and log them once per ``interval`` seconds (other
        exceptions go to the handler that was there)."""
        previous = loop.get_exception_handler()
        last = {"logged": 0.0, "count": 0}

        def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            if "out of system resource" not in str(context.get("message", "")):
                if previous is not None:
                    previous(loop, context)
                else:
                    loop.default_exception_handler(context)
                return
            self.accept_errors += 1
            last["count"] += 1
            now = time.monotonic()
            if now - last["logged"] >= interval:
                exc = context.get("exception")
                log.error(f"accept() failed {last['count']} time(s) in the last {interval:g} s: "
                          f"{getattr(exc, 'strerror', None) or exc} (out of file descriptors: raise ulimit -n "
                          "or lower --max-connections)")
                last["logged"], last["count"] = now, 0

        loop.set_exception_handler(handler)

    def protocol_class(self) -> type:
        """An ``h11`` protocol class for ``uvicorn.run(http=...)`` that counts connections into this guard and
        closes the late, the slow and, when full, the longest waiting."""
        from uvicorn.protocols.http.h11_impl import H11Protocol

        guard = self

        class GuardedH11Protocol(H11Protocol):
            _timer: asyncio.TimerHandle | None = None
            _armed_cycle = None  # the request cycle at arming time: a new one means the headers arrived
            _counted = False
            answered = 0  # responses completed on this connection

            # a Transport, as uvicorn's own connection_made takes (narrower than asyncio's BaseTransport)
            def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
                super().connection_made(transport)
                guard.open += 1
                self._counted = True
                self._wait_for_headers()
                guard.make_room(self)

            def connection_lost(self, exc: Exception | None) -> None:
                self._forget()
                super().connection_lost(exc)

            def data_received(self, data: bytes) -> None:
                super().data_received(data)
                self._follow()

            def on_response_complete(self) -> None:
                self.answered += 1
                self._wait_for_headers()  # the next request's headers get the same time (before pipelined ones)
                super().on_response_complete()
                if self.transport.is_closing():
                    self._cancel()
                self._follow()

            def close_for_room(self) -> None:
                self._forget()
                if not self.transport.is_closing():
                    self.transport.close()

            def _forget(self) -> None:
                """Out of the guard's count (once), timers off."""
                if self._counted:
                    guard.open -= 1
                    self._counted = False
                guard.connections.pop(self, None)
                self._cancel()

            def _phase(self, phase: str) -> None:
                if self._counted:
                    guard.connections[self] = (phase, time.monotonic())

            def _wait_for_headers(self) -> None:
                self._cancel()
                self._armed_cycle = self.cycle
                self._phase(HEADERS)
                self._timer = self.loop.call_later(guard.header_timeout, self._too_late, "headers")

            def _follow(self) -> None:
                """After data: headers complete -> the body's deadline (from its declared length), or the app."""
                if self.cycle is self._armed_cycle or self.cycle is None:
                    return
                if getattr(self.cycle, "more_body", False) and not self.transport.is_closing():
                    if guard.connections.get(self, (None,))[0] != BODY:
                        self._cancel()
                        self._phase(BODY)
                        declared = dict(self.headers).get(b"content-length", b"0")
                        size = int(declared) if declared.isdigit() else 0
                        self._timer = self.loop.call_later(guard.header_timeout + size / guard.min_body_rate,
                                                           self._too_late, "body")
                    return
                self._cancel()
                self._armed_cycle = self.cycle
                self._phase(APP)

            def _cancel(self) -> None:
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None

            def _too_late(self, what: str) -> None:
                self._timer = None
                if not self.transport.is_closing():
                    if what == "headers":
                        guard.timed_out += 1
                    else:
                        guard.slow_bodies += 1
                    self.transport.close()

        return GuardedH11Protocol
