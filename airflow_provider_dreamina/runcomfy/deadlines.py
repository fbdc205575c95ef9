"""Wall-clock deadlines: for one HTTP exchange that a slow drip cannot stretch, and for a wait.

A wait (``waiting.policy``) bounds every call made inside it with :func:`bound_by`: each attempt
may take the smaller of the connection's ``request_deadline`` and the time left in the wait plus
:data:`GRACE_SECONDS` (:func:`seconds_left`), and no retry is begun that would end after the wait
(:func:`time_left_for`). So however slowly RunComfy answers, a wait ends within its timeout and a
few seconds.

httpx bounds each socket read, not a whole exchange: a server that sends one byte every few
seconds, in its headers or its body, keeps a read timeout from ever firing. Async callers wrap an
exchange in ``asyncio.wait_for``; a thread cannot be interrupted that way, so the sync clients'
sockets are wrapped instead: inside :func:`within`, every connect, read and write may take at
most the time left, and fails with a timeout once none is left.

The wrapper is installed on the connection pool of each httpx transport the provider builds
(``install``): httpx offers no public hook for it. Where that pool is missing (an injected test
transport, a future httpx), ``install`` does nothing and callers still check the deadline
between the chunks they read.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any

import httpcore
import httpx

log = logging.getLogger(__name__)


class DeadlinePassed(httpx.ReadTimeout):
    """An exchange used up its whole deadline: whoever sent it should not spend another at once."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the answer did not complete within the request deadline of {seconds:g} s")


# (monotonic deadline, its length in seconds) of the exchange running in this thread or task.
_DEADLINE: ContextVar[tuple[float, float] | None] = ContextVar("dreamina_deadline", default=None)
# Monotonic time by which the calls of the wait running in this thread or task must end.
_WAIT_ENDS: ContextVar[float | None] = ContextVar("dreamina_wait_ends", default=None)

#: How long past a wait's own end a call made inside it may still run (a last answer, a cancel).
GRACE_SECONDS = 3.0
# An attempt always gets this long, so that it fails with a timeout instead of not being made.
_MIN_ATTEMPT_SECONDS = 0.05


@contextlib.contextmanager
def bound_by(remaining: float | None) -> Iterator[None]:
    """Bound every call inside the block by the ``remaining`` seconds of a wait (None: unbounded)."""
    if remaining is None:
        yield
        return
    token = _WAIT_ENDS.set(time.monotonic() + max(0.0, remaining) + GRACE_SECONDS)
    try:
        yield
    finally:
        _WAIT_ENDS.reset(token)


def seconds_left(request_deadline: float) -> float:
    """How long the next attempt of a call may take: its own deadline, within the wait's time."""
    ends = _WAIT_ENDS.get()
    if ends is None:
        return request_deadline
    return max(_MIN_ATTEMPT_SECONDS, min(request_deadline, ends - time.monotonic()))


def time_left_for(pause: float) -> bool:
    """Whether the wait around this call (if any) leaves time for ``pause`` and another attempt."""
    ends = _WAIT_ENDS.get()
    return ends is None or time.monotonic() + pause < ends


@contextlib.contextmanager
def within(seconds: float, deadline: float | None = None) -> Iterator[float]:
    """Bound every socket operation inside the block; yields the monotonic deadline."""
    until = time.monotonic() + seconds if deadline is None else deadline
    token = _DEADLINE.set((until, seconds))
    try:
        yield until
    finally:
        _DEADLINE.reset(token)


def _bounded(timeout: float | None, error: type[Exception]) -> float | None:
    current = _DEADLINE.get()
    if current is None:
        return timeout
    until, seconds = current
    remaining = until - time.monotonic()
    if remaining <= 0:
        raise error(f"the exchange did not complete within its deadline of {seconds:g} s")
    return remaining if timeout is None else min(timeout, remaining)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        # A slow reader on the other side could stretch an upload the same way.
        view = memoryview(buffer)
        while view:
            piece, view = view[:65536], view[65536:]
            self._inner.write(bytes(piece), _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_tcp(host, port, bounded, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, bounded, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def install(client: httpx.Client) -> httpx.Client:
    """Make ``client``'s own transports honour :func:`within`; returns ``client``."""
    transports = [getattr(client, "_transport", None), *getattr(client, "_mounts", {}).values()]
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if isinstance(backend, httpcore.NetworkBackend) and not isinstance(backend, _DeadlineBackend):
            pool._network_backend = _DeadlineBackend(backend)  # type: ignore[union-attr]
    return client
