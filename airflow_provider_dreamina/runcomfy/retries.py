"""Whether and when to send a call again: backoff, ``Retry-After``, and the paid-submit rule.

A submit is a paid, non-idempotent POST and RunComfy offers no idempotency key, so it is resent
only when it certainly did not reach the server (the connection was refused) or the server
refused it (429). After anything else (a read timeout, a reset after sending, a 5xx) it may have
created a request: :class:`DreaminaSubmitUncertainError`, never a resend.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx

from airflow_provider_dreamina.exceptions import (
    DreaminaAPIError,
    DreaminaConnectionError,
    DreaminaRateLimitError,
    DreaminaServerError,
    DreaminaSubmitUncertainError,
)
from airflow_provider_dreamina.redaction import without_secret
from airflow_provider_dreamina.runcomfy.calls import Call
from airflow_provider_dreamina.runcomfy.settings import DreaminaSettings

log = logging.getLogger(__name__)

# A transport error before the request was written: the server certainly did not see it.
NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_RETRYABLE_TRANSPORT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently one hook retries its calls.

    :param max_retries: attempts after the first, unless a call sets its own.
    :param backoff: first backoff in seconds; doubles each attempt, with jitter.
    :param max_wait: cap in seconds on any single wait, ``Retry-After`` included.
    """

    max_retries: int = 5
    backoff: float = 1.0
    max_wait: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1``: ``Retry-After`` when given, else backoff."""
        if retry_after is not None:
            return min(retry_after, self.max_wait)
        ceiling = min(self.max_wait, self.backoff * 2.0**attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def retries_for(self, call: Call[Any]) -> int:
        return self.max_retries if call.max_retries is None else call.max_retries

    def after_error(
        self, call: Call[Any], attempt: int, error: httpx.HTTPError, settings: DreaminaSettings
    ) -> float:
        """Seconds to wait before resending after a transport error; raises when it must not."""
        reason = f"{type(error).__name__}: {without_secret(str(error), settings.token) or 'no detail'}"
        if call.paid and not isinstance(error, NOT_SENT_ERRORS):
            raise submit_uncertain(call, reason)
        retryable = isinstance(error, (*NOT_SENT_ERRORS, *_RETRYABLE_TRANSPORT_ERRORS))
        if not retryable or attempt >= self.retries_for(call):
            tries = f" after {attempt + 1} attempts" if attempt else ""
            raise DreaminaConnectionError(
                f"{call.name} call to {settings.base_url} failed{tries}: {reason}; check the host of "
                f"connection '{settings.conn_id}' and the network"
            )
        delay = self.delay(attempt)
        self._log_retry(call, attempt, reason, delay)
        return delay

    def after_failure(self, call: Call[Any], attempt: int, failure: DreaminaAPIError) -> float:
        """Seconds to wait before resending after an error answer; raises when it must not."""
        if call.paid and isinstance(failure, DreaminaServerError):
            raise submit_uncertain(call, str(failure))
        if not failure.retryable or attempt >= self.retries_for(call):
            raise failure
        retry_after = failure.retry_after if isinstance(failure, DreaminaRateLimitError) else None
        delay = self.delay(attempt, retry_after)
        self._log_retry(call, attempt, f"HTTP {failure.status_code}", delay)
        return delay

    def _log_retry(self, call: Call[Any], attempt: int, reason: str, delay: float) -> None:
        target = f" for request {call.request_id}" if call.request_id else ""
        log.warning(
            "%s%s failed (%s); retrying in %.1f s (retry %d of %d)",
            call.name,
            target,
            reason,
            delay,
            attempt + 1,
            self.retries_for(call),
        )


def submit_uncertain(call: Call[Any], reason: str) -> DreaminaSubmitUncertainError:
    """The error of a submit that may have created a paid request whose answer was lost."""
    return DreaminaSubmitUncertainError(
        f"submit to {call.model_id} may have created a paid request, but its answer was lost ({reason}). "
        "It was not resent, so as not to pay twice: look for a new request in the RunComfy "
        "dashboard before running this task again.",
        model_id=call.model_id,
    )
