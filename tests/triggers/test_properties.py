"""Properties of every wait, against answers nobody on the team wrote (Hypothesis).

Whatever the status, result and cancel endpoints answer, in any order and shape:

* the trigger's ``run()`` never raises: it yields exactly one event, small valid JSON (no NaN),
  that ``execute_complete`` of the operator and the sensor turn into a record or a typed error;
* ``hook.wait`` and ``hook.await_result`` end in a succeeded result or a typed error;
* every pause the policy asks for is finite and bounded (a ``Retry-After`` of ``1e300`` or a
  queue position of ``1e999`` does not stall a wait or overflow a sleep);
* the API token planted anywhere in the answers is in no event, result, error or log record.

Pauses are recorded instead of slept (the policy's ``time`` and ``asyncio`` are stood in for),
so each example runs in milliseconds; a wait ends because a script that runs out answers 401.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from airflow.exceptions import AirflowSensorTimeout
from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_dreamina.compat import AirflowFailException
from airflow_provider_dreamina.exceptions import DreaminaError
from airflow_provider_dreamina.hooks.dreamina import DreaminaHook
from airflow_provider_dreamina.models import EVENT_MAX_CHARS, GenerationRecord, RequestResult, RequestState
from airflow_provider_dreamina.operators.dreamina import DreaminaImageToVideoOperator
from airflow_provider_dreamina.runcomfy.retries import RETRY_AFTER_MAX_SECONDS
from airflow_provider_dreamina.runcomfy.settings import DreaminaSettings
from airflow_provider_dreamina.sensors.dreamina import DreaminaRequestSensor
from airflow_provider_dreamina.triggers import dreamina as trigger_module
from airflow_provider_dreamina.triggers.dreamina import DreaminaRequestTrigger
from airflow_provider_dreamina.waiting import policy as policy_module
from airflow_provider_dreamina.waiting.outcome import RequestEvent
from airflow_provider_dreamina.waiting.policy import WaitPolicy
from tests.helpers import FakeTI, make_context
from tests.leaks import assert_no_leak
from tests.strategies import REQUEST_ID, TIMEOUT_SECONDS, TOKEN, Script, outcomes

pytestmark = pytest.mark.timeout(TIMEOUT_SECONDS)

LOGGERS = ("", "airflow_provider_dreamina", "httpx")
STATUS_FIELDS = ("request_id", "status", "queue_position")
RESULT_FIELDS = ("request_id", "status", "output", "error", "cost", "created_at", "finished_at")
CANCEL_FIELDS = ("request_id", "status", "outcome")


@st.composite
def scripts(draw: st.DrawFn) -> Script:
    """Answers for a whole wait: a few polls, results and cancels, then 401 for ever."""
    return Script(
        {
            "status": draw(st.lists(outcomes(STATUS_FIELDS), min_size=1, max_size=4)),
            "result": draw(st.lists(outcomes(RESULT_FIELDS), max_size=3)),
            "cancel": draw(st.lists(outcomes(CANCEL_FIELDS), max_size=2)),
        }
    )


POLICIES = st.builds(
    dict,
    poll_interval=st.sampled_from([0.01, 1.0, 10.0]),
    past_deadline=st.booleans(),
    max_consecutive_errors=st.integers(0, 3),
    max_error_seconds=st.sampled_from([0.0, 900.0]),
    cancel_on_timeout=st.booleans(),
)


class _Module:
    """A module with some of its names stood in for."""

    def __init__(self, module: Any, **names: Any) -> None:
        self._module = module
        vars(self).update(names)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


@contextmanager
def recorded_pauses() -> Iterator[list[float]]:
    """Every pause the waiting policy and the trigger ask for, recorded instead of slept."""
    asked: list[float] = []
    real_sleep = asyncio.sleep

    def sleep(seconds: float) -> None:
        asked.append(seconds)

    async def asleep(seconds: float, result: Any = None) -> Any:
        asked.append(seconds)
        await real_sleep(0)
        return result

    patched = [
        (policy_module, "time", _Module(time, sleep=sleep)),
        (policy_module, "asyncio", _Module(asyncio, sleep=asleep)),
        (trigger_module, "asyncio", _Module(asyncio, sleep=asleep)),
    ]
    originals = [(module, name, getattr(module, name)) for module, name, _ in patched]
    for module, name, stand_in in patched:
        setattr(module, name, stand_in)
    try:
        yield asked
    finally:
        for module, name, original in originals:
            setattr(module, name, original)


def a_hook(script: Script) -> DreaminaHook:
    sync, asynchronous = script.transports()
    hook = DreaminaHook(
        transport=sync, async_transport=asynchronous, retry_backoff=0.0001, max_retry_wait=0.001
    )
    hook._settings = DreaminaSettings(
        conn_id="dreamina_default", base_url="https://model-api.runcomfy.test", token=TOKEN, max_retries=1
    )
    return hook


def wait_policy(options: dict[str, Any]) -> WaitPolicy:
    options = dict(options)
    deadline = time.time() - 1 if options.pop("past_deadline") else None
    return WaitPolicy(deadline=deadline, **options)


def check_pauses(asked: list[float], poll_interval: float) -> None:
    for pause in asked:
        assert math.isfinite(pause) and 0 <= pause <= max(6 * poll_interval, RETRY_AFTER_MAX_SECONDS), asked


def check_result(result: RequestResult) -> None:
    assert result.state is RequestState.SUCCEEDED
    json.dumps(GenerationRecord.of(result).to_xcom(), allow_nan=False)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name or None)
    return caplog


def finish(task: Any, event: dict[str, Any]) -> Any:
    """What ``execute_complete`` makes of the event: a record, or the exception that fails the task."""
    context = make_context(ti=FakeTI())
    try:
        return task.execute_complete(context, event)
    except (DreaminaError, AirflowFailException, AirflowSensorTimeout) as error:
        return error


@given(script=scripts(), options=POLICIES, own_error_seconds=st.booleans())
def test_the_trigger_yields_one_small_event_whatever_the_answers(
    logs: pytest.LogCaptureFixture, script: Script, options: dict[str, Any], own_error_seconds: bool
) -> None:
    logs.clear()
    policy = wait_policy(options)
    trigger = DreaminaRequestTrigger(
        REQUEST_ID,
        poll_interval=policy.poll_interval,
        deadline=policy.deadline,
        cancel_on_timeout=policy.cancel_on_timeout,
        max_consecutive_errors=policy.max_consecutive_errors,
        max_error_seconds=policy.max_error_seconds if own_error_seconds else None,
    )
    trigger._dreamina_hook = a_hook(script)

    async def collect() -> list[dict[str, Any]]:
        try:
            return [event.payload async for event in trigger.run()]
        finally:
            await DreaminaHook.aclose_shared_clients()

    with recorded_pauses() as asked:
        events = asyncio.run(collect())  # run() raising fails the example here
    assert len(events) == 1
    (event,) = events
    text = json.dumps(event, allow_nan=False)
    assert len(text) < EVENT_MAX_CHARS + 16 * 1024
    revived = RequestEvent.model_validate(event)
    try:
        check_result(revived.finished_result())
        assert event["status"] == "success"
    except DreaminaError as error:
        assert event["status"] != "success"
        str(error), repr(error)
    check_pauses(asked, policy.poll_interval)
    operator = DreaminaImageToVideoOperator(
        task_id="generate", prompt="a pier", image_url="https://images.example/in.png"
    )
    sensor = DreaminaRequestSensor(task_id="wait", request_id=REQUEST_ID)
    finished = [finish(operator, event), finish(sensor, event)]
    for outcome in finished:
        if isinstance(outcome, dict):
            json.dumps(outcome, allow_nan=False)
    assert_no_leak(TOKEN, event, text, revived, finished, records=logs.records)


@pytest.mark.parametrize("mode", ["sync", "async"])
@given(script=scripts(), options=POLICIES)
def test_a_wait_ends_in_a_succeeded_result_or_a_typed_error(
    logs: pytest.LogCaptureFixture, mode: str, script: Script, options: dict[str, Any]
) -> None:
    logs.clear()
    hook, policy = a_hook(script), wait_policy(options)

    async def await_result() -> RequestResult:
        try:
            return await hook.await_result(REQUEST_ID, policy=policy)
        finally:
            await DreaminaHook.aclose_shared_clients()

    with recorded_pauses() as asked:
        try:
            answer: Any = (
                hook.wait(REQUEST_ID, policy=policy) if mode == "sync" else asyncio.run(await_result())
            )
        except Exception as error:
            answer = error
    if isinstance(answer, BaseException):
        assert isinstance(answer, DreaminaError), f"an untyped {type(answer).__name__} escaped: {answer!r}"
    else:
        check_result(answer)
    check_pauses(asked, policy.poll_interval)
    assert_no_leak(TOKEN, answer, records=logs.records)
