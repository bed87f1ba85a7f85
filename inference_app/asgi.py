"""Raw-ASGI pieces shared by the pod server's fast path and the gateway: JSON answers in one error
shape, reading a body up to a bound, and waiting for a client to leave."""

from __future__ import annotations

from typing import Any

from pydantic_core import to_json
from starlette.types import Message, Receive, Send

Headers = list[tuple[bytes, bytes]]


async def send_json(
    send: Send,
    status: int,
    payload: Any,
    headers: Headers | None = None,
    content_type: bytes = b"application/json",
) -> None:
    """Answer `payload`: bytes as they are (of `content_type`), anything else serialized as JSON."""
    body = payload if isinstance(payload, bytes) else to_json(payload)
    start: Headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
    if headers:
        start += headers
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, status: int, message: str, headers: Headers | None = None) -> None:
    """Answer in the one error shape: `{"error": message}`."""
    await send_json(send, status, {"error": message}, headers)


async def read_body(receive: Receive, limit: int) -> tuple[bytes, bool] | None:
    """The body and True when it is all there; what was read and False once more than `limit` bytes
    came and more is still unread; None when the client left first."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        if chunk:
            chunks.append(chunk)
            size += len(chunk)
        body_done = not message.get("more_body", False)
        if body_done or size > limit:
            return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), body_done


async def wait_disconnect(receive: Receive) -> None:
    # Called once the body has been read, so the next message can only be the disconnect (or the end of
    # the response).
    message: Message = await receive()
    while message["type"] != "http.disconnect":
        message = await receive()
