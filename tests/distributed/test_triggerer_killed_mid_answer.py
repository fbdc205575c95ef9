"""(j) A triggerer is SIGKILLed while a status answer is still arriving: the other takes the wait over.

The emulator drips one status answer a byte at a time (fault kind ``drip``); the triggerer polling
the request is killed while that answer is half-read. The answer is cut short (the emulator sees
the client gone), the other triggerer takes the trigger over and polls afresh, and the task succeeds
on its first try with one paid submission.
"""

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
# A status answer is about 250 bytes: dripped at this pace it takes about a minute, well inside the
# connection's per-read timeout and request deadline, so nothing but the kill ends it.
DRIP_SECONDS_PER_BYTE = 0.25


def test_killing_a_triggerer_while_its_status_answer_drips_hands_the_wait_over(
    chaos: Chaos, figures: dict[str, Any]
) -> None:
    deployment, emulator = chaos.deployment, chaos.emulator
    emulator.script_jobs(queue_seconds=1, run_seconds=20)
    run_id, folder = chaos.trigger(DAG_ID, "triggerer-killed-mid-answer")
    trigger_id = chaos.trigger_id(DAG_ID, run_id, "generate")
    (request_id,) = [job["request_id"] for job in emulator.requests()]
    wait_for(lambda: emulator.counters()["calls_per_request"][request_id]["status"] >= 1, "a poll")
    emulator.inject_fault("status", "drip", delay=DRIP_SECONDS_PER_BYTE)
    wait_for(lambda: emulator.counters()["answers_dripping"] == 1, "a status answer dripping", timeout=30)
    victim = deployment.triggerer_running(trigger_id)
    assert victim in TRIGGERERS
    (survivor,) = set(TRIGGERERS) - {victim}
    survivor_job = deployment.triggerer_job_ids[survivor]
    polls_before = emulator.counters()["calls_per_request"][request_id]["status"]

    killed = time.monotonic()
    deployment.crash(victim)
    # The answer never arrived whole: the kill closed the connection under it.
    wait_for(lambda: emulator.counters()["drips_cut_short"] == 1, "the dripping answer cut short", timeout=30)
    assert emulator.counters()["answers_dripping"] == 0
    wait_for(lambda: deployment.triggerer_running(trigger_id) == survivor, "the takeover", timeout=90)
    takeover = time.monotonic() - killed
    wait_for(
        lambda: emulator.counters()["calls_per_request"][request_id]["status"] > polls_before,
        "the survivor's first poll",
    )
    first_poll = time.monotonic() - killed

    run = chaos.finished_run(DAG_ID, run_id, timeout=180)
    recovered = time.monotonic() - killed
    assert run["state"] == "success", deployment.describe_run(DAG_ID, run_id)
    assert chaos.tries(DAG_ID, run_id, "generate") == [(1, "success")]
    trigger_logs = [
        path.name
        for path in deployment.log_files()
        if f"run_id={run_id}" in str(path)
        and "task_id=generate" in str(path)
        and ".log.trigger." in path.name
    ]
    assert any(name.endswith(f".log.trigger.{survivor_job}.log") for name in trigger_logs), trigger_logs

    paid = payments(emulator)
    outcome = chaos.run_figures(DAG_ID, run_id)
    figures.update(
        takeover_seconds=round(takeover, 1),
        first_poll_after_kill_seconds=round(first_poll, 1),
        seconds_from_kill_to_success=round(recovered, 1),
        answers_cut_short=emulator.counters()["drips_cut_short"],
        submissions=paid.submissions,
        **outcome,
    )
    assert not outcome["human_needed"]
    assert paid.submissions == 1
    saved = assert_every_paid_output_saved(emulator, folder)
    assert list(saved) == [request_id]
    assert_nothing_partial(folder)
    searched = assert_token_nowhere(deployment, chaos.token)
    figures.update(files_saved=len(saved), log_files_searched=searched.files)
