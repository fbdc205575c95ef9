"""Answering a player's HTTP requests for a stored file: whole, or one byte range (seeking).

A ``<video>`` element asks for ``Range: bytes=N-`` whenever it seeks; answering 206 with exactly
those bytes is what makes seeking work without downloading the whole video first. Only a single
range is served (players never ask for more); several ranges, a range outside the file and a
``bytes`` range that does not parse (thousands of digits, start after end, signs) get 416. A range
in another unit is ignored, as RFC 9110 requires.

The bytes come from the :class:`files.StoredFile` the caller opened and checked, never from the
path again; a local file is re-checked after every read, and an answer stops short rather than
send bytes written after the check.

Starlette's ``FileResponse`` also answers ranges, but it opens the file again by its path (a
symlink swapped in after the check would be followed) and only for local files; this one answer
serves both local files and object storage from what was checked.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from airflow_provider_dreamina.plugins.files import StoredFile, StoredFileChanged

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024
# A byte position has at most 20 digits (2**64 - 1); anything longer is not a request for bytes.
_POSITION = r"[0-9]{0,20}"
_RANGE = re.compile(rf"\s*({_POSITION})\s*-\s*({_POSITION})\s*", re.ASCII)
_FALLBACK_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ._-+()[],")


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` to ``end`` of a file, both included (as in ``Content-Range``)."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class RangeNotSatisfiable(Exception):
    """The requested range does not parse, is not served, or lies outside the file."""


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range a ``Range`` header asks for, None for the whole file.

    :raises RangeNotSatisfiable: a ``bytes`` range that does not parse, several ranges, or a
        range outside the file.
    """
    if not header:
        return None
    unit, equals, spec = header.partition("=")
    if unit.strip().lower() != "bytes":
        return None  # another unit (or none): RFC 9110 says to ignore the header
    match = _RANGE.fullmatch(spec) if equals else None
    if match is None:
        raise RangeNotSatisfiable
    first, last = match.groups()
    if not first and not last:
        raise RangeNotSatisfiable
    if not first:  # "bytes=-N": the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    if start >= size or (last and int(last) < start):
        raise RangeNotSatisfiable
    return ByteRange(start, min(int(last), size - 1) if last else size - 1)


def content_disposition(name: str) -> str:
    """``inline`` with the stored name: an ASCII ``filename`` and the exact ``filename*`` (RFC 6266).

    Any name works: one that is not Latin-1, holds quotes, semicolons, CR/LF or is not even valid
    Unicode (those characters become ``?``); the header itself is printable ASCII.
    """
    name = name or "video"
    fallback = "".join(char if char in _FALLBACK_SAFE else "_" for char in name)
    encoded = quote(name.encode("utf-8", "replace"), safe="")
    return f"inline; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def _chunks(stored: StoredFile, start: int, length: int) -> Iterator[bytes]:
    try:
        offset, end = start, start + length
        while offset < end:
            chunk = stored.read_at(offset, min(CHUNK_BYTES, end - offset))
            if not chunk:
                return
            stored.check_between_reads()
            offset += len(chunk)
            yield chunk
    except StoredFileChanged as error:
        # The answer ends short of its Content-Length: the client sees a broken transfer, never
        # bytes that were not checked.
        log.warning("Stopped sending %s: %s", stored.uri, error)
    finally:
        stored.close()


def file_response(
    request: Request,
    stored: StoredFile,
    *,
    content_type: str,
    etag: str | None,
    download_name: str,
) -> Response:
    """A 200 with the whole file, a 206 with the requested range, or a 416; closes ``stored``."""
    size = stored.size
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Type": content_type,
        "Content-Disposition": content_disposition(download_name),
        "Cache-Control": "private, max-age=3600",
    }
    if etag:
        headers["ETag"] = f'"{etag}"'
    wanted: ByteRange | None
    try:
        wanted = parse_range(request.headers.get("range"), size)
    except RangeNotSatisfiable:
        stored.close()
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
        stored.close()
        return Response(status_code=status, headers=headers)
    return StreamingResponse(
        _chunks(stored, wanted.start, wanted.length), status_code=status, headers=headers
    )
