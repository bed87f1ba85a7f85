"""Fake replicas for the gateway's in-process tests: small HTTP/1.1 servers on loopback whose answers a
test scripts byte by byte (slow, chunked, refused, cut off), and which record what they received.

Also the helpers to run a gateway in-process; the tests at the end check the fakes themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from gpuscale_gateway.server import RunningGateway, running
from gpuscale_gateway.settings import GatewaySettings


@dataclass
class Received:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    chunked: bool

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name.lower()]
        return ", ".join(values) if values else None


Handler = Callable[[Received, asyncio.StreamWriter], Awaitable[None]]


def response_bytes(
    status: int, body: bytes = b"", headers: list[tuple[str, str]] | None = None, reason: str = "X"
) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"]
    for name, value in headers or []:
        lines.append(f"{name}: {value}")
    lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def json_handler(
    status: int = 200, payload: Any = None, headers: list[tuple[str, str]] | None = None
) -> Handler:
    async def handle(request: Received, writer: asyncio.StreamWriter) -> None:
        body = json.dumps(payload if payload is not None else {"ok": True}).encode()
        writer.write(response_bytes(status, body, [("content-type", "application/json"), *(headers or [])]))

    return handle


def chunked_in_two(gate: asyncio.Event) -> Handler:
    """A handler that answers chunked: "first" at once, "second" and the end once `gate` is set."""

    async def chunked(request: Received, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await gate.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")

    return chunked


@dataclass
class FakeReplica:
    """An HTTP/1.1 server answering every request with `handler` (default: 200 {"ok": true})."""

    handler: Handler = field(default_factory=json_handler)
    requests: list[Received] = field(default_factory=list)
    connections: int = 0
    server: asyncio.Server | None = None
    # Set while a request is being handled (the handler runs); cleared when it returns.
    busy: asyncio.Event = field(default_factory=asyncio.Event)

    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> FakeReplica:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                request = await read_request(reader)
                if request is None:
                    return
                self.requests.append(request)
                self.busy.set()
                try:
                    await self.handler(request, writer)
                    await writer.drain()
                finally:
                    self.busy.clear()
                if writer.is_closing():
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


async def read_request(reader: asyncio.StreamReader) -> Received | None:
    """One request (Content-Length or chunked body); None at a clean end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
    request = Received(method, target, headers, b"", False)
    length = request.header("content-length")
    if request.header("transfer-encoding") == "chunked":
        request.chunked = True
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            parts.append(data[:-2])
        request.body = b"".join(parts)
    elif length:
        request.body = await reader.readexactly(int(length))
    return request


@contextlib.asynccontextmanager
async def replicas(*handlers: Handler) -> AsyncIterator[list[FakeReplica]]:
    fakes = [await FakeReplica(h).start() for h in handlers]
    try:
        yield fakes
    finally:
        for fake in fakes:
            await fake.stop()


@contextlib.asynccontextmanager
async def gateway(fakes: list[FakeReplica], **settings: Any) -> AsyncIterator[RunningGateway]:
    """A gateway in this event loop in front of `fakes` (named r0, r1, ...)."""
    given = {"port": 0, "admin_port": 0, "log_level": "warning", **settings}
    given.setdefault("replicas", ",".join(f"r{i}={fake.url}" for i, fake in enumerate(fakes)))
    async with running(GatewaySettings(**given)) as gw:
        yield gw


def client(url: str, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=10, **kwargs)


# The fakes themselves.


async def test_fake_reads_content_length_and_chunked_bodies() -> None:
    async with replicas(json_handler()) as (fake,), client(fake.url) as c:
        assert (await c.post("/a", content=b"hello")).status_code == 200

        async def chunks() -> AsyncIterator[bytes]:
            yield b"he"
            yield b"llo"

        assert (await c.post("/b", content=chunks())).status_code == 200
    assert [(r.target, r.body, r.chunked) for r in fake.requests] == [
        ("/a", b"hello", False),
        ("/b", b"hello", True),
    ]
