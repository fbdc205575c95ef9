"""The waiting policy, driven through DreaminaHook.wait against the emulator."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from airflow_provider_dreamina.emulator import EmulatorHandle
from airflow_provider_dreamina.exceptions import (
    DreaminaRequestCancelledError,
    DreaminaRequestFailedError,
    DreaminaTimeoutError,
    DreaminaTransientWaitError,
)
from airflow_provider_dreamina.models import (
    RequestState,
    RequestStatus,
)
from airflow_provider_dreamina.waiting.policy import Waiting, WaitPolicy
from tests.helpers import (
    Api,
    fast_hook,
    sample_input,
    wait_until_state,
)


def test_wait_returns_the_result_and_logs_each_change(
    emulator: EmulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    hook = fast_hook()
    submitted = hook.submit(sample_input(emulator))
    with caplog.at_level(logging.INFO, logger="airflow_provider_dreamina"):
        result = hook.wait(submitted.request_id, poll_interval=0.1, timeout=20)
    assert result.state is RequestState.SUCCEEDED
    assert result.output_urls
    assert "queued at position" in caplog.text
    assert ": running" in caplog.text
    # One line per change, not per poll.
    assert caplog.text.count(": running") == 1


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("GPU ran out of memory", "GPU ran out of memory"),
        ({"type": "oom", "message": "no VRAM"}, "oom: no VRAM"),
    ],
)
def test_wait_raises_for_a_failed_job_with_its_reason(
    emulator: EmulatorHandle, error: Any, expected: str
) -> None:
    emulator.script_jobs(outcome="failed", error=error)
    hook = fast_hook()
    submitted = hook.submit(sample_input(emulator))
    with pytest.raises(DreaminaRequestFailedError, match=expected) as caught:
        hook.wait(submitted.request_id, poll_interval=0.1, timeout=20)
    assert caught.value.result is not None
    assert caught.value.result.state is RequestState.FAILED


def test_cancel_queued_request_and_refusal_for_a_running_one(emulator: EmulatorHandle, api: Api) -> None:
    hook = fast_hook()
    emulator.script_jobs(queue_seconds=60)
    queued = hook.submit(sample_input(emulator))
    assert api(hook, "cancel", queued.request_id) is True
    with pytest.raises(DreaminaRequestCancelledError):
        hook.wait(queued.request_id, poll_interval=0.1, timeout=5)

    emulator.script_jobs(queue_seconds=0, run_seconds=60)
    running = hook.submit(sample_input(emulator))
    wait_until_state(hook, running.request_id, RequestState.RUNNING)
    assert api(hook, "cancel", running.request_id) is False


def test_wait_times_out_with_the_request_id(emulator: EmulatorHandle) -> None:
    emulator.script_jobs(queue_seconds=60)
    hook = fast_hook()
    submitted = hook.submit(sample_input(emulator))
    started = time.monotonic()
    with pytest.raises(DreaminaTimeoutError, match=submitted.request_id):
        hook.wait(submitted.request_id, poll_interval=0.1, timeout=0.5)
    assert time.monotonic() - started < 5


def test_poll_interval_slows_down_far_back_in_the_queue() -> None:
    def status(position: int | None, word: str = "in_queue") -> RequestStatus:
        return RequestStatus(request_id="r", status=word, queue_position=position)

    waiting = Waiting("r", WaitPolicy(poll_interval=5))
    assert waiting.next_delay(status(1)) == 5
    assert waiting.next_delay(status(None, "in_progress")) == 5
    assert 5 < waiting.next_delay(status(5)) <= 30
    assert waiting.next_delay(status(500)) == 30
    assert waiting.next_delay(status(1), retry_after=12) == 12


def test_a_result_that_keeps_failing_spends_the_max_consecutive_errors(
    emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finished request whose result cannot be read must not be polled for ever (no deadline)."""
    monkeypatch.setenv("AIRFLOW_CONN_DREAMINA_DEFAULT", emulator.connection_json(max_retries=0))
    hook = fast_hook()
    submitted = hook.submit(sample_input(emulator))
    wait_until_state(hook, submitted.request_id, RequestState.SUCCEEDED)
    emulator.inject_fault("result", "500", count=1000)
    with pytest.raises(DreaminaTransientWaitError):
        hook.wait(
            submitted.request_id,
            policy=WaitPolicy(poll_interval=0.05, max_consecutive_errors=3, max_error_seconds=0),
        )
    assert emulator.counters()["calls_per_request"][submitted.request_id]["result"] == 4
