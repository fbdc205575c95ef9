"""Whether a call is sent again, and what a failure means after a paid call: decided here, once.

A submit is a paid, non-idempotent POST and RunComfy offers no idempotency key. :class:`Attempts`
follows one call through its attempts and decides, after each, what happens next:

==============================================  ==========================  ============================
what happened to an attempt                     a free call (status,        a paid call (submit)
                                                result, cancel, model
                                                info, balance)
==============================================  ==========================  ============================
connection refused, connect or pool timeout     sent again after a backoff  sent again: it never left
(the request never left this machine)
HTTP 429                                        sent again after            sent again: RunComfy refused
                                                ``Retry-After`` or backoff  it, nothing was created
read timeout, reset or protocol error after     sent again (not within the  uncertain, never resent
sending; the attempt's whole deadline spent     call once a whole deadline
                                                was spent)
HTTP 5xx (or any status past it), or            sent again                  uncertain, never resent
``error_code`` 500001
a refusal RunComfy documents: HTTP 400, 401,    its typed error, at once    its typed error: RunComfy
402, 403, 404, 422, or a documented refusal                                 refused it, nothing created
``error_code`` on a 2xx answer (400002 on 200)
any other error answer: another 4xx (409        its typed error, at once    uncertain
Conflict...), a 1xx or 3xx (``303 See Other``
answers a POST that created something), an
unknown ``error_code`` on a 2xx (1e999, [])
an answer that breaks a bound, is not JSON or   DreaminaUnreadableAnswer-   uncertain
not the expected shape                          Error (retryable)
anything unforeseen while sending, reading,     DreaminaUnreadableAnswer-   uncertain
deciding or logging                             Error (retryable)
no time left in the wait around the call        the last error, not resent  (a submit is never in a wait)
==============================================  ==========================  ============================

"Uncertain" is :class:`DreaminaSubmitUncertainError`: the request may exist and be charged. It is
the only error a paid call raises when it may have created something (:func:`maybe_paid`); every
other :class:`DreaminaError` from a paid call proves that nothing was created, which is how the
submit's intent record knows whether to keep the intent (see ``submission.reattach``).
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, NoReturn

import httpx

from airflow_provider_dreamina.exceptions import (
    DreaminaAPIError,
    DreaminaAuthError,
    DreaminaConnectionError,
    DreaminaError,
    DreaminaInsufficientBalanceError,
    DreaminaNotFoundError,
    DreaminaRateLimitError,
    DreaminaRejectedInputError,
    DreaminaSubmitUncertainError,
    DreaminaUnreadableAnswerError,
)
from airflow_provider_dreamina.redaction import shorten, without_secret
from airflow_provider_dreamina.runcomfy import deadlines
from airflow_provider_dreamina.runcomfy.calls import Call
from airflow_provider_dreamina.runcomfy.settings import DreaminaSettings

log = logging.getLogger(__name__)

#: Error answers that prove RunComfy refused a call, so a paid one created nothing.
REFUSALS = (
    DreaminaAuthError,
    DreaminaInsufficientBalanceError,
    DreaminaNotFoundError,
    DreaminaRateLimitError,
    DreaminaRejectedInputError,
)
# A transport error before the request was written: the server certainly did not see it.
NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_RETRYABLE_TRANSPORT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


#: The longest ``Retry-After`` honoured: a larger one is a broken (or hostile) header, and would
#: stall a wait for ever or overflow a sleep.
RETRY_AFTER_MAX_SECONDS = 3600.0


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date), at most
    :data:`RETRY_AFTER_MAX_SECONDS`; None when unusable."""
    if not value:
        return None
    value = value.strip()[:64]
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except Exception:  # any text at all may come: a header is untrusted
            return None
    return min(max(0.0, seconds), RETRY_AFTER_MAX_SECONDS) if math.isfinite(seconds) else None


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
        ceiling = min(self.max_wait, self.backoff * 2.0 ** min(attempt, 62))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def retries_for(self, call: Call[Any]) -> int:
        return self.max_retries if call.max_retries is None else call.max_retries


#: The ``error_code`` values with which RunComfy documents refusing a call (nothing was created).
REFUSAL_CODES = frozenset({400001, 400002, 400004, 403001, 404001, 422001})
#: The HTTP statuses with which RunComfy (and its own clients) refuse a call.
REFUSAL_STATUSES = frozenset({400, 401, 402, 403, 404, 422, 429})


def proves_refusal(failure: DreaminaAPIError) -> bool:
    """Whether an error answer proves that RunComfy created nothing: one of the :data:`REFUSALS`
    on a status RunComfy refuses with (:data:`REFUSAL_STATUSES`), or with a documented refusal
    code on a 2xx answer. Nothing else does: not another 4xx, even with a refusal's code (409
    Conflict may name what was created), a 3xx or an unknown code."""
    if not isinstance(failure, REFUSALS):
        return False
    if failure.status_code in REFUSAL_STATUSES:
        return True
    return 200 <= failure.status_code < 300 and failure.error_code in REFUSAL_CODES


def maybe_paid(error: BaseException) -> bool:
    """After a paid call failed with ``error``: whether a request may exist (and be charged)."""
    return isinstance(error, DreaminaSubmitUncertainError) or not isinstance(error, DreaminaError)


@dataclass
class Attempts:
    """One call's attempts, and every decision about them (the table in the module docstring)."""

    call: Call[Any]
    policy: RetryPolicy
    settings: DreaminaSettings
    #: Attempts made so far.
    made: int = 0
    _spent_a_deadline: bool = field(default=False, repr=False)

    def seconds_for_next(self) -> float:
        """The wall-clock seconds the next attempt may take; counts it as made."""
        self.made += 1
        return deadlines.seconds_left(self.settings.request_deadline)

    def after_transport_error(self, error: httpx.HTTPError) -> float:
        """Seconds before sending again after a transport error; raises when it must not be."""
        reason = f"{type(error).__name__}: {shorten(self._secretless(str(error)), 300) or 'no detail'}"
        if self.call.paid and not isinstance(error, NOT_SENT_ERRORS):
            self.uncertain(reason)
        if isinstance(error, deadlines.DeadlinePassed):
            # A whole deadline spent: retrying would multiply it (a drip would hold a poll for
            # max_retries + 1 deadlines). The caller's own policy decides what comes next.
            self._spent_a_deadline = True
        retryable = isinstance(error, (*NOT_SENT_ERRORS, *_RETRYABLE_TRANSPORT_ERRORS))
        failure = DreaminaConnectionError(
            f"{self.call.name} call to {self.settings.base_url} failed"
            f"{f' after {self.made} attempts' if self.made > 1 else ''}: {reason}; check the host of "
            f"connection '{self.settings.conn_id}' and the network"
        )
        if not retryable:
            raise failure
        return self._again(failure, reason)

    def after_error_answer(self, failure: DreaminaAPIError) -> float:
        """Seconds before sending again after an error answer; raises when it must not be."""
        if self.call.paid and not proves_refusal(failure):
            self.uncertain(str(failure))
        if not failure.retryable:
            raise failure
        retry_after = failure.retry_after if isinstance(failure, DreaminaRateLimitError) else None
        return self._again(failure, f"HTTP {failure.status_code}", retry_after)

    def unreadable(self, reason: str, status_code: int = 0) -> NoReturn:
        """An answer that could not be read (a bound broken, not JSON, not the expected shape)."""
        if self.call.paid:
            self.uncertain(reason)
        raise DreaminaUnreadableAnswerError(
            f"RunComfy answered {self.call.name} with a body this provider cannot read: {reason}",
            status_code=status_code,
            request_id=self.call.request_id,
        )

    def unforeseen(self, error: Exception) -> NoReturn:
        """Anything else that went wrong in the call: never an untyped error, never a resend."""
        self.unreadable(f"{type(error).__name__} while handling the answer")

    def uncertain(self, reason: str) -> NoReturn:
        """A paid call that may have created a request whose answer was lost."""
        raise DreaminaSubmitUncertainError(
            f"submit to {self.call.model_id} may have created a paid request, but its answer was lost "
            f"({shorten(self._secretless(reason), 500)}). It was not resent, so as not to pay twice: look "
            "for a new request in the RunComfy dashboard before running this task again.",
            model_id=self.call.model_id,
        )

    def _again(self, failure: DreaminaError, reason: str, retry_after: float | None = None) -> float:
        attempt = self.made - 1
        retries = 0 if self._spent_a_deadline else self.policy.retries_for(self.call)
        if attempt >= retries:
            raise failure
        delay = self.policy.delay(attempt, retry_after)
        if not deadlines.time_left_for(delay):
            raise failure  # the wait around this call ends first: it decides what comes next
        target = f" for request {self.call.request_id}" if self.call.request_id else ""
        log.warning(
            "%s%s failed (%s); retrying in %.1f s (retry %d of %d)",
            self.call.name,
            target,
            reason,
            delay,
            attempt + 1,
            retries,
        )
        return delay

    def _secretless(self, text: str) -> str:
        return without_secret(text, self.settings.token)
