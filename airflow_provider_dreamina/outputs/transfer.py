"""The verified, resumable, bounded download of one output into a sink.

Memory stays constant: each piece goes to the sink as it arrives, counted against
``Content-Length``, hashed with SHA-256 and, when the output claims to be an MP4 video, checked as
one on the way (``video.VideoInspector``: the index is kept, frames are not). A transfer broken
midway resumes with an HTTP ``Range`` request (or starts again from zero when the server cannot
resume). This module never calls RunComfy's API: when an output URL has expired it asks the
caller's ``fresh_url``.

Output hosts are untrusted: a download has one wall-clock deadline for all its attempts, which
no slow drip can stretch (every socket operation is bounded by the time left, see
``runcomfy.deadlines``); bytes are counted against ``max_bytes`` as they arrive; and a body is
stored exactly as sent: ``identity`` is asked for, and a compressed answer is refused, never
decoded (a small gzip body can inflate to gigabytes).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import time
from collections.abc import Callable
from typing import Any, Protocol

import httpx
from pydantic import BaseModel, ConfigDict

from airflow_provider_dreamina import metrics
from airflow_provider_dreamina.exceptions import DreaminaDownloadError, DreaminaDownloadInterruptedError
from airflow_provider_dreamina.outputs.video import VideoInspector, claims_video
from airflow_provider_dreamina.redaction import url_without_query, without_queries
from airflow_provider_dreamina.runcomfy import deadlines
from airflow_provider_dreamina.runcomfy.reading import raw_chunks
from airflow_provider_dreamina.runcomfy.retries import RetryPolicy, parse_retry_after

log = logging.getLogger(__name__)

#: The most a download hands its sink at once; memory stays under four times this.
DOWNLOAD_CHUNK_SIZE = 1024 * 1024
#: The most asked of the socket per read (at most half of ``chunk_size``; 0 keeps httpcore's own
#: 64 KiB). Each read costs a trip through httpcore and h11 in Python: eight times fewer reads cut
#: the client's CPU per GiB by about a quarter (BENCHMARKS.md, "Download").
READ_SIZE = 512 * 1024
MAX_REDIRECTS = 5
_CONTENT_RANGE = re.compile(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", re.IGNORECASE | re.ASCII)

#: Raises when a URL may not be fetched; the second argument names the URL it redirected from.
URLCheck = Callable[[str, "str | None"], None]


class OutputSink(Protocol):
    """Where a download puts the bytes of an output."""

    def write(self, chunk: bytes, /) -> object: ...

    def restart(self) -> None:
        """Forget every byte received so far: the download starts again from zero."""


class DownloadedOutput(BaseModel):
    """What one verified download delivered."""

    model_config = ConfigDict(frozen=True)

    #: The output URL without its query string (signed URLs carry their secret there).
    source_url: str
    size_bytes: int
    sha256: str
    content_type: str | None = None
    attempts: int = 1
    #: How many times the transfer went on from where it broke, with an HTTP Range request.
    resumed: int = 0
    #: How many times it had to start again from zero.
    restarted: int = 0
    #: Whether the URL expired and was replaced by a fresh one.
    refreshed: bool = False
    #: What the body is as a video (``VideoFacts.as_manifest``), when it claims to be one.
    video: dict[str, Any] | None = None


class _URLExpired(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


class _Interrupted(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def download(
    client: httpx.Client,
    url: str,
    sink: OutputSink,
    *,
    policy: RetryPolicy,
    check_url: URLCheck,
    fresh_url: Callable[[], str] | None = None,
    max_bytes: int | None = None,
    chunk_size: int = DOWNLOAD_CHUNK_SIZE,
    deadline: float | None = None,
) -> DownloadedOutput:
    """Stream ``url`` into ``sink``, resuming and retrying; ``fresh_url`` replaces an expired URL once.

    :param deadline: seconds the whole download may take, every attempt and pause included.

    Raises :class:`DreaminaDownloadError` (naming the URL without its query string); ``sink`` then
    holds an incomplete file, which the caller must discard.
    """
    check_url(url, None)
    started = time.monotonic()
    until = None if deadline is None else started + deadline
    transfer = _Transfer(url, max_bytes=max_bytes, chunk_size=chunk_size, until=until)

    def past_deadline(reason: str, pause: float = 0.0) -> DreaminaDownloadInterruptedError | None:
        if until is None or time.monotonic() + pause < until:
            return None
        return DreaminaDownloadInterruptedError(
            f"download of {transfer.safe_url} did not finish within its deadline of {deadline:g} s "
            f"({transfer.offset} bytes received; last: {reason}); the connection's 'download_deadline' "
            "extra sets it",
            url=transfer.safe_url,
        )

    failures = 0
    refreshed = False
    while not transfer.done:
        received_before = transfer.offset
        try:
            with deadlines.within(deadline or 0.0, until) if until is not None else contextlib.nullcontext():
                _attempt(client, transfer, sink, check_url)
        except _URLExpired as expired:
            if fresh_url is None or refreshed:
                fresh = " even with a fresh URL" if refreshed else ""
                raise DreaminaDownloadError(
                    f"output {transfer.safe_url} answered HTTP {expired.status_code}{fresh}: the URL "
                    "has expired or the output is gone; fetch a new result and download again",
                    url=transfer.safe_url,
                ) from None
            refreshed = True
            log.info(
                "Output %s answered HTTP %d (expired URL); fetching a fresh URL",
                transfer.safe_url,
                expired.status_code,
            )
            transfer.url = fresh_url()
            check_url(transfer.url, None)
            continue
        except _Interrupted as interruption:
            reason, retry_after = interruption.reason, interruption.retry_after
        else:
            if transfer.done or transfer.offset > received_before:
                if (late := past_deadline("the transfer was still going")) is not None and not transfer.done:
                    raise late
                continue
            reason, retry_after = "the server sent no bytes", None
        failures += 1
        delay = policy.delay(failures - 1, retry_after)
        if (late := past_deadline(reason, delay)) is not None:
            raise late
        if failures > policy.max_retries:
            raise DreaminaDownloadInterruptedError(
                f"download of {transfer.safe_url} failed after {failures} attempts ({reason})",
                url=transfer.safe_url,
            )
        log.warning(
            "Download of %s interrupted at %d bytes (%s); %s in %.1f s (retry %d of %d)",
            transfer.safe_url,
            transfer.offset,
            reason,
            "resuming" if transfer.offset and transfer.resumable else "starting again",
            delay,
            failures,
            policy.max_retries,
        )
        time.sleep(delay)
    outcome = transfer.outcome(attempts=failures + 1, refreshed=refreshed)
    metrics.downloaded(outcome.size_bytes, time.monotonic() - started)
    return outcome


def _attempt(client: httpx.Client, transfer: _Transfer, sink: OutputSink, check_url: URLCheck) -> None:
    """One GET of the output (following checked redirects), from where the last one stopped."""
    headers = transfer.request_headers(sink)
    target = transfer.url
    for _hop in range(MAX_REDIRECTS + 1):
        try:
            with client.stream("GET", target, headers=headers) as response:
                if not response.is_redirect:
                    transfer.receive(response, sink)
                    return
                target = str(response.url.join(response.headers.get("Location", "")))
                check_url(target, transfer.safe_url)
        except httpx.TransportError as error:
            raise _Interrupted(
                f"{type(error).__name__}: {without_queries(str(error)) or 'no detail'}"
            ) from None
    raise DreaminaDownloadError(
        f"output {transfer.safe_url} redirected more than {MAX_REDIRECTS} times", url=transfer.safe_url
    )


class _Transfer:
    """One output download across its attempts: position, running hash, what the server declared."""

    def __init__(self, url: str, *, max_bytes: int | None, chunk_size: int, until: float | None) -> None:
        self.url = url
        self.until = until
        self.max_bytes = max_bytes
        self.chunk_size = chunk_size
        self.offset = 0
        self.sha256 = hashlib.sha256()
        self.expected_total: int | None = None
        self.content_type: str | None = None
        # ETag or Last-Modified: a resumed request asks for the rest of *this* file only.
        self.validator: str | None = None
        self.resumable = True
        self.resumed = 0
        self.restarted = 0
        self.done = False
        # Checks, as the bytes stream past, that a body claiming to be a video is one.
        self.video: VideoInspector | None = None

    @property
    def safe_url(self) -> str:
        return url_without_query(self.url)

    def request_headers(self, sink: OutputSink) -> dict[str, str]:
        if self.offset and not self.resumable:
            self.restart(sink)
        if not self.offset:
            return {}
        headers = {"Range": f"bytes={self.offset}-"}
        if self.validator:
            headers["If-Range"] = self.validator
        return headers

    def restart(self, sink: OutputSink) -> None:
        sink.restart()
        self.offset = 0
        self.sha256 = hashlib.sha256()
        self.expected_total = None
        self.restarted += 1

    def receive(self, response: httpx.Response, sink: OutputSink) -> None:
        """Append the body of one answer to ``sink``; raises to ask for another attempt."""
        status = response.status_code
        if status in (403, 404, 410):
            raise _URLExpired(status)
        if status in (408, 425, 429) or status >= 500:
            raise _Interrupted(f"HTTP {status}", parse_retry_after(response.headers.get("Retry-After")))
        if status == 416:
            asked_for = self.offset
            self.restart(sink)
            raise _Interrupted(f"HTTP 416: the server cannot resume at byte {asked_for}")
        if status not in (200, 206):
            raise DreaminaDownloadError(f"output {self.safe_url} answered HTTP {status}", url=self.safe_url)
        headers = response.headers
        encoding = headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise DreaminaDownloadError(
                f"output {self.safe_url} was sent compressed ({encoding[:20]}) although only identity "
                "was accepted; it is refused, not decoded",
                url=self.safe_url,
            )
        length = _header_int(headers.get("Content-Length"))
        if status == 206:
            length = self._continue_range(headers.get("Content-Range"), length, sink)
        else:
            if self.offset:
                log.info("%s ignored the Range request; downloading it again from the start", self.safe_url)
                self.restart(sink)
            self.expected_total = length
            if headers.get("Accept-Ranges", "").strip().lower() == "none":
                self.resumable = False
        self.validator = self.validator or _range_validator(headers)
        self.content_type = self.content_type or headers.get("Content-Type")
        if self.offset == 0:  # a new body from its first byte: a new check of it
            claims = claims_video(content_type=self.content_type, name=self.url)
            self.video = VideoInspector(source=self.safe_url, url=self.safe_url) if claims else None
        end = None if length is None else self.offset + length
        self._check_size(self.expected_total if self.expected_total is not None else end, declared=True)
        _widen_reads(response, min(READ_SIZE, self.chunk_size // 2))
        # Pieces go to the sink as the network delivers them (each read returns at most
        # chunk_size / 2 bytes; a bigger piece is split at chunk_size): a broken transfer keeps
        # every byte that arrived, and memory holds a few reads' worth (httpcore and h11 copy each
        # read four times on its way here).
        for piece in raw_chunks(response):
            if self.until is not None and time.monotonic() > self.until:
                raise _Interrupted("the deadline passed while the output was streaming")
            self._check_size(self.offset + len(piece), declared=False)
            for start in range(0, len(piece), self.chunk_size):
                part = piece[start : start + self.chunk_size]  # the piece itself when it fits
                if self.video is not None:
                    self.video.feed(part)  # an HTML page or a cut-short body fails here, retryable
                sink.write(part)
                self.sha256.update(part)
                self.offset += len(part)
        if end is not None and self.offset < end:
            total = self.expected_total if self.expected_total is not None else end
            raise _Interrupted(f"the connection closed after {self.offset} of {total} bytes")
        self.done = self.expected_total is None or self.offset >= self.expected_total

    def _continue_range(self, content_range: str | None, length: int | None, sink: OutputSink) -> int | None:
        match = _CONTENT_RANGE.fullmatch(content_range or "")
        start, last = (int(match.group(1)), int(match.group(2))) if match else (-1, -1)
        total = int(match.group(3)) if match and match.group(3) != "*" else None
        changed = self.expected_total is not None and total is not None and total != self.expected_total
        if start != self.offset or changed:
            asked_for = self.offset
            self.restart(sink)
            raise _Interrupted(
                f"asked for the bytes from {asked_for}, the server sent "
                f"{content_range or 'no Content-Range'}; starting again from zero"
            )
        if self.offset:
            self.resumed += 1
        if total is not None:
            self.expected_total = total
        return length if length is not None else last - start + 1

    def _check_size(self, size: int | None, *, declared: bool) -> None:
        if self.max_bytes is None or size is None or size <= self.max_bytes:
            return
        how = f"is {size} bytes" if declared else f"exceeded {self.max_bytes} bytes while streaming"
        raise DreaminaDownloadError(
            f"output {self.safe_url} {how}; max_bytes allows {self.max_bytes}", url=self.safe_url
        )

    def outcome(self, *, attempts: int, refreshed: bool) -> DownloadedOutput:
        facts = self.video.finish() if self.video is not None else None
        return DownloadedOutput(
            source_url=self.safe_url,
            size_bytes=self.offset,
            sha256=self.sha256.hexdigest(),
            content_type=self.content_type,
            attempts=attempts,
            resumed=self.resumed,
            restarted=self.restarted,
            refreshed=refreshed,
            video=facts.as_manifest() if facts is not None else None,
        )


def _widen_reads(response: httpx.Response, read_size: int) -> None:
    """Let the connection behind ``response`` read up to ``read_size`` bytes per socket read.

    httpcore 1.x reads HTTP/1.1 bodies 64 KiB at a time (``HTTP11Connection.READ_NUM_BYTES``) and
    has no setting for it, so the size is set on this response's connection, reached through
    httpx's and httpcore's stream wrappers. Where that path is not there (a mock or another
    transport, another httpcore), reads keep their size: only the speed differs, never the bytes.
    The connection keeps the size while it stays in the client's pool, for this output's resumes.
    """
    connection: Any = response.stream
    for attribute in ("_stream", "_httpcore_stream", "_stream", "_connection"):
        connection = getattr(connection, attribute, None)
    current = getattr(connection, "READ_NUM_BYTES", None)
    if isinstance(current, int) and read_size > current:
        connection.READ_NUM_BYTES = read_size


def _header_int(value: str | None) -> int | None:
    value = (value or "").strip()
    return int(value) if value.isdigit() else None


def _range_validator(headers: httpx.Headers) -> str | None:
    # If-Range accepts only a strong ETag; a weak one would always restart the download.
    etag = (headers.get("ETag") or "").strip()
    if etag and not etag.startswith("W/"):
        return etag
    modified: str | None = headers.get("Last-Modified")
    return modified
