"""DreaminaRequestTrigger against the emulator: the async wait the triggerer runs."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest

from airflow_provider_dreamina.emulator import EmulatorHandle
from airflow_provider_dreamina.exceptions import DreaminaNotFoundError
from airflow_provider_dreamina.hooks.dreamina import DreaminaHook
from airflow_provider_dreamina.models import ImageToVideoInput
from airflow_provider_dreamina.triggers.dreamina import DreaminaRequestTrigger
from airflow_provider_dreamina.waiting.outcome import RequestEvent


def submit(emulator: EmulatorHandle) -> str:
    request = ImageToVideoInput(prompt="waves on a pier", image_urls=[emulator.sample_image_url])
    return DreaminaHook().submit(request).request_id


async def collect(trigger: DreaminaRequestTrigger) -> list[dict[str, Any]]:
    try:
        return [event.payload async for event in trigger.run()]
    finally:
        await DreaminaHook.aclose_shared_clients()


def run_trigger(trigger: DreaminaRequestTrigger) -> list[dict[str, Any]]:
    return asyncio.run(collect(trigger))


@pytest.fixture
def no_retries(emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch) -> EmulatorHandle:
    monkeypatch.setenv(
        "AIRFLOW_CONN_DREAMINA_DEFAULT", emulator.connection_json(max_retries=0, max_error_seconds=0)
    )
    return emulator


def test_serialize_round_trips_without_secrets() -> None:
    trigger = DreaminaRequestTrigger(
        "req-1", "my_conn", poll_interval=7, deadline=123.5, cancel_on_kill=False
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_dreamina.triggers.dreamina.DreaminaRequestTrigger"
    json.dumps(kwargs)  # trigger rows hold JSON
    again = DreaminaRequestTrigger(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    assert set(kwargs) >= {"request_id", "dreamina_conn_id", "poll_interval", "deadline", "cancel_on_kill"}


def test_success_yields_exactly_one_small_event(
    emulator: EmulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    request_id = submit(emulator)
    caplog.set_level(logging.INFO)
    events = run_trigger(DreaminaRequestTrigger(request_id, poll_interval=0.1))
    assert len(events) == 1
    (event,) = events
    assert event["status"] == "success"
    assert event["request_id"] == request_id
    assert RequestEvent.model_validate(event).finished_result().output_urls
    assert len(json.dumps(event)) < 2000
    assert "queued at position" in caplog.text
    assert ": running" in caplog.text
    assert emulator.token not in json.dumps(event) + caplog.text


@pytest.mark.parametrize(("outcome", "kind"), [("failed", "failed")])
def test_failed_job_yields_failed_with_reason(emulator: EmulatorHandle, outcome: str, kind: str) -> None:
    emulator.script_jobs(outcome=outcome, error={"type": "safety", "message": "blocked"})
    request_id = submit(emulator)
    (event,) = run_trigger(DreaminaRequestTrigger(request_id, poll_interval=0.1))
    assert event["status"] == kind
    assert "safety: blocked" in event["message"]


def test_cancelled_elsewhere_yields_cancelled(emulator: EmulatorHandle) -> None:
    emulator.script_jobs(queue_seconds=60)
    request_id = submit(emulator)
    assert DreaminaHook().cancel(request_id)
    (event,) = run_trigger(DreaminaRequestTrigger(request_id, poll_interval=0.1))
    assert event["status"] == "cancelled"


def test_transient_faults_are_survived(no_retries: EmulatorHandle) -> None:
    request_id = submit(no_retries)
    no_retries.inject_fault("status", "500", count=3)
    (event,) = run_trigger(DreaminaRequestTrigger(request_id, poll_interval=0.05, max_consecutive_errors=5))
    assert event["status"] == "success"


def test_too_many_faults_in_a_row_yield_a_retryable_error(no_retries: EmulatorHandle) -> None:
    request_id = submit(no_retries)
    no_retries.inject_fault("status", "reset", count=100)
    (event,) = run_trigger(
        DreaminaRequestTrigger(request_id, poll_interval=0.05, max_consecutive_errors=2, max_error_seconds=0)
    )
    assert event["status"] == "error"
    assert RequestEvent.model_validate(event).to_error().retryable is True
    assert no_retries.counters()["calls_per_request"][request_id]["status"] == 3


def test_permanent_error_stops_at_once(emulator: EmulatorHandle) -> None:
    (event,) = run_trigger(DreaminaRequestTrigger("no-such-request", poll_interval=0.05))
    assert event["status"] == "error"
    error = RequestEvent.model_validate(event).to_error()
    assert isinstance(error, DreaminaNotFoundError)
    assert error.retryable is False
    assert "unknown" in event["message"]


def test_rate_limit_retry_after_slows_polling(no_retries: EmulatorHandle) -> None:
    request_id = submit(no_retries)
    no_retries.inject_fault("status", "429", count=1, retry_after=1)
    started = time.monotonic()
    (event,) = run_trigger(DreaminaRequestTrigger(request_id, poll_interval=0.05))
    assert event["status"] == "success"
    assert time.monotonic() - started >= 1


def test_deadline_cancels_a_queued_request(emulator: EmulatorHandle) -> None:
    emulator.script_jobs(queue_seconds=60)
    request_id = submit(emulator)
    (event,) = run_trigger(DreaminaRequestTrigger(request_id, poll_interval=0.1, deadline=time.time() + 0.5))
    assert event["status"] == "timeout"
    assert RequestEvent.model_validate(event).to_error().retryable is True
    assert "cancelled" in event["message"]
    assert emulator.counters()["cancellations"] == 1


def test_deadline_without_cancel_on_timeout_leaves_the_request(emulator: EmulatorHandle) -> None:
    emulator.script_jobs(queue_seconds=60)
    request_id = submit(emulator)
    trigger = DreaminaRequestTrigger(
        request_id, poll_interval=0.1, deadline=time.time() + 0.3, cancel_on_timeout=False
    )
    (event,) = run_trigger(trigger)
    assert event["status"] == "timeout"
    assert emulator.counters()["cancellations"] == 0


def test_polling_is_slower_far_back_in_the_queue(emulator: EmulatorHandle) -> None:
    emulator.configure(queue_seconds=60)
    first = submit(emulator)
    for _ in range(10):
        last = submit(emulator)

    async def watch(request_id: str) -> None:
        trigger = DreaminaRequestTrigger(request_id, poll_interval=0.1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(collect(trigger), timeout=1.5)

    async def both() -> None:
        await asyncio.gather(watch(first), watch(last))

    asyncio.run(both())
    calls = emulator.counters()["calls_per_request"]
    assert calls[last]["status"] * 3 <= calls[first]["status"]


def test_on_kill_cancels_a_queued_request(emulator: EmulatorHandle) -> None:
    emulator.script_jobs(queue_seconds=60)
    request_id = submit(emulator)

    async def kill() -> None:
        try:
            await DreaminaRequestTrigger(request_id).on_kill()
            await DreaminaRequestTrigger(request_id, cancel_on_kill=False).on_kill()
        finally:
            await DreaminaHook.aclose_shared_clients()

    asyncio.run(kill())
    assert emulator.counters()["cancellations"] == 1


def test_run_never_blocks_the_loop(emulator: EmulatorHandle) -> None:
    """A ticker on the same loop keeps ticking while the trigger waits (the triggerer warns >0.2 s)."""
    request_id = submit(emulator)
    gaps: list[float] = []

    async def main() -> None:
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        await collect(DreaminaRequestTrigger(request_id, poll_interval=0.05))
        done.set()
        await tick

    asyncio.run(main())
    assert max(gaps) < 0.2
