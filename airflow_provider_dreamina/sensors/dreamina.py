"""DreaminaRequestSensor: wait for a RunComfy request to finish, poking or deferred."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_dreamina._compat import AirflowFailException, AirflowSensorTimeout, default_deferrable
from airflow_provider_dreamina.exceptions import DreaminaError, DreaminaRequestError
from airflow_provider_dreamina.hooks.dreamina import DreaminaHook, log_state_change
from airflow_provider_dreamina.models import RequestResult, RequestState
from airflow_provider_dreamina.operators.dreamina import fail_or_raise
from airflow_provider_dreamina.triggers.dreamina import (
    EVENT_CANCELLED,
    EVENT_FAILED,
    EVENT_SUCCESS,
    EVENT_TIMEOUT,
    DreaminaRequestTrigger,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


class DreaminaRequestSensor(BaseSensorOperator):
    """Wait until a Dreamina request finishes; its XCom is the result as a small JSON dict.

    A failed or cancelled request fails the task (or skips it with ``soft_fail``). In deferrable
    mode the sensor pokes once, then waits in the triggerer without holding a worker slot.

    :param request_id: typically ``"{{ ti.xcom_pull(task_ids='submit', key='request_id') }}"``.
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    :param cancel_on_kill: in deferrable mode, cancel a still-queued request when the task is
        killed (Airflow 3.3+) or times out. Off by default: the sensor only watches a request
        that another task submitted.
    """

    template_fields: Sequence[str] = ("request_id", "dreamina_conn_id")

    def __init__(
        self,
        *,
        request_id: str,
        dreamina_conn_id: str = DreaminaHook.default_conn_name,
        deferrable: bool | None = None,
        cancel_on_kill: bool = False,
        poke_interval: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.request_id = request_id
        self.dreamina_conn_id = dreamina_conn_id
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.cancel_on_kill = cancel_on_kill
        self._last_seen: tuple[RequestState, int | None] | None = None

    @cached_property
    def hook(self) -> DreaminaHook:
        return DreaminaHook(dreamina_conn_id=self.dreamina_conn_id)

    def poke(self, context: Context) -> PokeReturnValue:
        try:
            status = self.hook.get_status(self.request_id)
            if (status.state, status.queue_position) != self._last_seen:
                self._last_seen = (status.state, status.queue_position)
                log_state_change(self.request_id, status)
            if not status.state.is_terminal:
                return PokeReturnValue(is_done=False)
            result = self.hook.get_result(self.request_id, include_cost=True)
        except DreaminaError as error:
            fail_or_raise(error)
        if not result.state.is_terminal:
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=self._finished(result))

    def _finished(self, result: RequestResult) -> dict[str, Any]:
        if result.state is RequestState.SUCCEEDED:
            self.log.info("Request %s succeeded: %d output(s)", result.request_id, len(result.output_urls))
            return result.summary()
        reason = f": {result.error_message}" if result.error_message else ""
        raise AirflowFailException(f"request {result.request_id} {result.state.value}{reason}")

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        # One poke first: a request that has already finished needs no triggerer round trip.
        poked = self.poke(context)
        if poked.is_done:
            return poked.xcom_value
        self.defer(
            trigger=DreaminaRequestTrigger(
                request_id=self.request_id,
                dreamina_conn_id=self.dreamina_conn_id,
                poll_interval=self.poke_interval,
                deadline=time.time() + self.timeout,
                cancel_on_kill=self.cancel_on_kill,
                # The sensor only watches: the request belongs to whoever submitted it.
                cancel_on_timeout=self.cancel_on_kill,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout) + timedelta(minutes=2),
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Finish after the trigger fired; the event carries everything needed."""
        summary = event.get("result")
        if event.get("status") == EVENT_SUCCESS and summary:
            return self._finished(RequestResult.from_summary(summary))
        message = str(event.get("message") or f"request {self.request_id} ended with {event.get('status')!r}")
        if event.get("status") == EVENT_TIMEOUT:
            raise AirflowSensorTimeout(message)
        if event.get("status") in (EVENT_FAILED, EVENT_CANCELLED):
            raise AirflowFailException(message)
        error = DreaminaRequestError(message, request_id=str(event.get("request_id")))
        error.retryable = bool(event.get("retryable"))
        fail_or_raise(error)
