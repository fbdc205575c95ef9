"""Reading an answer within bounds: its size, its encoding and the shape of its JSON.

RunComfy's answers (and anything that answers in its place) are untrusted input to a worker or
to a triggerer shared by every deferred task. An answer is read as raw bytes, never decoded
(compressed answers are refused: a small gzip body can inflate to gigabytes), at most
``MAX_ANSWER_BYTES`` of it, and parsed only when its JSON nests at most ``MAX_JSON_DEPTH`` deep.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from airflow_provider_dreamina.runcomfy.deadlines import DeadlinePassed

#: The largest answer read; RunComfy's answers are a few KiB.
MAX_ANSWER_BYTES = 1024 * 1024
#: The deepest JSON nesting accepted; RunComfy's answers nest three or four levels.
MAX_JSON_DEPTH = 32
# The encodings a refusal names; any other header value stays unquoted (a server may echo anything
# there, the token it was sent included).
_KNOWN_ENCODINGS = frozenset({"gzip", "x-gzip", "deflate", "br", "zstd", "compress"})


class UnreadableAnswer(Exception):
    """An answer broke a bound; the message says which, and never quotes the answer."""

    def __init__(self, reason: str, status_code: int = 0) -> None:
        super().__init__(reason)
        self.status_code = status_code


def check_headers(response: httpx.Response, limit: int = MAX_ANSWER_BYTES) -> None:
    """Refuse an answer from its headers alone: compressed, or declared larger than ``limit``."""
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        named = encoding if encoding in _KNOWN_ENCODINGS else "an unknown encoding"
        raise UnreadableAnswer(
            f"the answer is compressed ({named}) although only identity was accepted",
            response.status_code,
        )
    length = response.headers.get("Content-Length", "").strip()
    # ASCII digits only: "²" is a digit to str.isdigit but not to int().
    if length.isascii() and length.isdigit() and int(length) > limit:
        raise UnreadableAnswer(
            f"the answer declares {int(length)} bytes; at most {limit} are read", response.status_code
        )


def raw_chunks(response: httpx.Response) -> Iterator[bytes]:
    """The body as the server sent it, never decoded (a transport may have read it already)."""
    already = _read_already(response)
    return iter(already) if already is not None else response.iter_raw()


def araw_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """Async :func:`raw_chunks`."""
    already = _read_already(response)
    if already is None:
        return response.aiter_raw()

    async def replay() -> AsyncIterator[bytes]:
        for chunk in already:
            yield chunk

    return replay()


def read_body(response: httpx.Response, deadline: float, seconds: float) -> bytes:
    """The raw body of a streamed answer, refused past ``MAX_ANSWER_BYTES`` or past ``deadline``
    (a ``time.monotonic`` value; ``seconds`` is its length, for the message)."""
    check_headers(response)
    body = bytearray()
    for chunk in raw_chunks(response):
        _take(body, chunk, response)
        if time.monotonic() > deadline:
            raise DeadlinePassed(seconds)
    return bytes(body)


async def aread_body(response: httpx.Response) -> bytes:
    """Async :func:`read_body`; the caller bounds its time (``asyncio.wait_for``)."""
    check_headers(response)
    body = bytearray()
    async for chunk in araw_chunks(response):
        _take(body, chunk, response)
    return bytes(body)


def _read_already(response: httpx.Response) -> list[bytes] | None:
    # A transport may hand over an answer whose body is already in memory (httpx.MockTransport).
    try:
        return [response.content]
    except httpx.ResponseNotRead:
        return None


def _take(body: bytearray, chunk: bytes, response: httpx.Response) -> None:
    if len(body) + len(chunk) > MAX_ANSWER_BYTES:
        raise UnreadableAnswer(f"the answer is larger than {MAX_ANSWER_BYTES} bytes", response.status_code)
    body += chunk


def json_of(body: bytes) -> Any:
    """The JSON value of ``body``; raises :class:`UnreadableAnswer` for anything else or anything
    nested deeper than ``MAX_JSON_DEPTH`` (which would exhaust the stack of whoever walks it)."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise UnreadableAnswer("the answer is not JSON, or nests too deep to parse") from None
    if _depth_exceeds(value, MAX_JSON_DEPTH):
        raise UnreadableAnswer(f"the answer's JSON nests deeper than {MAX_JSON_DEPTH} levels")
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    # Iterative: walking a deep value recursively is the very failure being guarded against.
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return False
