"""DreaminaRequestTrigger: waits for a RunComfy request in the triggerer, without blocking its loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_dreamina.exceptions import DreaminaError, DreaminaRateLimitError
from airflow_provider_dreamina.hooks.dreamina import (
    DreaminaHook,
    log_state_change,
    next_poll_interval,
)
from airflow_provider_dreamina.models import RequestResult, RequestState

#: Event kinds a trigger yields, one per run.
EVENT_SUCCESS = "success"
EVENT_FAILED = "failed"
EVENT_CANCELLED = "cancelled"
EVENT_TIMEOUT = "timeout"
EVENT_ERROR = "error"

_EVENT_BY_STATE = {
    RequestState.SUCCEEDED: EVENT_SUCCESS,
    RequestState.FAILED: EVENT_FAILED,
    RequestState.CANCELLED: EVENT_CANCELLED,
}


def make_event_payload(
    kind: str,
    request_id: str,
    message: str,
    result: RequestResult | None = None,
    *,
    retryable: bool = False,
) -> dict[str, Any]:
    """The small JSON payload every trigger event carries; ``execute_complete`` needs nothing else."""
    return {
        "status": kind,
        "request_id": request_id,
        "message": message,
        "result": result.summary() if result else None,
        "retryable": retryable,
    }


class DreaminaRequestTrigger(BaseTrigger):
    """Poll a RunComfy request until it finishes, then yield exactly one event.

    The event's payload is ``{"status", "request_id", "message", "result", "retryable"}`` where
    status is ``success``, ``failed``, ``cancelled``, ``timeout`` or ``error``.

    :param request_id: the request to wait for.
    :param dreamina_conn_id: the connection to read the token from (never the token itself).
    :param poll_interval: seconds between status polls; slower while queued far back, never faster.
    :param deadline: wall-clock epoch seconds after which the trigger gives up (a still-queued
        request is cancelled first); None waits for ever.
    :param cancel_on_kill: cancel a queued request when the user kills the task (Airflow 3.3+
        calls ``on_kill`` when a deferred task is marked failed or success, or cleared).
    :param cancel_on_timeout: cancel a still-queued request when the deadline passes.
    :param max_consecutive_errors: transient failures in a row to tolerate before giving up.
    """

    def __init__(
        self,
        request_id: str,
        dreamina_conn_id: str = DreaminaHook.default_conn_name,
        poll_interval: float = 10.0,
        deadline: float | None = None,
        cancel_on_kill: bool = True,
        cancel_on_timeout: bool = True,
        max_consecutive_errors: int = 5,
    ) -> None:
        super().__init__()
        self.request_id = request_id
        self.dreamina_conn_id = dreamina_conn_id
        self.poll_interval = float(poll_interval)
        self.deadline = deadline
        self.cancel_on_kill = cancel_on_kill
        self.cancel_on_timeout = cancel_on_timeout
        self.max_consecutive_errors = max_consecutive_errors

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "request_id": self.request_id,
                "dreamina_conn_id": self.dreamina_conn_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "cancel_on_kill": self.cancel_on_kill,
                "cancel_on_timeout": self.cancel_on_timeout,
                "max_consecutive_errors": self.max_consecutive_errors,
            },
        )

    def _hook(self) -> DreaminaHook:
        # Triggers are re-created from their kwargs in the triggerer, so the hook is built lazily.
        if not hasattr(self, "_dreamina_hook"):
            self._dreamina_hook = DreaminaHook(dreamina_conn_id=self.dreamina_conn_id)
        return self._dreamina_hook

    async def run(self) -> AsyncIterator[TriggerEvent]:
        payload = await self._wait()
        yield TriggerEvent(payload)

    async def _wait(self) -> dict[str, Any]:
        hook = self._hook()
        errors_in_a_row = 0
        seen: tuple[RequestState, int | None] | None = None
        last_state = RequestState.UNKNOWN
        while True:
            delay = self.poll_interval
            try:
                status = await hook.aget_status(self.request_id)
                last_state = status.state
                if (status.state, status.queue_position) != seen:
                    seen = (status.state, status.queue_position)
                    # The end is logged once, with its outcome, by _final_payload.
                    if not status.state.is_terminal:
                        log_state_change(self.request_id, status)
                if status.state.is_terminal:
                    result = await hook.aget_result(self.request_id, include_cost=True)
                    if result.state.is_terminal:
                        return self._final_payload(result)
                delay = next_poll_interval(status, self.poll_interval)
                errors_in_a_row = 0
            except DreaminaError as error:
                errors_in_a_row += 1
                if not error.retryable or errors_in_a_row > self.max_consecutive_errors:
                    give_up = "" if not error.retryable else f" after {errors_in_a_row} failures in a row"
                    self.log.error("Stopped waiting for request %s%s: %s", self.request_id, give_up, error)
                    return make_event_payload(
                        EVENT_ERROR, self.request_id, str(error), retryable=error.retryable
                    )
                if isinstance(error, DreaminaRateLimitError) and error.retry_after:
                    delay = max(delay, error.retry_after)
                self.log.warning(
                    "Polling request %s failed (%s); trying again in %.0f s (%d of %d tolerated)",
                    self.request_id,
                    error,
                    delay,
                    errors_in_a_row,
                    self.max_consecutive_errors,
                )
            if self.deadline is not None:
                remaining = self.deadline - time.time()
                if remaining <= 0:
                    return await self._timed_out(last_state)
                delay = min(delay, remaining)
            await asyncio.sleep(delay)

    def _final_payload(self, result: RequestResult) -> dict[str, Any]:
        kind = _EVENT_BY_STATE[result.state]
        if kind == EVENT_SUCCESS:
            message = f"request {self.request_id} succeeded with {len(result.output_urls)} output(s)"
        elif kind == EVENT_FAILED:
            message = f"request {self.request_id} failed: {result.error_message or 'RunComfy gave no reason'}"
        else:
            message = f"request {self.request_id} was cancelled"
        self.log.info("%s", message)
        return make_event_payload(kind, self.request_id, message, result)

    async def _timed_out(self, last_state: RequestState) -> dict[str, Any]:
        message = f"request {self.request_id} was still {last_state.value} when the deadline passed"
        if self.cancel_on_timeout and last_state in (RequestState.QUEUED, RequestState.UNKNOWN):
            # A queued request is not worth paying for once nobody waits for it any more.
            cancelled = await self._try_cancel()
            message += "; it was cancelled" if cancelled else "; it could not be cancelled"
        self.log.warning("%s", message)
        return make_event_payload(EVENT_TIMEOUT, self.request_id, message, retryable=True)

    async def _try_cancel(self) -> bool:
        try:
            return await self._hook().acancel(self.request_id)
        except DreaminaError as error:
            self.log.warning("Could not cancel request %s: %s", self.request_id, error)
            return False

    async def on_kill(self) -> None:
        """Cancel the request when the user kills the deferred task (called by Airflow 3.3+)."""
        if self.cancel_on_kill:
            self.log.info("Task was killed: cancelling request %s", self.request_id)
            await self._try_cancel()
