"""The same behaviour on every path that waits for a request (docs/sensors.rst, "Waiting").

Each scenario is scripted at the emulator and run through all five paths a user can choose: the
submit operator waiting on a worker, the submit operator deferring to the triggerer, and the
sensor poking, rescheduling and deferring. Every path must end the same way: the same typed
error (as the task's error or the ``__cause__`` of Airflow's exception), equally retryable, and
the same request cancelled or left alone.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from typing import Any

import pytest
from airflow.exceptions import AirflowRescheduleException, TaskDeferred

from airflow_provider_dreamina.emulator import EmulatorHandle
from airflow_provider_dreamina.exceptions import (
    DreaminaError,
    DreaminaRequestCancelledError,
    DreaminaRequestFailedError,
    DreaminaTimeoutError,
    DreaminaTransientWaitError,
)
from airflow_provider_dreamina.hooks.dreamina import DreaminaHook
from airflow_provider_dreamina.operators.dreamina import DreaminaImageToVideoOperator
from airflow_provider_dreamina.sensors.dreamina import DreaminaRequestSensor
from tests.helpers import FakeStateStore, FakeTI, make_context, sample_input, wait_until_state

PATHS = ("non-deferred wait", "deferrable", "sensor poke", "sensor reschedule", "sensor deferrable")
POLL = 0.1
BUDGET = 3


class RescheduledTI(FakeTI):
    """A task instance that remembers when its sensor first rescheduled, as Airflow's does."""

    def __init__(self) -> None:
        super().__init__()
        self.first_reschedule: datetime | None = None

    def get_first_reschedule_date(self, context: Any) -> datetime | None:
        return self.first_reschedule


def _run_trigger(trigger: Any) -> dict[str, Any]:
    async def collect() -> dict[str, Any]:
        try:
            async for event in trigger.run():
                return dict(event.payload)
            raise AssertionError("the trigger ended without an event")
        finally:
            await DreaminaHook.aclose_shared_clients()

    return asyncio.run(collect())


def _resume(task: Any, deferred: TaskDeferred, context: dict[str, Any]) -> Any:
    assert deferred.method_name == "execute_complete"
    return task.execute_complete(context, _run_trigger(deferred.trigger))


def run_path(path: str, emulator: EmulatorHandle, *, timeout: float = 30) -> Any:
    """Generate (or watch) one request through ``path``: its return value, or what it raised."""
    context = make_context(FakeStateStore())
    if path in ("non-deferred wait", "deferrable"):
        operator = DreaminaImageToVideoOperator(
            task_id="generate",
            prompt="a kite over dunes",
            image_url=emulator.sample_image_url,
            wait_for_completion=True,
            deferrable=path == "deferrable",
            poll_interval=POLL,
            timeout=timeout,
            max_consecutive_errors=BUDGET,
            # The count alone decides here; tolerance by time has tests of its own.
            max_error_seconds=0,
        )
        try:
            return operator.execute(context)
        except TaskDeferred as deferred:
            return _resume(operator, deferred, context)
    request_id = DreaminaHook().submit(sample_input(emulator)).request_id
    kwargs = {
        "task_id": "wait",
        "request_id": request_id,
        "poke_interval": POLL,
        "timeout": timeout,
        "max_consecutive_errors": BUDGET,
        "max_error_seconds": 0,
        # Sensors only watch by default; asked to, they cancel at the deadline like the operator.
        "cancel_on_timeout": True,
    }
    if path == "sensor poke":
        return DreaminaRequestSensor(mode="poke", deferrable=False, **kwargs).execute(context)
    if path == "sensor deferrable":
        sensor = DreaminaRequestSensor(deferrable=True, **kwargs)
        try:
            return sensor.execute(context)
        except TaskDeferred as deferred:
            return _resume(sensor, deferred, context)
    ti = RescheduledTI()
    context["ti"] = ti
    while True:  # Airflow builds the sensor anew for every rescheduled poke
        sensor = DreaminaRequestSensor(mode="reschedule", deferrable=False, **kwargs)
        try:
            return sensor.execute(context)
        except AirflowRescheduleException as reschedule:
            ti.first_reschedule = ti.first_reschedule or datetime.now(timezone.utc)
            time.sleep(max(0.0, (reschedule.reschedule_date - datetime.now(timezone.utc)).total_seconds()))


def outcome(path: str, emulator: EmulatorHandle, **kwargs: Any) -> tuple[Any, DreaminaError | None]:
    """(the return value, None) or (None, the typed error the task ended with)."""
    try:
        return run_path(path, emulator, **kwargs), None
    except DreaminaError as error:
        return None, error
    except Exception as error:  # Airflow's own exception, with the typed error as its cause
        cause = error.__cause__
    assert isinstance(cause, DreaminaError), f"{path}: the task's exception has no typed cause"
    return None, cause


@pytest.fixture
def emulator_no_hook_retries(emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch) -> EmulatorHandle:
    """Transient errors reach the waiting policy at once instead of being retried inside a call."""
    monkeypatch.setenv("AIRFLOW_CONN_DREAMINA_DEFAULT", emulator.connection_json(max_retries=0))
    return emulator


@pytest.mark.parametrize("path", PATHS)
def test_success_after_transient_errors_within_the_budget(
    emulator_no_hook_retries: EmulatorHandle, path: str
) -> None:
    emulator = emulator_no_hook_retries
    emulator.inject_fault("status", "503", count=BUDGET)
    record, error = outcome(path, emulator)
    assert error is None
    assert record["state"] == "succeeded"
    assert emulator.counters()["submissions"] == 1


@pytest.mark.parametrize("path", PATHS)
def test_more_transient_errors_than_the_budget_fail_retryably(
    emulator_no_hook_retries: EmulatorHandle, path: str
) -> None:
    emulator = emulator_no_hook_retries
    emulator.inject_fault("status", "503", count=1000)
    _, error = outcome(path, emulator)
    assert isinstance(error, DreaminaTransientWaitError)
    assert error.retryable


@pytest.mark.parametrize("path", PATHS)
def test_a_failed_generation_fails_for_good_with_its_reason(emulator: EmulatorHandle, path: str) -> None:
    emulator.script_jobs(outcome="failed", error={"type": "safety", "message": "blocked"})
    _, error = outcome(path, emulator)
    assert isinstance(error, DreaminaRequestFailedError)
    assert not error.retryable
    assert "safety: blocked" in str(error)


@pytest.mark.parametrize("path", PATHS)
def test_a_request_cancelled_elsewhere_fails_for_good(emulator: EmulatorHandle, path: str) -> None:
    emulator.script_jobs(queue_seconds=1.5)
    canceller = _cancel_soon(emulator)
    _, error = outcome(path, emulator)
    canceller.join()
    assert isinstance(error, DreaminaRequestCancelledError)
    assert not error.retryable


@pytest.mark.parametrize("path", PATHS)
def test_deadline_while_queued_cancels_the_request(emulator: EmulatorHandle, path: str) -> None:
    emulator.script_jobs(queue_seconds=60)
    _, error = outcome(path, emulator, timeout=1)
    assert isinstance(error, DreaminaTimeoutError)
    assert "queued" in str(error) and "it was cancelled" in str(error)
    assert emulator.counters()["cancellations"] == 1


@pytest.mark.parametrize("path", PATHS)
def test_deadline_while_running_leaves_the_request_alone(emulator: EmulatorHandle, path: str) -> None:
    emulator.script_jobs(queue_seconds=0, run_seconds=60)
    _, error = outcome(path, emulator, timeout=1)
    assert isinstance(error, DreaminaTimeoutError)
    assert "running" in str(error) and "cancel" not in str(error)
    assert emulator.counters()["cancellations"] == 0


@pytest.mark.parametrize("path", PATHS)
def test_rate_limit_waits_for_retry_after(emulator_no_hook_retries: EmulatorHandle, path: str) -> None:
    emulator = emulator_no_hook_retries
    emulator.inject_fault("status", "429", count=1, retry_after=1.5)
    started = time.monotonic()
    record, error = outcome(path, emulator)
    assert error is None and record["state"] == "succeeded"
    assert time.monotonic() - started >= 1.5


def _cancel_soon(emulator: EmulatorHandle) -> Any:
    """Cancel the next request at RunComfy (as a user would in its dashboard) once it is queued."""
    import threading

    def cancel() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            requests = emulator.requests()
            if requests:
                hook = DreaminaHook()
                wait_until_state(hook, requests[-1]["request_id"], _queued())
                hook.cancel(requests[-1]["request_id"])
                return
            time.sleep(0.05)

    thread = threading.Thread(target=cancel)
    thread.start()
    return thread


def _queued() -> Any:
    from airflow_provider_dreamina.models import RequestState

    return RequestState.QUEUED
