"""The data plane: a raw ASGI app that queues each request, forwards it to a replica and relays the
answer, retrying only what cannot have run.

No routing framework: every method and path is forwarded, and the per-request work is a header scan,
one queue decision and one upstream exchange.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection

from starlette.types import Receive, Scope, Send

from gpuscale_gateway.dispatch import ClientGone, Dispatcher, QueueFull, QueueTimeout, Refused, Waiter
from gpuscale_gateway.metrics import GatewayMetrics, Outcome
from gpuscale_gateway.registry import Registry, Replica
from gpuscale_gateway.settings import GatewaySettings
from gpuscale_gateway.upstream import (
    Aborted,
    BodyFailed,
    ConnectFailed,
    Connection,
    ResponseFailed,
    SendFailed,
)
from inference_app.asgi import Headers, read_body, send_error, wait_disconnect
from inference_app.infer import NOT_ADMITTED

log = logging.getLogger("gpuscale_gateway")

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Not forwarded either: the gateway sets Host and the body's framing itself, and has read (or will
# stream) the body already, so a replica's `100 Continue` would only confuse the exchange.
REQUEST_DROPPED = HOP_BY_HOP | {b"host", b"content-length", b"expect", b"x-forwarded-for"}
REPLICA_HEADER = b"gpuscale-replica"
MAX_ATTEMPTS = 5
# A queued request's client is watched for leaving once it has waited this long.
WATCH_AFTER_SECONDS = 0.05
CLOSE = (b"connection", b"close")


class ClientLeft(Exception):
    """The client disconnected while its body was being streamed to the replica."""


class Retry(Exception):
    """This attempt failed in a way that is safe to send again, elsewhere."""

    def __init__(self, reason: str, avoid: Replica | None = None, counts: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.avoid = avoid  # the replica refused this request: prefer others for it
        # A connect failure takes the replica out of rotation until its probe passes, so retrying
        # after one cannot loop; it does not use up one of the request's attempts.
        self.counts = counts


def _connection_tokens(headers: Headers) -> frozenset[bytes]:
    """Header names a Connection header marks as hop-by-hop for this message."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return frozenset(tokens)


class Request:
    """What the proxy holds of one client request: its head (without Host) and the body read so far."""

    __slots__ = ("body", "chunked", "complete", "head_only", "lines", "start_line")

    def __init__(self, start_line: bytes, lines: bytes, body: bytes, complete: bool, chunked: bool) -> None:
        self.start_line = start_line
        self.lines = lines  # header lines after Host, each ending in CRLF
        self.body = body
        self.complete = complete  # the whole body is in `body`: safe to send again
        self.chunked = chunked  # stream the body with chunked encoding (its length is unknown)
        self.head_only = start_line.startswith(b"HEAD ")

    def head(self, authority: bytes) -> bytes:
        return b"%shost: %s\r\n%s\r\n" % (self.start_line, authority, self.lines)


class Proxy:
    """ASGI app of the clients' port."""

    def __init__(
        self,
        settings: GatewaySettings,
        registry: Registry,
        dispatcher: Dispatcher,
        metrics: GatewayMetrics,
    ) -> None:
        self.registry = registry
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.queued_methods = settings.queued_method_set
        self.buffer_bytes = settings.buffer_bytes
        self.queue_timeout = settings.queue_timeout_seconds
        self.draining = False
        self.passthrough = 0  # requests that take no slot, being forwarded now
        self.active: set[Connection] = set()  # exchanges in progress, for a forced stop
        self.stopped: str | None = None  # why, after a forced stop
        dispatcher.on_assign = self._send_on_assign

    # the client's request

    async def _read(self, scope: Scope, receive: Receive) -> Request | None:
        """The request head to forward, with the body up to `buffer_bytes`; None if the client left."""
        headers: Headers = scope["headers"]
        length = -1
        chunked = False
        forwarded = b""
        lines: list[bytes] = []
        dropped = REQUEST_DROPPED
        for name, value in headers:
            if name in dropped:
                if name == b"content-length":
                    length = int(value) if value.isdigit() else -1
                elif name == b"transfer-encoding":
                    chunked = True
                elif name == b"x-forwarded-for":
                    forwarded = value if not forwarded else forwarded + b", " + value
                elif name == b"connection":
                    dropped = dropped | _connection_tokens(headers)
                continue
            lines.append(b"%s: %s\r\n" % (name, value))
        client = scope.get("client")
        if client:
            address = client[0].encode()
            forwarded = forwarded + b", " + address if forwarded else address
        if forwarded:
            lines.append(b"x-forwarded-for: %s\r\n" % forwarded)

        body = b""
        complete = True
        if length > self.buffer_bytes:
            complete = False  # known to be too large: streamed after dispatch, unread until then
        elif length > 0 or chunked:
            read = await read_body(receive, self.buffer_bytes)
            if read is None:
                return None
            body, complete = read
        if complete:
            if body or length >= 0 or chunked:
                lines.append(b"content-length: %d\r\n" % len(body))
        elif length >= 0:
            lines.append(b"content-length: %d\r\n" % length)
        else:
            lines.append(b"transfer-encoding: chunked\r\n")

        target = scope.get("raw_path") or scope["path"].encode()
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        start_line = b"%s %s HTTP/1.1\r\n" % (scope["method"].encode(), target)
        return Request(start_line, b"".join(lines), body, complete, chunked=not complete and length < 0)

    # ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics = self.metrics
        if self.draining:
            metrics.count(Outcome.UNAVAILABLE)
            return await send_error(send, 503, "gateway draining", [CLOSE])
        arrived = time.monotonic()
        request = await self._read(scope, receive)
        if request is None:
            metrics.count(Outcome.CLIENT_GONE)
            return None
        if scope["method"] in self.queued_methods:
            await self._queued(request, receive, send, arrived)
        else:
            self.passthrough += 1
            try:
                await self._passthrough(request, receive, send, arrived)
            finally:
                self.passthrough -= 1
        return None

    async def _queued(self, request: Request, receive: Receive, send: Send, arrived: float) -> None:
        dispatcher = self.dispatcher
        metrics = self.metrics
        deadline = arrived + self.queue_timeout
        avoid: set[Replica] | None = None
        front = False
        reason = ""
        attempts = 0
        while attempts < MAX_ATTEMPTS:
            conn: Connection | None = None
            replica = dispatcher.try_acquire(avoid, front)
            if replica is None:
                try:
                    replica, conn = await self._wait(request, deadline, front, avoid, receive)
                except ClientGone:
                    metrics.count(Outcome.CLIENT_GONE)
                    return
                except Refused as refused:
                    return await self._refuse(send, refused)
            if not front:
                metrics.queue_wait.observe(time.monotonic() - arrived)
            try:
                await Exchange(self, replica, True, conn).run(request, receive, send, arrived)
                return
            except Retry as retry:
                metrics.retries += 1
                attempts += retry.counts
                reason = retry.reason
                front = True  # it keeps its place: the head of the queue
                if retry.avoid is not None:
                    avoid = {retry.avoid} if avoid is None else avoid | {retry.avoid}
        metrics.count(Outcome.UPSTREAM_ERROR)
        await send_error(send, 502, f"no replica took the request in {MAX_ATTEMPTS} attempts; last: {reason}")

    def _send_on_assign(self, waiter: Waiter, replica: Replica) -> None:
        """The dispatcher's hook: write a waiting request to an idle connection of its replica at once.

        This runs where the replica was freed (usually the previous request's task, just after the
        answer arrived), so the replica starts its next job without waiting for this request's task
        to be scheduled. Without an idle connection the task connects and sends itself.
        """
        request: Request = waiter.payload
        if not request.complete:
            return
        conn = replica.pool.take_idle()
        if conn is None:
            return
        conn.begin(request.head_only)
        try:
            conn.write_request(request.head(replica.pool.authority) + request.body)
        except SendFailed:
            conn.close()
            return
        self.active.add(conn)
        waiter.prepared = conn

    async def _wait(
        self,
        request: Request,
        deadline: float,
        front: bool,
        avoid: Collection[Replica] | None,
        receive: Receive,
    ) -> tuple[Replica, Connection | None]:
        """Queue the request until a replica is assigned; the connection it was sent on, if it was."""
        dispatcher = self.dispatcher
        waiter: Waiter = dispatcher.enqueue(deadline, front=front, avoid=avoid, payload=request)
        loop = asyncio.get_running_loop()
        watcher: asyncio.Task[None] | None = None

        # With the whole body in hand, a client that leaves can be taken out of the queue. The watcher
        # (a task) starts only once the request has waited a while: most waits are shorter, and a task
        # per request would cost more than the rest of the queueing. A client that left earlier is
        # still seen: uvicorn reports a past disconnect at once.
        def client_left(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is None:
                dispatcher.cancel(waiter, ClientGone())

        def watch() -> None:
            nonlocal watcher
            if not waiter.future.done():
                watcher = loop.create_task(wait_disconnect(receive))
                watcher.add_done_callback(client_left)

        timer = loop.call_later(WATCH_AFTER_SECONDS, watch) if request.complete else None
        try:
            replica = await dispatcher.wait(waiter)
        except asyncio.CancelledError:
            if waiter.prepared is not None:
                self.active.discard(waiter.prepared)
                waiter.prepared.close()
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if watcher is not None:
                watcher.cancel()
        return replica, waiter.prepared

    async def _refuse(self, send: Send, refused: Refused) -> None:
        headers: Headers = []
        if refused.retry_after is not None:
            headers.append((b"retry-after", b"%d" % refused.retry_after))
        if isinstance(refused, QueueFull):
            self.metrics.count(Outcome.REJECTED_FULL)
            status = 429
        else:
            self.metrics.count(Outcome.TIMEOUT if isinstance(refused, QueueTimeout) else Outcome.UNAVAILABLE)
            status = 503
        await send_error(send, status, refused.message, headers)

    async def _passthrough(self, request: Request, receive: Receive, send: Send, arrived: float) -> None:
        """Methods that take no slot (health, metadata): at once to the least-loaded ready replica."""
        tried: set[Replica] = set()
        reason = ""
        for _ in range(MAX_ATTEMPTS):
            replica = self.dispatcher.pick_any(tried)
            if replica is None:
                break
            tried.add(replica)
            try:
                await Exchange(self, replica, False, None).run(request, receive, send, arrived)
                return
            except Retry as retry:
                self.metrics.retries += 1
                reason = retry.reason
        self.metrics.count(Outcome.UNAVAILABLE)
        known = len(self.registry)
        message = f"no replica is ready ({known} known)" + (f"; last: {reason}" if reason else "")
        await send_error(send, 503, message, [(b"retry-after", b"1")])

    def abort_active(self, reason: str) -> int:
        """Give up on every exchange in progress (a forced stop); how many there were. One still
        connecting is given up as soon as it has its connection."""
        self.stopped = reason
        for conn in list(self.active):
            conn.abort(reason)
        return self.dispatcher.inflight + self.passthrough


class Exchange:
    """One attempt to serve a request on one replica: send, relay, and give back the connection and
    the replica's slot as early as possible (the slot before the answer is relayed to the client)."""

    __slots__ = ("conn", "dispatched", "held", "pre_sent", "proxy", "queued", "replica")

    def __init__(self, proxy: Proxy, replica: Replica, queued: bool, conn: Connection | None) -> None:
        self.proxy = proxy
        self.replica = replica
        self.queued = queued  # holds one of the replica's slots (or a prefetch place)
        self.held = True
        self.conn = conn
        self.pre_sent = conn is not None  # written on assignment (Proxy._send_on_assign)
        self.dispatched = time.monotonic()

    def release(self, seconds: float | None) -> None:
        """Give back the slot: `seconds` after dispatch when answered, None when the attempt failed."""
        if self.held:
            self.held = False
            if self.queued:
                self.proxy.dispatcher.release(self.replica, seconds)

    def put_back(self) -> None:
        """Hand the connection back to the pool (reused if the exchange ended cleanly, else closed)."""
        conn = self.conn
        if conn is not None:
            self.conn = None
            self.proxy.active.discard(conn)
            self.replica.pool.release(conn)

    async def run(self, request: Request, receive: Receive, send: Send, arrived: float) -> None:
        """Forward the request and relay the answer. Raises Retry when the request can go elsewhere;
        answers the client itself otherwise."""
        try:
            await self._run(request, receive, send, arrived)
        finally:
            self.put_back()
            self.release(None)

    async def _run(self, request: Request, receive: Receive, send: Send, arrived: float) -> None:
        proxy = self.proxy
        replica = self.replica
        name = replica.name
        conn = self.conn
        if conn is None:
            try:
                conn = self.conn = await replica.pool.acquire()
            except ConnectFailed as exc:
                proxy.registry.mark_down(replica, str(exc))
                raise Retry(f"replica {name}: {exc}", counts=False) from None
            proxy.active.add(conn)
            conn.begin(request.head_only)
            if proxy.stopped is not None:
                conn.abort(proxy.stopped)
        metrics = proxy.metrics
        try:
            if self.pre_sent:
                await conn.drain()
                conn.sent = True
            elif request.complete:
                await conn.send(request.head(replica.pool.authority) + request.body)
            else:
                await self._stream_body(conn, request, replica.pool.authority, receive)
            await conn.response_head()
        except SendFailed as exc:
            proxy.registry.mark_down(replica, f"failed while a request was being sent: {exc}")
            if request.complete:
                raise Retry(f"replica {name} failed while the request was being sent: {exc}") from None
            metrics.count(Outcome.UPSTREAM_ERROR)
            return await send_error(
                send,
                502,
                f"replica {name} failed while the request body was being streamed to it, so it could not be "
                f"sent again: {exc}",
            )
        except ResponseFailed as exc:
            proxy.registry.mark_down(replica, f"failed after a request was sent: {exc}")
            metrics.count(Outcome.UPSTREAM_ERROR)
            return await send_error(
                send,
                502,
                f"replica {name} failed after the request was sent; it may have run, so it was not "
                f"retried: {exc}",
            )
        except Aborted as exc:
            metrics.count(Outcome.UNAVAILABLE)
            return await send_error(send, 503, str(exc), [CLOSE])
        except ClientLeft:
            conn.close()  # the replica got half a request: it must not wait for the rest
            metrics.count(Outcome.CLIENT_GONE)
            return

        status = conn.status
        headers: Headers = [(REPLICA_HEADER, replica.name_header)]
        refused = b""
        connection_tokens = False
        for header in conn.headers:
            hname = header[0]
            if hname in HOP_BY_HOP:
                connection_tokens = connection_tokens or hname == b"connection"
                continue
            if hname == NOT_ADMITTED:
                refused = header[1]
            headers.append(header)
        if connection_tokens:
            listed = _connection_tokens(conn.headers)
            headers = [h for h in headers if h[0] not in listed]

        if refused and request.complete:
            # The replica refused before its model saw the request: send it elsewhere.
            if not conn.complete:
                conn.close()
            self.put_back()
            self.release(None)
            if refused == b"unavailable":
                proxy.registry.mark_down(replica, f"answered {status} unavailable (loading or draining)")
            raise Retry(f"replica {name} answered {status} {refused.decode('latin-1')}", replica)

        if conn.complete:
            # The usual case: the whole answer came with its head. The connection and the slot go back
            # before the answer is relayed, so the next queued request is sent on this connection now.
            body = conn.take_body()
            self.put_back()
            self.release(time.monotonic() - self.dispatched)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        else:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            try:
                while (chunk := await conn.next_chunk()) is not None:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except (BodyFailed, Aborted) as exc:
                if isinstance(exc, BodyFailed):
                    proxy.registry.mark_down(replica, f"failed while sending an answer: {exc}")
                log.warning("replica %s: answer cut off (%s); closing the client's connection", name, exc)
                metrics.count(Outcome.UPSTREAM_ERROR)
                return  # returning an incomplete response makes uvicorn close the client's connection
            self.put_back()
            self.release(time.monotonic() - self.dispatched)
            await send({"type": "http.response.body", "body": b""})
        metrics.count(Outcome.OK)
        metrics.duration.observe(time.monotonic() - arrived)

    @staticmethod
    async def _stream_body(conn: Connection, request: Request, authority: bytes, receive: Receive) -> None:
        """Head, the part of the body read already, then the rest as the client sends it."""
        chunked = request.chunked
        conn.write(request.head(authority))
        if request.body:
            conn.write(b"%x\r\n%s\r\n" % (len(request.body), request.body) if chunked else request.body)
        more = True
        while more and not conn.head_done:  # an early answer (say 413) ends the upload
            await conn.drain()
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientLeft
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            if chunk:
                conn.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
        if chunked and not more:
            conn.write(b"0\r\n\r\n")
        await conn.drain()
        conn.sent = True
