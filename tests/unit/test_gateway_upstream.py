"""The gateway's HTTP/1.1 client against scripted servers: framing, streaming, keep-alive reuse, and
which failure is which (the proxy decides from that whether a request may be sent again)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from gpuscale_gateway import upstream
from gpuscale_gateway.upstream import ConnectFailed, Connection, Pool, ResponseFailed, SendFailed, probe
from tests.unit.test_gateway_fakes import (
    FakeReplica,
    Received,
    chunked_in_two,
    json_handler,
    replicas,
    response_bytes,
)

GET = b"GET /x HTTP/1.1\r\nhost: t\r\n\r\n"


def pool_for(fake: FakeReplica) -> Pool:
    return Pool("127.0.0.1", fake.port, connect_timeout=2.0)


async def exchange(conn: Connection, request: bytes = GET, head_only: bool = False) -> tuple[int, bytes]:
    conn.begin(head_only)
    await conn.send(request)
    await conn.response_head()
    body = b""
    while (chunk := await conn.next_chunk()) is not None:
        body += chunk
    return conn.status, body


async def test_content_length_answers_and_keep_alive_reuse() -> None:
    async with replicas(json_handler(201, {"a": 1}, [("x-extra", "1")])) as (fake,):
        pool = pool_for(fake)
        for _ in range(3):
            conn = await pool.acquire()
            status, body = await exchange(conn)
            assert (status, body) == (201, b'{"a": 1}')
            assert (b"x-extra", b"1") in conn.headers
            assert conn.reusable
            pool.release(conn)
        assert fake.connections == 1
        pool.close()


async def test_chunked_answers_stream_piece_by_piece() -> None:
    gate = asyncio.Event()

    async with replicas(chunked_in_two(gate)) as (fake,):
        conn = await pool_for(fake).acquire()
        conn.begin()
        await conn.send(GET)
        await conn.response_head()
        assert await conn.next_chunk() == b"first"  # before the replica has sent the rest
        assert not conn.complete
        gate.set()
        assert await conn.next_chunk() == b"second"
        assert await conn.next_chunk() is None
        assert conn.reusable
        conn.close()


async def test_a_body_delimited_by_the_end_of_the_connection() -> None:
    async def until_eof(request: Received, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
        writer.close()

    async with replicas(until_eof) as (fake,):
        conn = await pool_for(fake).acquire()
        assert await exchange(conn) == (200, b"all of it")
        assert not conn.reusable


async def test_head_answers_have_no_body_whatever_their_length_says() -> None:
    async def head(request: Received, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")

    async with replicas(head) as (fake,):
        conn = await pool_for(fake).acquire()
        assert await exchange(conn, b"HEAD /x HTTP/1.1\r\nhost: t\r\n\r\n", head_only=True) == (200, b"")
        assert not conn.reusable  # the parser would wait for those 100 bytes
        conn.close()


async def test_an_interim_100_continue_is_skipped() -> None:
    async def cont(request: Received, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + response_bytes(200, b"done"))

    async with replicas(cont) as (fake,):
        conn = await pool_for(fake).acquire()
        assert await exchange(conn) == (200, b"done")
        conn.close()


async def test_refused_connections_are_connect_failures() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(ConnectFailed, match=f"cannot connect to 127.0.0.1:{port}: connection refused"):
            await Pool("127.0.0.1", port, 1.0).acquire()


async def test_closing_after_the_request_without_an_answer_may_have_run() -> None:
    async def vanish(request: Received, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async with replicas(vanish) as (fake,):
        conn = await pool_for(fake).acquire()
        with pytest.raises(ResponseFailed, match="closed the connection"):
            await exchange(conn)
        assert fake.requests  # it did arrive


async def test_a_connection_that_broke_before_the_request_was_written_was_not_sent() -> None:
    async with replicas(json_handler()) as (fake,):
        conn = await pool_for(fake).acquire()
        conn.begin()
        conn.close()
        with pytest.raises(SendFailed):
            await conn.send(GET)


async def test_malformed_answers_fail_the_exchange() -> None:
    async def garbage(request: Received, writer: asyncio.StreamWriter) -> None:
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")

    async with replicas(garbage) as (fake,):
        conn = await pool_for(fake).acquire()
        with pytest.raises(ResponseFailed, match="malformed"):
            await exchange(conn)


async def test_idle_connections_are_not_reused_after_the_idle_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    async with replicas(json_handler()) as (fake,):
        pool = pool_for(fake)
        conn = await pool.acquire()
        await exchange(conn)
        pool.release(conn)
        monkeypatch.setattr(upstream, "MAX_IDLE_SECONDS", 0.0)
        fresh = await pool.acquire()
        assert fresh is not conn
        assert conn.closed
        await exchange(fresh)
        pool.release(fresh)
        pool.sweep()
        assert fresh.closed
        assert fake.connections == 2


async def test_probe_reports_the_status() -> None:
    async with replicas(json_handler(503)) as (fake,):
        assert await probe(pool_for(fake), "/v2/health/ready") == 503
        assert fake.requests[0].target == "/v2/health/ready"
