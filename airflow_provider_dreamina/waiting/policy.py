"""The one waiting policy: how every path follows a request until it ends.

``DreaminaHook.wait``, the trigger, the sensor (poke, reschedule and deferrable) and the submit
operator's non-deferred wait all decide here, once, so they cannot drift: which state changes are
logged, how long to sleep (slower while far back in the queue, at least ``Retry-After``), how long
a run of transient errors is tolerated, when the deadline has passed, and what is cancelled then
(only a request that is still queued: a running one is paid for already). The loops at the end
are twins that differ only in I/O.

Transient errors (5xx, 429, resets, refused connections, timeouts) are tolerated by time: a wait
gives up only after more than ``max_consecutive_errors`` failed polls in a row that span at least
``max_error_seconds``, so an outage of RunComfy's API does not fail paid generations that run on
meanwhile. An error that retrying cannot fix (a rejected token, an unknown request) ends the wait
at once. A wait's deadline bounds every call inside it (``runcomfy.deadlines.bound_by``): no slow
answer or retry inside a poll outlasts the wait by more than a few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_dreamina import metrics
from airflow_provider_dreamina.defaults import (
    DEFAULT_MAX_CONSECUTIVE_ERRORS,
    DEFAULT_MAX_ERROR_SECONDS,
    DEFAULT_POLL_INTERVAL,
)
from airflow_provider_dreamina.exceptions import (
    DreaminaError,
    DreaminaRateLimitError,
    DreaminaTimeoutError,
    DreaminaTransientWaitError,
)
from airflow_provider_dreamina.models import RequestResult, RequestState, RequestStatus
from airflow_provider_dreamina.runcomfy import deadlines
from airflow_provider_dreamina.waiting.outcome import raise_for_result

if TYPE_CHECKING:
    from airflow_provider_dreamina.hooks.dreamina import DreaminaHook

log = logging.getLogger(__name__)

# The slowest a queued request is polled, as a multiple of the poll interval.
_MAX_QUEUE_SLOWDOWN = 6.0
# An unknown status word is logged this long at most: the word comes from the network.
_WORD_LOG_LIMIT = 80
_CANCELLABLE_STATES = frozenset({RequestState.QUEUED, RequestState.UNKNOWN})


@dataclass(frozen=True)
class WaitPolicy:
    """How one wait behaves; plain values, so a trigger can carry it.

    :param poll_interval: seconds between status polls; slower while queued far back.
    :param deadline: wall-clock epoch seconds after which the wait gives up; None waits for ever.
    :param max_consecutive_errors: transient failed polls in a row (each after the hook's own
        retries) tolerated however quickly they come.
    :param max_error_seconds: how long a run of transient failed polls is tolerated; the wait gives
        up once both limits are passed. 0 makes the count alone decide.
    :param cancel_on_timeout: cancel the request at the deadline if it is still queued.
    """

    poll_interval: float = DEFAULT_POLL_INTERVAL
    deadline: float | None = None
    max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS
    max_error_seconds: float = DEFAULT_MAX_ERROR_SECONDS
    cancel_on_timeout: bool = True

    def __post_init__(self) -> None:
        if self.poll_interval <= 0:
            raise ValueError(f"poll_interval is {self.poll_interval}; it must be more than 0 seconds")
        if self.max_consecutive_errors < 0:
            raise ValueError(f"max_consecutive_errors is {self.max_consecutive_errors}; it must be 0 or more")
        if not self.max_error_seconds >= 0:
            raise ValueError(f"max_error_seconds is {self.max_error_seconds}; it must be 0 or more seconds")


@dataclass
class Waiting:
    """What one wait has seen so far; every decision of the policy, and no I/O but its metrics
    (fire-and-forget, see ``metrics``): time queued, failed polls, how the request ended."""

    request_id: str
    policy: WaitPolicy
    errors_in_a_row: int = 0
    #: Wall-clock epoch seconds of the first failed poll of the current run of errors.
    errors_since: float | None = None
    last_state: RequestState = RequestState.UNKNOWN
    #: Monotonic seconds of the first poll that saw the request queued, until one sees it leave.
    queued_since: float | None = None
    _seen: tuple[RequestState, int | None] | None = None
    _unknown_words: set[str] = field(default_factory=set)

    def saw(self, status: RequestStatus) -> bool:
        """Take a status answer; True when the request has ended (fetch its result next)."""
        self.last_state = status.state
        if status.state is RequestState.QUEUED:
            self.queued_since = time.monotonic() if self.queued_since is None else self.queued_since
        elif self.queued_since is not None and status.state is not RequestState.UNKNOWN:
            metrics.queued_for(time.monotonic() - self.queued_since)
            self.queued_since = None
        if (status.state, status.queue_position) != self._seen:
            self._seen = (status.state, status.queue_position)
            self._log_change(status)
        return status.state.is_terminal

    def polled(self) -> None:
        """A whole poll (status and, once ended, result) went through: the error run is over."""
        self.errors_in_a_row = 0
        self.errors_since = None

    def next_delay(self, status: RequestStatus | None = None, retry_after: float | None = None) -> float:
        """Seconds to sleep before the next poll, never past the deadline."""
        delay = self.policy.poll_interval
        if status is not None and status.state is RequestState.QUEUED and (status.queue_position or 0) > 1:
            position = status.queue_position or 1
            delay *= min(1 + (position - 1) / 2, _MAX_QUEUE_SLOWDOWN)
        if retry_after:
            delay = max(delay, retry_after)
        remaining = self.remaining()
        return delay if remaining is None else max(0.0, min(delay, remaining))

    def failed_poll(self, error: DreaminaError) -> float:
        """Take a failed poll: seconds before the next, or raise when the wait must stop."""
        metrics.wait_error(error.code)
        if not error.retryable:
            raise error
        now = time.time()
        self.errors_since = now if self.errors_since is None else self.errors_since
        self.errors_in_a_row += 1
        lasted = now - self.errors_since
        count, seconds = self.policy.max_consecutive_errors, self.policy.max_error_seconds
        if self.errors_in_a_row > count and lasted >= seconds:
            metrics.wait_error(DreaminaTransientWaitError.code)
            raise DreaminaTransientWaitError(
                f"stopped waiting for request {self.request_id} after {self.errors_in_a_row} failed polls "
                f"in a row over {lasted:.0f} s (more than {count} polls and {seconds:g} s are tolerated: "
                f"max_consecutive_errors, max_error_seconds): {error}",
                request_id=self.request_id,
            ) from error
        retry_after = error.retry_after if isinstance(error, DreaminaRateLimitError) else None
        delay = self.next_delay(retry_after=retry_after)
        log.warning(
            "Polling request %s failed (%s); trying again in %.0f s (failed poll %d in a row, for %.0f s; "
            "tolerated until more than %d over at least %g s)",
            self.request_id,
            error,
            delay,
            self.errors_in_a_row,
            lasted,
            count,
            seconds,
        )
        return delay

    def error_run(self) -> dict[str, Any]:
        """The current run of failed polls, as a rescheduled sensor keeps it between pokes."""
        return {"errors": self.errors_in_a_row, "since": self.errors_since}

    def resume_errors(self, saved: object) -> None:
        """Go on with a run of failed polls kept by :meth:`error_run` (anything else: no run)."""
        errors = saved.get("errors") if isinstance(saved, dict) else None
        since = saved.get("since") if isinstance(saved, dict) else None
        if isinstance(errors, int) and not isinstance(errors, bool) and errors > 0:
            self.errors_in_a_row = errors
            self.errors_since = float(since) if isinstance(since, (int, float)) else time.time()

    def remaining(self) -> float | None:
        return None if self.policy.deadline is None else self.policy.deadline - time.time()

    @property
    def past_deadline(self) -> bool:
        remaining = self.remaining()
        return remaining is not None and remaining <= 0

    @property
    def cancel_now(self) -> bool:
        """At the deadline: whether to cancel (only a request that has not started running)."""
        return self.policy.cancel_on_timeout and self.last_state in _CANCELLABLE_STATES

    def timed_out(self, cancelled: bool | None) -> DreaminaTimeoutError:
        """The error that ends a wait at its deadline; ``cancelled`` is None when no cancel was tried."""
        message = f"request {self.request_id} was still {self.last_state.value} when the deadline passed"
        if cancelled is not None:
            message += "; it was cancelled" if cancelled else "; it could not be cancelled"
        log.warning("%s", message)
        metrics.wait_error(DreaminaTimeoutError.code)
        return DreaminaTimeoutError(message, request_id=self.request_id)

    def finished(self, result: RequestResult) -> RequestResult:
        """The end of the wait: log it once with its outcome, then return or raise it."""
        cost = f", cost {result.cost:.4f} USD" if result.cost is not None else ", cost not reported"
        if result.state is RequestState.SUCCEEDED:
            log.info("Request %s succeeded: %d output(s)%s", self.request_id, len(result.output_urls), cost)
        else:
            log.info("Request %s ended %s%s", self.request_id, result.state.value, cost)
        metrics.request_ended(result.state.value, result.generation_seconds, result.cost)
        return raise_for_result(result)

    def _log_change(self, status: RequestStatus) -> None:
        if status.state.is_terminal:
            return  # the end is logged once, with its outcome, by finished()
        if status.state is RequestState.UNKNOWN:
            word = str(status.status)[:_WORD_LOG_LIMIT]
            if word not in self._unknown_words and len(self._unknown_words) < 10:
                self._unknown_words.add(word)
                log.warning(
                    "Request %s: RunComfy reported an unknown status %r; treating it as not finished",
                    self.request_id,
                    word,
                )
        elif status.state is RequestState.QUEUED and status.queue_position is not None:
            log.info("Request %s is queued at position %d", self.request_id, status.queue_position)
        else:
            log.info(
                "Request %s: %s (RunComfy status %r)", self.request_id, status.state.value, status.status
            )


def poll_once(hook: DreaminaHook, waiting: Waiting) -> tuple[RequestResult | None, float]:
    """One poll (a sensor's poke): the succeeded result (or None while the request runs), and the
    seconds the policy wants before the next poll.

    Raises the request's typed error when it ended otherwise, or when the policy stops the wait.
    """
    try:
        with deadlines.bound_by(waiting.remaining()):
            status = hook.get_status(waiting.request_id)
            result = hook.get_result(waiting.request_id, include_cost=True) if waiting.saw(status) else None
    except DreaminaError as error:
        return None, waiting.failed_poll(error)
    waiting.polled()
    if result is not None and result.state.is_terminal:
        return waiting.finished(result), 0.0
    return None, waiting.next_delay(status)


def wait(hook: DreaminaHook, request_id: str, policy: WaitPolicy) -> RequestResult:
    """Follow a request until it succeeds; raise its typed error otherwise (see the module doc)."""
    waiting = Waiting(request_id, policy)
    while True:
        try:
            with deadlines.bound_by(waiting.remaining()):
                status = hook.get_status(request_id)
                result = hook.get_result(request_id, include_cost=True) if waiting.saw(status) else None
        except DreaminaError as error:
            delay = waiting.failed_poll(error)
        else:
            waiting.polled()
            if result is not None and result.state.is_terminal:
                return waiting.finished(result)
            delay = waiting.next_delay(status)
        if waiting.past_deadline:
            raise waiting.timed_out(cancel_at_deadline(hook, waiting))
        time.sleep(delay)


async def await_result(hook: DreaminaHook, request_id: str, policy: WaitPolicy) -> RequestResult:
    """Async :func:`wait`."""
    waiting = Waiting(request_id, policy)
    while True:
        try:
            with deadlines.bound_by(waiting.remaining()):
                status = await hook.aget_status(request_id)
                result = (
                    await hook.aget_result(request_id, include_cost=True) if waiting.saw(status) else None
                )
        except DreaminaError as error:
            delay = waiting.failed_poll(error)
        else:
            waiting.polled()
            if result is not None and result.state.is_terminal:
                return waiting.finished(result)
            delay = waiting.next_delay(status)
        if waiting.past_deadline:
            raise waiting.timed_out(await acancel_at_deadline(hook, waiting))
        await asyncio.sleep(delay)


def cancel_at_deadline(hook: DreaminaHook, waiting: Waiting) -> bool | None:
    """At the deadline, cancel a request that has not started (None: no cancel was due). The wait
    is over, so the cancel gets the grace of ``deadlines.bound_by``, no more."""
    if not waiting.cancel_now:
        return None
    with deadlines.bound_by(0.0):
        return try_cancel(hook, waiting.request_id)


async def acancel_at_deadline(hook: DreaminaHook, waiting: Waiting) -> bool | None:
    """Async :func:`cancel_at_deadline`."""
    if not waiting.cancel_now:
        return None
    with deadlines.bound_by(0.0):
        return await atry_cancel(hook, waiting.request_id)


def try_cancel(hook: DreaminaHook, request_id: str) -> bool:
    """Cancel the request if RunComfy still can; a failure to do so is logged, never raised."""
    try:
        return hook.cancel(request_id)
    except DreaminaError as error:
        log.warning("Could not cancel request %s: %s", request_id, error)
        return False


async def atry_cancel(hook: DreaminaHook, request_id: str) -> bool:
    """Async :func:`try_cancel`."""
    try:
        return await hook.acancel(request_id)
    except DreaminaError as error:
        log.warning("Could not cancel request %s: %s", request_id, error)
        return False
