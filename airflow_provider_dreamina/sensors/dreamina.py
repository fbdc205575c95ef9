"""DreaminaRequestSensor: wait for a RunComfy request to finish, poking or deferred."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_dreamina import links
from airflow_provider_dreamina.compat import (
    AirflowRescheduleException,
    AirflowSensorTimeout,
    default_deferrable,
)
from airflow_provider_dreamina.defaults import (
    DEFAULT_CONN_ID,
    DEFAULT_MAX_CONSECUTIVE_ERRORS,
    DEFAULT_POLL_INTERVAL,
    DEFER_TIMEOUT_MARGIN_SECONDS,
    XCOM_REQUEST_ID,
)
from airflow_provider_dreamina.exceptions import DreaminaError, DreaminaTimeoutError
from airflow_provider_dreamina.links import DreaminaGalleryLink, DreaminaOutputLink

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_dreamina.hooks.dreamina import DreaminaHook
    from airflow_provider_dreamina.models import RequestResult
    from airflow_provider_dreamina.waiting.policy import Waiting

#: Key under which a rescheduled sensor keeps its count of failed polls (Airflow 3.3+).
_WAIT_STATE_KEY = "dreamina_sensor_errors"


class DreaminaRequestSensor(BaseSensorOperator):
    """Wait until a Dreamina request finishes; its XCom is the generation record as JSON.

    A failed or cancelled request fails the task (or skips it with ``soft_fail``). It follows the
    same waiting policy as every other path (``airflow_provider_dreamina.waiting.policy``): transient
    errors are retried inside each poll and tolerated while they last less than
    ``max_error_seconds`` or number at most ``max_consecutive_errors`` in a row. In deferrable mode
    the sensor pokes once, then waits in the triggerer without holding a worker slot.

    The sensor only watches a request that another task submitted, so by default it cancels
    nothing; ``cancel_on_kill`` and ``cancel_on_timeout`` make it cancel a still-queued request as
    the submit operator does.

    :param request_id: typically ``"{{ ti.xcom_pull(task_ids='submit', key='request_id') }}"``.
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    :param cancel_on_kill: cancel a still-queued request when the task is killed (Airflow 3.3+
        calls the trigger's ``on_kill`` when a deferred task is marked failed or success).
    :param cancel_on_timeout: cancel a still-queued request when the sensor times out.
    :param max_consecutive_errors: transient failed polls in a row to tolerate, however quickly
        they come.
    :param max_error_seconds: how long a run of transient failed polls is tolerated (default: the
        connection's ``max_error_seconds`` extra, else 15 minutes).
    """

    template_fields: Sequence[str] = ("request_id", "dreamina_conn_id")
    operator_extra_links = (DreaminaGalleryLink(), DreaminaOutputLink())

    def __init__(
        self,
        *,
        request_id: str,
        dreamina_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool | None = None,
        cancel_on_kill: bool = False,
        cancel_on_timeout: bool = False,
        poke_interval: float = DEFAULT_POLL_INTERVAL,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        max_error_seconds: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.request_id = request_id
        self.dreamina_conn_id = dreamina_conn_id
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.cancel_on_kill = cancel_on_kill
        self.cancel_on_timeout = cancel_on_timeout
        self.max_consecutive_errors = max_consecutive_errors
        self.max_error_seconds = max_error_seconds
        self._waiting: Waiting | None = None
        self._next_poll_delay = 0.0

    @cached_property
    def hook(self) -> DreaminaHook:
        from airflow_provider_dreamina.hooks.dreamina import DreaminaHook

        return DreaminaHook(dreamina_conn_id=self.dreamina_conn_id)

    def _waiting_for(self, context: Context) -> Waiting:
        """This wait's state: the checked request id and what the policy has seen of it."""
        if self._waiting is None:
            from airflow_provider_dreamina.models import check_request_id
            from airflow_provider_dreamina.waiting.outcome import fail_or_raise
            from airflow_provider_dreamina.waiting.policy import Waiting, WaitPolicy

            try:
                request_id = check_request_id(self.request_id)
            except DreaminaError as error:
                fail_or_raise(error)
            policy = WaitPolicy(
                poll_interval=self.poke_interval,
                # The sensor's timeout bounds the calls of each poke, as a wait's timeout does.
                deadline=time.time() + self.timeout,
                max_consecutive_errors=self.max_consecutive_errors,
                max_error_seconds=self.hook.max_error_seconds(self.max_error_seconds),
                cancel_on_timeout=self.cancel_on_timeout,
            )
            self._waiting = Waiting(request_id, policy)
            context["ti"].xcom_push(key=XCOM_REQUEST_ID, value=request_id)
            links.note(self, request_id=request_id)
            store = context.get("task_state_store") if self.reschedule else None
            if store is not None:
                self._waiting.resume_errors(store.get(_WAIT_STATE_KEY, None))
        return self._waiting

    def poke(self, context: Context) -> PokeReturnValue:
        from airflow_provider_dreamina.waiting.outcome import fail_or_raise
        from airflow_provider_dreamina.waiting.policy import poll_once

        waiting = self._waiting_for(context)
        try:
            result, delay = poll_once(self.hook, waiting)
        except DreaminaError as error:
            fail_or_raise(error)
        finally:
            store = context.get("task_state_store") if self.reschedule else None
            if store is not None:
                store.set(_WAIT_STATE_KEY, waiting.error_run())
        if result is not None:
            return PokeReturnValue(is_done=True, xcom_value=self._succeeded(result, context))
        self._next_poll_delay = delay
        if not self.deferrable:
            self._wait_longer(delay)
        return PokeReturnValue(is_done=False)

    def _wait_longer(self, delay: float) -> None:
        """Honour a policy delay longer than ``poke_interval`` (``Retry-After``, far back in a queue)."""
        extra = delay - self.poke_interval
        if extra <= 0:
            return
        if self.reschedule:
            raise AirflowRescheduleException(  # type: ignore[no-untyped-call]
                datetime.now(timezone.utc) + timedelta(seconds=delay)
            )
        time.sleep(extra)

    def _succeeded(self, result: RequestResult, context: Context) -> dict[str, Any]:
        from airflow_provider_dreamina.models import GenerationRecord

        if result.output_urls:
            links.note(self, output_url=result.output_urls[0])
        return GenerationRecord.of(result).to_xcom()

    def execute(self, context: Context) -> Any:
        links.forget(self)
        if not self.deferrable:
            return self._execute_polling(context)
        # One poke first: a request that has already finished needs no triggerer round trip.
        poked = self.poke(context)
        if poked.is_done:
            return poked.xcom_value
        from airflow_provider_dreamina.triggers.dreamina import DreaminaRequestTrigger

        self.defer(
            trigger=DreaminaRequestTrigger.following(
                self._waiting_for(context),
                self.dreamina_conn_id,
                cancel_on_kill=self.cancel_on_kill,
                not_before=time.time() + self._next_poll_delay,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + DEFER_TIMEOUT_MARGIN_SECONDS),
        )

    def _execute_polling(self, context: Context) -> Any:
        """Airflow's poke loop; at its timeout, a queued request is cancelled as on every path."""
        from airflow_provider_dreamina.waiting.policy import cancel_at_deadline

        try:
            return super().execute(context)
        except AirflowSensorTimeout as timeout:
            waiting = self._waiting
            if waiting is None:
                raise
            raise timeout from waiting.timed_out(cancel_at_deadline(self.hook, waiting))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Finish after the trigger fired: the same outcome as a poke that saw the end."""
        from airflow_provider_dreamina.waiting.outcome import RequestEvent, fail_or_raise

        try:
            result = RequestEvent.model_validate(event).finished_result()
        except DreaminaTimeoutError as error:
            raise AirflowSensorTimeout(str(error)) from error
        except DreaminaError as error:
            fail_or_raise(error)
        return self._succeeded(result, context)
