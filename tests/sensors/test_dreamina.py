"""DreaminaRequestSensor in poke, reschedule and deferrable modes."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.exceptions import (
    AirflowFailException,
    AirflowRescheduleException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)

from airflow_provider_dreamina.emulator import EmulatorHandle
from airflow_provider_dreamina.exceptions import (
    DreaminaTimeoutError,
)
from airflow_provider_dreamina.hooks.dreamina import DreaminaHook
from airflow_provider_dreamina.models import ImageToVideoInput
from airflow_provider_dreamina.sensors.dreamina import DreaminaRequestSensor
from airflow_provider_dreamina.triggers.dreamina import DreaminaRequestTrigger
from tests.helpers import make_context, request_events


def submit(emulator: EmulatorHandle) -> str:
    request = ImageToVideoInput(prompt="a fox in snow", image_urls=[emulator.sample_image_url])
    return DreaminaHook().submit(request).request_id


def make_sensor(request_id: str, **kwargs: Any) -> DreaminaRequestSensor:
    kwargs.setdefault("poke_interval", 0.1)
    kwargs.setdefault("timeout", 30)
    kwargs.setdefault("deferrable", False)
    return DreaminaRequestSensor(task_id="wait", request_id=request_id, **kwargs)


def test_poke_until_done_and_return_the_result(emulator: EmulatorHandle) -> None:
    request_id = submit(emulator)
    sensor = make_sensor(request_id)
    assert sensor.poke(make_context()).is_done is False
    result = sensor.execute(make_context())
    assert result["request_id"] == request_id
    assert result["state"] == "succeeded"
    assert result["output_urls"]


def test_failed_request_fails_the_sensor(emulator: EmulatorHandle) -> None:
    emulator.script_jobs(outcome="failed", error="nsfw")
    request_id = submit(emulator)
    with pytest.raises(AirflowFailException, match="nsfw"):
        make_sensor(request_id).execute(make_context())


def test_soft_fail_skips_instead(emulator: EmulatorHandle) -> None:
    emulator.script_jobs(queue_seconds=60)
    request_id = submit(emulator)
    DreaminaHook().cancel(request_id)
    with pytest.raises(AirflowSkipException):
        make_sensor(request_id, soft_fail=True).execute(make_context())


def test_reschedule_mode_gives_the_slot_back(emulator: EmulatorHandle) -> None:
    emulator.script_jobs(queue_seconds=60)
    request_id = submit(emulator)
    sensor = make_sensor(request_id, mode="reschedule", poke_interval=30)
    with pytest.raises(AirflowRescheduleException):
        sensor.execute(make_context())


def test_deferrable_pokes_once_then_defers(emulator: EmulatorHandle) -> None:
    emulator.script_jobs(queue_seconds=60)
    request_id = submit(emulator)
    with pytest.raises(TaskDeferred) as caught:
        make_sensor(request_id, deferrable=True, timeout=120).execute(make_context())
    trigger = caught.value.trigger
    assert isinstance(trigger, DreaminaRequestTrigger)
    assert trigger.request_id == request_id
    assert trigger.cancel_on_kill is False  # the sensor only watches
    assert emulator.counters()["calls_per_request"][request_id]["status"] == 1


def test_deferrable_returns_at_once_when_already_done(emulator: EmulatorHandle) -> None:
    request_id = submit(emulator)
    make_sensor(request_id).execute(make_context())
    result = make_sensor(request_id, deferrable=True).execute(make_context())
    assert result["state"] == "succeeded"


def test_execute_complete_for_each_event() -> None:
    sensor = make_sensor("r")
    events = request_events()
    record = sensor.execute_complete(make_context(), events["success"])
    assert record["output_urls"] == ["https://a.runcomfy.net/v.mp4"]
    for kind in ("failed", "cancelled", "error"):
        with pytest.raises(AirflowFailException, match=f"was {kind}"):
            sensor.execute_complete(make_context(), events[kind])
    with pytest.raises(AirflowSensorTimeout) as caught:
        sensor.execute_complete(make_context(), events["timeout"])
    assert isinstance(caught.value.__cause__, DreaminaTimeoutError)
