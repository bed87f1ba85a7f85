"""A small HTTP/1.1 client for the data plane: one keep-alive pool per replica, responses parsed by
httptools straight from the socket callbacks.

httpx costs more per request than the whole rest of the gateway, so the hot path uses this instead:
an `asyncio.Protocol` per connection, no task per request, and a response that arrives in one packet
(the usual case) is complete before the proxy first looks at it, so relaying it takes no extra await.

The errors tell the proxy what may be retried: nothing sent (`ConnectFailed`, `SendFailed`) is safe;
a request that reached the replica without a complete answer (`ResponseFailed`) may have run.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
import time
from typing import cast

import httptools

Headers = list[tuple[bytes, bytes]]

# A pooled connection idle longer than this is closed rather than reused: the replica's server may
# be closing it at that moment (uvicorn's keep-alive timeout is 5 s), and a request written into a
# connection the server is closing fails in a way that cannot be told apart from a crash mid-request.
MAX_IDLE_SECONDS = 2.0
MAX_IDLE_CONNECTIONS = 64
# Response bytes held per connection before reading from the replica pauses (the client is slower).
READ_HIGH_WATER = 256 * 1024


class UpstreamError(Exception):
    """A replica failed this exchange."""


class ConnectFailed(UpstreamError):
    """No connection could be opened; nothing was sent."""


class SendFailed(UpstreamError):
    """The connection broke before the whole request was written, and nothing came back."""


class ResponseFailed(UpstreamError):
    """The request was sent, but no complete response head came back: the replica may have run it."""


class BodyFailed(UpstreamError):
    """The response broke off after its head: the client's status line is already out."""


class Aborted(UpstreamError):
    """The gateway gave up on this exchange (a forced stop)."""


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "the replica closed the connection"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()  # asyncio's own strerror is "Connect call failed (...)"
    return str(exc) or type(exc).__name__


class Connection(asyncio.Protocol):
    """One keep-alive connection to a replica, used by one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle = False  # in a pool between exchanges
        self.idle_since = 0.0
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._begin(False)

    def _begin(self, head_only: bool) -> None:
        self.head_only = head_only
        self.status = 0
        self.headers: Headers = []
        self.head_done = False
        self.complete = False
        self.keep_alive = True
        self.sent = False
        self.received = False
        self.error: UpstreamError | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._until_eof = False

    def begin(self, head_only: bool = False) -> None:
        """Start an exchange. `head_only` for HEAD requests: the answer has no body whatever it says."""
        self.idle = False
        self._begin(head_only)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = transport = cast(asyncio.Transport, transport)
        # Every byte left in the transport's buffer pauses writing, so "drained" means "handed to the
        # kernel": what decides whether a broken exchange is safe to send again.
        transport.set_write_buffer_limits(high=0)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.idle:
            self.close()  # bytes nobody asked for: the connection is out of step, never reuse it
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"the replica sent a malformed response ({exc})")
            self.close()

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            if self.head_done and self._until_eof:
                self.complete = True  # the body was delimited by the end of the connection
                self.keep_alive = False
                self._wake()
            else:
                self._fail(_describe(exc))
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.headers = []  # an interim answer (100 Continue): the real one follows
            return
        self.status = status
        self.head_done = True
        if self.head_only:
            # The parser cannot be told that a HEAD answer's Content-Length announces no body, so this
            # connection is not reused.
            self.complete = True
            self.keep_alive = False
        elif status not in (204, 304):
            self._until_eof = not any(
                name == b"content-length" or name == b"transfer-encoding" for name, _ in self.headers
            )
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > READ_HIGH_WATER and self.transport is not None and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.head_done or self.complete:
            return  # the end of an interim answer, or of a HEAD answer already taken as complete
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()
        self._wake()

    # the exchange

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, what: str) -> None:
        if self.error is not None or self.complete:
            return
        if self.head_done:
            self.error = BodyFailed(what)
        elif self.sent or self.received:
            self.error = ResponseFailed(what)
        else:
            self.error = SendFailed(what)
        self._wake()

    def abort(self, reason: str) -> None:
        """Give up on the exchange now: whoever waits on it gets `Aborted`."""
        if not self.complete:
            self.error = Aborted(reason)
            self._wake()
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def write(self, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        if self.closed or self.transport is None:
            raise SendFailed("the replica closed the connection")
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait until every byte written so far is in the kernel; raise if the connection broke."""
        while self._write_paused and not self.closed and self.error is None:
            self._drain_waiter = self.loop.create_future()
            await self._drain_waiter
            self._drain_waiter = None
        if self.error is not None:
            raise self.error
        if self.closed and not self.complete and not self.head_done:
            raise SendFailed("the replica closed the connection")

    def write_request(self, data: bytes) -> None:
        """Write a whole request; it counts as sent if the kernel took all of it at once."""
        self.write(data)
        self.sent = not self._write_paused

    async def send(self, data: bytes) -> None:
        """Write a whole request (head and body) and mark it sent once the kernel has it."""
        self.write_request(data)
        if not self.sent:
            await self.drain()
            self.sent = True

    async def response_head(self) -> None:
        """Wait for the status line and headers (`status`, `headers`)."""
        while not self.head_done:
            if self.error is not None:
                raise self.error
            self._waiter = self.loop.create_future()
            await self._waiter
            self._waiter = None
        if self.error is not None and not isinstance(self.error, BodyFailed):
            raise self.error

    def take_body(self) -> bytes:
        """The body received so far (all of it once `complete`)."""
        chunks = self._chunks
        if not chunks:
            return b""
        body = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return body

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body; None once the body is complete."""
        while True:
            if self._chunks:
                return self.take_body()
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            self._waiter = self.loop.create_future()
            await self._waiter
            self._waiter = None

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self.error is None


class Pool:
    """Keep-alive connections to one replica. Most recently used first: the least likely to be stale."""

    def __init__(self, host: str, port: int, connect_timeout: float) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        # The Host header the replica gets.
        self.authority = (f"[{host}]:{port}" if ":" in host else f"{host}:{port}").encode("ascii")
        self._idle: list[Connection] = []
        self.closed = False

    def take_idle(self) -> Connection | None:
        """An idle connection fresh enough to reuse, if there is one."""
        idle = self._idle
        if idle:
            now = time.monotonic()
            while idle:
                conn = idle.pop()
                if not conn.closed and now - conn.idle_since < MAX_IDLE_SECONDS:
                    return conn
                conn.close()
        return None

    async def acquire(self) -> Connection:
        return self.take_idle() or await self.connect()

    async def connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, protocol = await loop.create_connection(lambda: Connection(loop), self.host, self.port)
        except TimeoutError:
            raise ConnectFailed(
                f"cannot connect to {self.host}:{self.port}: no answer within {self.connect_timeout:g} s"
            ) from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {_describe(exc)}") from None
        return protocol

    def release(self, conn: Connection) -> None:
        """Back to the pool when the exchange ended cleanly; closed otherwise."""
        if conn.reusable and not self.closed and len(self._idle) < MAX_IDLE_CONNECTIONS:
            conn.idle = True
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    def sweep(self) -> None:
        """Close connections idle too long to be reused, so they do not linger until the server's timeout."""
        now = time.monotonic()
        keep = [c for c in self._idle if not c.closed and now - c.idle_since < MAX_IDLE_SECONDS]
        for conn in self._idle:
            if conn not in keep:
                conn.close()
        self._idle = keep

    def clear(self) -> None:
        """Close the idle connections (after a failure: they are likely broken too)."""
        for conn in self._idle:
            conn.close()
        self._idle.clear()

    def close(self) -> None:
        """No more reuse: idle connections close now, the ones in use when their exchange ends."""
        self.closed = True
        self.clear()


async def probe(pool: Pool, path: str) -> int:
    """GET `path` on a fresh connection to the pool's replica; the status, or raise UpstreamError or
    TimeoutError."""
    conn = await pool.connect()
    try:
        async with asyncio.timeout(pool.connect_timeout):
            conn.begin()
            await conn.send(
                b"GET %s HTTP/1.1\r\nhost: %s\r\nconnection: close\r\n\r\n" % (path.encode(), pool.authority)
            )
            await conn.response_head()
            return conn.status
    finally:
        conn.close()
