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
from airflow_provider_dreamina.hooks.dreamina import DreaminaHook
from airflow_provider_dreamina.models import ImageToVideoInput
from airflow_provider_dreamina.sensors.dreamina import DreaminaRequestSensor
from airflow_provider_dreamina.triggers.dreamina import DreaminaRequestTrigger


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
    assert sensor.poke({}).is_done is False
    result = sensor.execute({})
    assert result["request_id"] == request_id
    assert result["state"] == "succeeded"
    assert result["output_urls"]


def test_failed_request_fails_the_sensor(emulator: EmulatorHandle) -> None:
    emulator.script_jobs(outcome="failed", error="nsfw")
    request_id = submit(emulator)
    with pytest.raises(AirflowFailException, match="nsfw"):
        make_sensor(request_id).execute({})


def test_soft_fail_skips_instead(emulator: EmulatorHandle) -> None:
    emulator.script_jobs(queue_seconds=60)
    request_id = submit(emulator)
    DreaminaHook().cancel(request_id)
    with pytest.raises(AirflowSkipException):
        make_sensor(request_id, soft_fail=True).execute({})


def test_reschedule_mode_gives_the_slot_back(emulator: EmulatorHandle) -> None:
    emulator.script_jobs(queue_seconds=60)
    request_id = submit(emulator)
    sensor = make_sensor(request_id, mode="reschedule", poke_interval=30)
    with pytest.raises(AirflowRescheduleException):
        sensor.execute({"ti": FirstTry()})


class FirstTry:
    """The task instance of a sensor's first reschedule-mode poke."""

    def get_first_reschedule_date(self, context: Any) -> None:
        return None


def test_deferrable_pokes_once_then_defers(emulator: EmulatorHandle) -> None:
    emulator.script_jobs(queue_seconds=60)
    request_id = submit(emulator)
    with pytest.raises(TaskDeferred) as caught:
        make_sensor(request_id, deferrable=True, timeout=120).execute({})
    trigger = caught.value.trigger
    assert isinstance(trigger, DreaminaRequestTrigger)
    assert trigger.request_id == request_id
    assert trigger.cancel_on_kill is False  # the sensor only watches
    assert emulator.counters()["calls_per_request"][request_id]["status"] == 1


def test_deferrable_returns_at_once_when_already_done(emulator: EmulatorHandle) -> None:
    request_id = submit(emulator)
    make_sensor(request_id).execute({})
    result = make_sensor(request_id, deferrable=True).execute({})
    assert result["state"] == "succeeded"


def _event(kind: str) -> dict[str, Any]:
    result = {"request_id": "r", "status": "succeeded", "output_urls": ["https://a.runcomfy.net/v.mp4"]}
    return {"status": kind, "request_id": "r", "message": f"was {kind}", "result": result, "retryable": False}


def test_execute_complete_for_each_event() -> None:
    sensor = make_sensor("r")
    assert sensor.execute_complete({}, _event("success"))["output_urls"] == ["https://a.runcomfy.net/v.mp4"]
    for kind in ("failed", "cancelled", "error"):
        with pytest.raises(AirflowFailException, match=f"was {kind}"):
            sensor.execute_complete({}, {**_event(kind), "result": None})
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute_complete({}, {**_event("timeout"), "result": None})
