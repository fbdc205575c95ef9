"""Answering a player's HTTP requests for a stored file: whole, or one byte range (seeking).

A ``<video>`` element asks for ``Range: bytes=N-`` whenever it seeks; answering 206 with exactly
those bytes is what makes seeking work without downloading the whole video first. Only a single
range is served (players never ask for more); a range that cannot be satisfied gets 416.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

CHUNK_BYTES = 256 * 1024
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` to ``end`` of a file, both included (as in ``Content-Range``)."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class RangeNotSatisfiable(Exception):
    """The requested range lies outside the file."""


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range a ``Range`` header asks for, None for the whole file.

    Headers this server does not understand (other units, several ranges) get the whole file, as
    RFC 9110 allows; a well-formed range outside the file raises :class:`RangeNotSatisfiable`.
    """
    if not header:
        return None
    match = _RANGE.match(header)
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # "bytes=-N": the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise RangeNotSatisfiable
    return ByteRange(start, end)


def _chunks(open_file: Callable[[], IO[bytes]], start: int, length: int) -> Iterator[bytes]:
    # Opened when the body is first read: a client that only wanted the headers costs nothing.
    with open_file() as handle:
        if start:
            handle.seek(start)
        remaining = length
        while remaining > 0:
            chunk = handle.read(min(CHUNK_BYTES, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk


def file_response(
    request: Request,
    open_file: Callable[[], IO[bytes]],
    *,
    size: int,
    content_type: str,
    etag: str | None,
    download_name: str,
) -> Response:
    """A 200 with the whole file, a 206 with the requested range, or a 416."""
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Type": content_type,
        # A stored file is never served as anything but what its record says it is.
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'inline; filename="{download_name.replace(chr(34), "")}"',
        "Cache-Control": "private, max-age=3600",
    }
    if etag:
        headers["ETag"] = f'"{etag}"'
    wanted: ByteRange | None
    try:
        wanted = parse_range(request.headers.get("range"), size)
    except RangeNotSatisfiable:
        headers["Content-Range"] = f"bytes */{size}"
        return Response(status_code=416, headers=headers)
    if_range = request.headers.get("if-range")
    if wanted is not None and if_range is not None and (not etag or if_range.strip('"') != etag):
        wanted = None  # the client's copy is of another file: send the whole current one
    if wanted is None:
        wanted, status = ByteRange(0, size - 1), 200
    else:
        status = 206
        headers["Content-Range"] = f"bytes {wanted.start}-{wanted.end}/{size}"
    headers["Content-Length"] = str(max(wanted.length, 0))
    if request.method == "HEAD" or size == 0:
        return Response(status_code=status, headers=headers)
    return StreamingResponse(
        _chunks(open_file, wanted.start, wanted.length), status_code=status, headers=headers
    )
