"""Downloads read the socket in large pieces, and never hand the sink more than ``chunk_size``.

httpcore reads 64 KiB at a time unless ``transfer`` widens the reads of the connection it streams
from, through httpcore's private attributes: if an httpx or httpcore upgrade moves them, downloads
stay correct but cost about a third more CPU per GiB (BENCHMARKS.md, "Download"). The first test
fails then.
"""

from __future__ import annotations

import hashlib
import os
import time

import httpx

from airflow_provider_dreamina.outputs import transfer
from airflow_provider_dreamina.runcomfy.retries import RetryPolicy
from tests.operators.download_server import output_host

BODY = os.urandom(8 * 1024 * 1024)
HTTPCORE_READ = 64 * 1024


class _SlowFirstWrite:
    """Records the pieces it gets; pauses at the first so the socket fills up meanwhile."""

    def __init__(self) -> None:
        self.pieces: list[int] = []
        self.data = bytearray()

    def write(self, chunk: bytes) -> None:
        if not self.pieces:
            time.sleep(0.3)
        self.pieces.append(len(chunk))
        self.data += chunk

    def restart(self) -> None:
        self.pieces.clear()
        self.data.clear()


def _download(chunk_size: int) -> tuple[_SlowFirstWrite, transfer.DownloadedOutput]:
    with output_host() as host:
        host.behaviour.body = BODY
        host.behaviour.content_type = "application/octet-stream"
        sink = _SlowFirstWrite()
        with httpx.Client(trust_env=False) as client:
            downloaded = transfer.download(
                client,
                host.url("/out/blob.bin"),
                sink,
                policy=RetryPolicy(max_retries=0),
                check_url=lambda _url, _redirected_from: None,
                chunk_size=chunk_size,
            )
    return sink, downloaded


def test_reads_are_larger_than_httpcores_own() -> None:
    sink, downloaded = _download(chunk_size=transfer.DOWNLOAD_CHUNK_SIZE)

    assert bytes(sink.data) == BODY
    assert downloaded.sha256 == hashlib.sha256(BODY).hexdigest()
    assert max(sink.pieces) > HTTPCORE_READ, sink.pieces
    assert max(sink.pieces) <= transfer.DOWNLOAD_CHUNK_SIZE


def test_no_piece_is_larger_than_chunk_size() -> None:
    sink, downloaded = _download(chunk_size=100_000)

    assert bytes(sink.data) == BODY
    assert downloaded.size_bytes == len(BODY)
    assert max(sink.pieces) <= 100_000
