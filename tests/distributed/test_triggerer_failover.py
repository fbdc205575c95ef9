"""(a) The triggerer running a generation's wait is SIGKILLed: the other one takes the wait over."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.distributed.chaos import Chaos, wait_for
from tests.distributed.checks import (
    assert_every_paid_output_saved,
    assert_nothing_partial,
    assert_token_nowhere,
    payments,
)
from tests.distributed.harness import TRIGGERERS

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(900)]

DAG_ID = "dreamina_chaos_generation"


def test_killing_the_triggerer_of_a_waiting_generation_hands_it_to_the_other(
    chaos: Chaos, figures: dict[str, Any]
) -> None:
    deployment, emulator = chaos.deployment, chaos.emulator
    # Long enough to be caught waiting, and still running when the other triggerer takes over.
    emulator.script_jobs(queue_seconds=1, run_seconds=30)
    run_id, folder = chaos.trigger(DAG_ID, "triggerer-failover")
    trigger_id = chaos.trigger_id(DAG_ID, run_id, "generate")
    (request_id,) = [job["request_id"] for job in emulator.requests()]
    # The trigger is polling: the request is being watched by the triggerer about to die.
    wait_for(lambda: emulator.counters()["calls_per_request"][request_id]["status"] >= 2, "a poll")
    victim = deployment.triggerer_running(trigger_id)
    assert victim in TRIGGERERS
    (survivor,) = set(TRIGGERERS) - {victim}
    survivor_job = deployment.triggerer_job_ids[survivor]

    killed = time.monotonic()
    deployment.crash(victim)
    wait_for(lambda: deployment.triggerer_running(trigger_id) == survivor, "the takeover", timeout=90)
    takeover = time.monotonic() - killed
    polls_before = emulator.counters()["calls_per_request"][request_id]["status"]
    wait_for(
        lambda: emulator.counters()["calls_per_request"][request_id]["status"] > polls_before,
        "the survivor's first poll",
    )
    first_poll = time.monotonic() - killed

    run = chaos.finished_run(DAG_ID, run_id, timeout=180)
    recovered = time.monotonic() - killed
    assert run["state"] == "success", deployment.describe_run(DAG_ID, run_id)
    assert chaos.tries(DAG_ID, run_id, "generate") == [(1, "success")]
    # The survivor ran the trigger: its own trigger log is there.
    trigger_logs = [
        path.name
        for path in deployment.log_files()
        if f"run_id={run_id}" in str(path)
        and "task_id=generate" in str(path)
        and ".log.trigger." in path.name
    ]
    assert any(name.endswith(f".log.trigger.{survivor_job}.log") for name in trigger_logs), trigger_logs

    paid = payments(emulator)
    assert paid.submissions == 1
    saved = assert_every_paid_output_saved(emulator, folder)
    assert list(saved) == [request_id]
    assert_nothing_partial(folder)
    searched = assert_token_nowhere(deployment, chaos.token)
    figures.update(
        **chaos.run_figures(DAG_ID, run_id),
        seconds_from_kill_to_success=round(recovered, 1),
        takeover_seconds=round(takeover, 1),
        first_poll_after_kill_seconds=round(first_poll, 1),
        submissions=paid.submissions,
        files_saved=len(saved),
        log_files_searched=searched.files,
        bytes_searched=searched.bytes,
    )
