"""Running the app with uvicorn, with what uvicorn's options leave open against slow clients.

uvicorn's keep-alive timer is cancelled by any byte received, and nothing times a request's
headers, so a client sending one byte a second holds a connection for ever. ``GuardedH11Protocol``
gives every connection ``idle_timeout`` seconds from its start (or from its last response)
to deliver a complete request head, and keeps at most ``max_connections`` open: a new one
closes the oldest connection that has no request in progress, or is refused if all are busy.
"""

from __future__ import annotations

import time
from functools import partial

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
        b"connection: close\r\ncontent-length: 76\r\n\r\n"
        b'{"error": "the server has too many open connections; try again in a moment"}')


class GuardedH11Protocol(H11Protocol):
    def __init__(self, *args, idle_timeout: float = 15.0, max_connections: int = 256, **kwargs):
        super().__init__(*args, **kwargs)
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self._head_timer = None
        self.opened = time.monotonic()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.max_connections and not self._make_room():
            transport.write(BUSY)
            transport.close()
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the request head is complete
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _make_room(self) -> bool:
        idle = [c for c in self.connections if c is not self and isinstance(c, GuardedH11Protocol) and c._idle()]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.opened)
        oldest._close()
        self.connections.discard(oldest)
        return True

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.idle_timeout, self._close)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _close(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.close()


def run(app, *, host: str, port: int, idle_timeout: float, max_connections: int) -> None:
    import uvicorn

    from .guard import fix_mmap_threshold

    fix_mmap_threshold()  # before the first batch: large buffers never settle in the heap
    uvicorn.run(app, host=host, port=port, log_level="warning",
                http=partial(GuardedH11Protocol, idle_timeout=idle_timeout, max_connections=max_connections),
                # longer than clients' usual 5 s idle expiry, so a client never reuses a
                # connection the server is closing at that very moment
                timeout_keep_alive=max(1, int(idle_timeout)),
                limit_concurrency=max_connections + 16,  # requests in progress; beyond: 503
                backlog=max_connections,
                timeout_graceful_shutdown=5)
