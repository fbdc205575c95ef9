"""RunComfy's undocumented endpoints (model info, balance): read leniently, remembered briefly.

RunComfy documents neither prices nor balances; its own clients use endpoints that may answer
404, leave a field out or change shape. So an answer here is optional by construction: any error
(404, 401 on the account host, a body that is not JSON, a timeout) becomes None and one log line,
never a failed task. Answers, None included, are remembered for :data:`CACHE_SECONDS`, per hook
(sync) or per event loop and connection (async), so a task asking twice costs one call.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from airflow_provider_dreamina.exceptions import DreaminaAPIError, DreaminaError

log = logging.getLogger(__name__)

#: Seconds an answer of an undocumented endpoint is reused.
CACHE_SECONDS = 60.0

T = TypeVar("T")


class AnswerCache:
    """Answers by key, each forgotten :data:`CACHE_SECONDS` after it was read."""

    def __init__(self, seconds: float = CACHE_SECONDS) -> None:
        self.seconds = seconds
        self._answers: dict[Hashable, tuple[float, Any]] = {}

    def get(self, key: Hashable) -> tuple[bool, Any]:
        """``(True, answer)`` when a fresh answer is remembered, else ``(False, None)``."""
        remembered = self._answers.get(key)
        if remembered is None or time.monotonic() - remembered[0] > self.seconds:
            return False, None
        return True, remembered[1]

    def put(self, key: Hashable, answer: Any) -> None:
        self._answers[key] = (time.monotonic(), answer)


_LOOP_CACHES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AnswerCache] = weakref.WeakKeyDictionary()


def loop_cache() -> AnswerCache:
    """The cache the running event loop's hooks share (a triggerer's, or one ``asyncio.run``)."""
    return _LOOP_CACHES.setdefault(asyncio.get_running_loop(), AnswerCache())


def fetch(cache: AnswerCache, key: Hashable, what: str, read: Callable[[], T]) -> T | None:
    """The remembered answer for ``key``, else ``read()``'s; None (logged) when it failed."""
    found, answer = cache.get(key)
    if found:
        return answer  # type: ignore[no-any-return]
    try:
        answer = read()
    except DreaminaError as error:
        _log_not_offered(what, error)
        answer = None
    cache.put(key, answer)
    return answer  # type: ignore[no-any-return]


async def afetch(cache: AnswerCache, key: Hashable, what: str, read: Callable[[], Awaitable[T]]) -> T | None:
    """Async :func:`fetch`."""
    found, answer = cache.get(key)
    if found:
        return answer  # type: ignore[no-any-return]
    try:
        answer = await read()
    except DreaminaError as error:
        _log_not_offered(what, error)
        answer = None
    cache.put(key, answer)
    return answer  # type: ignore[no-any-return]


def _log_not_offered(what: str, error: DreaminaError) -> None:
    if isinstance(error, DreaminaAPIError):
        reason = f"HTTP {error.status_code}"
        if 200 <= error.status_code < 300:
            reason += ", an answer this provider cannot read"
        if error.error_code is not None:
            reason += f", error_code {error.error_code}"
    else:
        reason = type(error).__name__
    # The endpoint is undocumented: its absence is expected, and the caller says what it skips.
    log.info("RunComfy did not tell the %s (%s); going on without it", what, reason)
