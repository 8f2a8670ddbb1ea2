"""Connections that never finish their headers: uvicorn times out a keep-alive connection after a response, but
not one that is still sending (or never sends) its request line and headers, and its ``limit_concurrency`` counts
those idle sockets, so a few hundred of them used to turn every client away with 503 for as long as they stayed.

``ConnectionGuard`` counts the open connections and builds an h11 protocol class for uvicorn that closes a
connection whose request headers are not complete within ``header_timeout`` seconds of its opening (or of its
previous response). The app's ``ConnectionLimit`` middleware (``guards``) answers 503 beyond ``max_connections``,
so those 503s are counted in ``/metrics`` like any other answer.
"""

from __future__ import annotations

import asyncio


class ConnectionGuard:
    """Open connections of one server and the ones closed for not sending their headers in time."""

    def __init__(self, header_timeout: float):
        self.header_timeout = header_timeout
        self.open = 0
        self.timed_out = 0

    def protocol_class(self) -> type:
        """An ``h11`` protocol class for ``uvicorn.run(http=...)`` that counts connections into this guard and
        closes the ones whose headers are late."""
        from uvicorn.protocols.http.h11_impl import H11Protocol

        guard = self

        class HeaderTimeoutH11Protocol(H11Protocol):
            _header_timer: asyncio.TimerHandle | None = None
            _armed_cycle = None  # the request cycle at arming time: a new one means the headers arrived

            def connection_made(self, transport) -> None:
                super().connection_made(transport)
                guard.open += 1
                self._arm()

            def connection_lost(self, exc) -> None:
                guard.open -= 1
                self._disarm()
                super().connection_lost(exc)

            def data_received(self, data: bytes) -> None:
                super().data_received(data)
                self._disarm_when_headers_arrived()

            def on_response_complete(self) -> None:
                self._arm()  # the next request's headers get the same time (before pipelined ones are parsed)
                super().on_response_complete()
                if self.transport.is_closing():
                    self._disarm()
                self._disarm_when_headers_arrived()

            def _arm(self) -> None:
                self._disarm()
                self._armed_cycle = self.cycle
                self._header_timer = self.loop.call_later(guard.header_timeout, self._headers_too_late)

            def _disarm(self) -> None:
                if self._header_timer is not None:
                    self._header_timer.cancel()
                    self._header_timer = None

            def _disarm_when_headers_arrived(self) -> None:
                if self.cycle is not self._armed_cycle:
                    self._disarm()

            def _headers_too_late(self) -> None:
                self._header_timer = None
                if not self.transport.is_closing():
                    guard.timed_out += 1
                    self.transport.close()

        return HeaderTimeoutH11Protocol
