"""DreaminaRequestTrigger: waits for a RunComfy request in the triggerer, without blocking its loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_dreamina.defaults import DEFAULT_CONN_ID, DEFAULT_MAX_CONSECUTIVE_ERRORS
from airflow_provider_dreamina.exceptions import DreaminaError, DreaminaTransientWaitError
from airflow_provider_dreamina.hooks.dreamina import DreaminaHook
from airflow_provider_dreamina.waiting import policy as polling
from airflow_provider_dreamina.waiting.outcome import (
    EVENT_CANCELLED,
    EVENT_ERROR,
    EVENT_FAILED,
    EVENT_SUCCESS,
    EVENT_TIMEOUT,
    RequestEvent,
)

__all__ = [
    "EVENT_CANCELLED",
    "EVENT_ERROR",
    "EVENT_FAILED",
    "EVENT_SUCCESS",
    "EVENT_TIMEOUT",
    "TRIGGER_CLASSPATH",
    "DreaminaRequestTrigger",
]

#: Where Airflow finds this class when it revives a deferral stored in its database: a literal,
#: so moving the class cannot silently break deferrals already stored (an alias must stay here).
TRIGGER_CLASSPATH = "airflow_provider_dreamina.triggers.dreamina.DreaminaRequestTrigger"


class DreaminaRequestTrigger(BaseTrigger):
    """Poll a RunComfy request until it finishes, then yield exactly one event.

    The event's payload is a :class:`~airflow_provider_dreamina.waiting.outcome.RequestEvent`: its status
    is ``success``, ``failed``, ``cancelled``, ``timeout`` or ``error``, and it carries the whole
    result or the typed error, so ``execute_complete`` raises what a waiting worker would have.

    :param request_id: the request to wait for.
    :param dreamina_conn_id: the connection to read the token from (never the token itself).
    :param poll_interval: seconds between status polls; slower while queued far back, never faster.
    :param deadline: wall-clock epoch seconds after which the trigger gives up (a still-queued
        request is cancelled first, with ``cancel_on_timeout``); None waits for ever.
    :param cancel_on_kill: cancel the request when the user kills the task (Airflow 3.3+ calls
        ``on_kill`` when a deferred task is marked failed or success, or cleared).
    :param cancel_on_timeout: cancel a still-queued request when the deadline passes.
    :param max_consecutive_errors: transient failed polls in a row to tolerate, however quickly.
    :param max_error_seconds: how long a run of transient failed polls is tolerated; None reads the
        connection's ``max_error_seconds`` extra (else 15 minutes) when the trigger runs.
    :param not_before: wall-clock epoch seconds before which the first poll is not made (a
        ``Retry-After`` the deferring task was told).
    """

    def __init__(
        self,
        request_id: str,
        dreamina_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 10.0,
        deadline: float | None = None,
        cancel_on_kill: bool = True,
        cancel_on_timeout: bool = True,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        max_error_seconds: float | None = None,
        not_before: float | None = None,
    ) -> None:
        super().__init__()
        self.request_id = request_id
        self.dreamina_conn_id = dreamina_conn_id
        self.poll_interval = float(poll_interval)
        self.deadline = deadline
        self.cancel_on_kill = cancel_on_kill
        self.cancel_on_timeout = cancel_on_timeout
        self.max_consecutive_errors = max_consecutive_errors
        self.max_error_seconds = None if max_error_seconds is None else float(max_error_seconds)
        self.not_before = not_before

    @classmethod
    def following(
        cls,
        waiting: polling.Waiting,
        dreamina_conn_id: str,
        *,
        cancel_on_kill: bool,
        not_before: float | None = None,
    ) -> DreaminaRequestTrigger:
        """The trigger that goes on with ``waiting`` in the triggerer, under the same policy."""
        policy = waiting.policy
        return cls(
            request_id=waiting.request_id,
            dreamina_conn_id=dreamina_conn_id,
            poll_interval=policy.poll_interval,
            deadline=policy.deadline,
            cancel_on_kill=cancel_on_kill,
            cancel_on_timeout=policy.cancel_on_timeout,
            max_consecutive_errors=policy.max_consecutive_errors,
            max_error_seconds=policy.max_error_seconds,
            not_before=not_before,
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            TRIGGER_CLASSPATH,
            {
                "request_id": self.request_id,
                "dreamina_conn_id": self.dreamina_conn_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "cancel_on_kill": self.cancel_on_kill,
                "cancel_on_timeout": self.cancel_on_timeout,
                "max_consecutive_errors": self.max_consecutive_errors,
                "max_error_seconds": self.max_error_seconds,
                "not_before": self.not_before,
            },
        )

    async def policy(self) -> polling.WaitPolicy:
        """The waiting policy of this trigger, ``max_error_seconds`` read from the connection if unset."""
        max_error_seconds = self.max_error_seconds
        if max_error_seconds is None:
            max_error_seconds = (await self._hook().aget_settings()).max_error_seconds
        return polling.WaitPolicy(
            poll_interval=self.poll_interval,
            deadline=self.deadline,
            max_consecutive_errors=self.max_consecutive_errors,
            max_error_seconds=max_error_seconds,
            cancel_on_timeout=self.cancel_on_timeout,
        )

    def _hook(self) -> DreaminaHook:
        # Triggers are re-created from their kwargs in the triggerer, so the hook is built lazily.
        if not hasattr(self, "_dreamina_hook"):
            self._dreamina_hook = DreaminaHook(dreamina_conn_id=self.dreamina_conn_id)
        return self._dreamina_hook

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Yield exactly one event; whatever goes wrong becomes an error event, never an exception."""
        try:
            if self.not_before is not None and (pause := self.not_before - time.time()) > 0:
                await asyncio.sleep(pause)
            result = await polling.await_result(self._hook(), self.request_id, await self.policy())
            event = RequestEvent.succeeded(result)
        except DreaminaError as error:
            event = RequestEvent.failed(self.request_id, error)
        except Exception as error:  # a lookup of the connection, or anything unforeseen
            event = RequestEvent.failed(self.request_id, unforeseen(self.request_id, error))
        yield TriggerEvent(event.model_dump(mode="json"))

    async def on_kill(self) -> None:
        """Cancel the request when the user kills the deferred task (called by Airflow 3.3+)."""
        if self.cancel_on_kill:
            self.log.info("Task was killed: cancelling request %s", self.request_id)
            await polling.atry_cancel(self._hook(), self.request_id)


def unforeseen(request_id: str, error: Exception) -> DreaminaTransientWaitError:
    """A failure this trigger did not foresee, as a retryable error (Airflow's own way with a trigger
    that raises: the task is retried, and reattaches)."""
    return DreaminaTransientWaitError(
        f"waiting for request {request_id} stopped on an unexpected {type(error).__name__}; the task "
        "can be retried (it reattaches to the same request)",
        request_id=request_id,
    )
