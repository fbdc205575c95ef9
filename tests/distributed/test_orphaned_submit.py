"""(c) The worker dies after RunComfy created (and charged) a request, before the task learnt its id.

The emulator holds back the submit's answer (fault kind ``hold``): the request exists and is paid
for, and the worker is SIGKILLed while it waits. The next try finds the intent the first one
recorded before its POST, but no request id: an earlier try may have paid. By default it fails
without retrying and says so ("orphaned submit"); with ``on_orphaned_submit="resubmit"`` it accepts
the risk, says so, and pays exactly once more.
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
from tests.distributed.harness import WORKERS

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(900)]

# Longer than it takes to notice the submission and kill the worker; the answer never arrives.
HOLD_SECONDS = 60
# The first try's failure names the orphan; a resubmit says what it accepts (RunComfy may charge twice).
ORPHAN_TEXT = "orphaned submit"
RESUBMIT_TEXT = "orphaned"


def crash_during_a_held_submit(chaos: Chaos, dag_id: str, folder: str) -> tuple[str, str, float]:
    """Run ``dag_id`` and SIGKILL its worker once the submit is paid; (run id, orphan id, kill time)."""
    deployment, emulator = chaos.deployment, chaos.emulator
    emulator.inject_fault("submit", "hold", delay=HOLD_SECONDS)
    run_id, _ = chaos.trigger(dag_id, folder)
    pid = chaos.running_task_pid(dag_id, run_id, "generate")
    wait_for(lambda: emulator.counters()["submissions"] == 1, "the paid submit", timeout=120)
    (orphan,) = [job["request_id"] for job in emulator.requests()]
    worker = deployment.component_of(pid)
    assert worker in WORKERS, f"task process {pid} belongs to no worker"
    killed = time.monotonic()
    deployment.crash(worker)
    deployment.start_component(worker)
    return run_id, orphan, killed


def assert_mentions(text: str, log: str) -> None:
    if text not in log.lower():
        pytest.fail(f"the second try's log does not mention {text!r}:\n{log[-3000:]}")


def test_a_retry_after_an_orphaned_submit_fails_without_paying_again(
    chaos: Chaos, figures: dict[str, Any]
) -> None:
    dag_id = "dreamina_chaos_orphan"
    run_id, orphan, killed = crash_during_a_held_submit(chaos, dag_id, "orphan-fail")

    run = chaos.finished_run(dag_id, run_id, timeout=240)
    paid = payments(chaos.emulator)
    figures.update(
        seconds_from_kill_to_verdict=round(time.monotonic() - killed, 1),
        submissions=paid.submissions,
        **chaos.run_figures(dag_id, run_id),
    )
    assert run["state"] == "failed", chaos.deployment.describe_run(dag_id, run_id)
    # The crashed try, then one that refuses to pay again and is not retried (retries=2 remain).
    assert chaos.tries(dag_id, run_id, "generate") == [(1, "failed"), (2, "failed")]
    assert_mentions(ORPHAN_TEXT, chaos.log(dag_id, run_id, "generate", 2))
    assert chaos.task_state(dag_id, run_id, "download") == "upstream_failed"
    assert paid.submissions == 1
    # The orphan is paid for and never saved: the user is told to look for it in RunComfy's dashboard.
    folder = chaos.output_root / "orphan-fail"
    assert assert_every_paid_output_saved(chaos.emulator, folder, unsaved_accepted={orphan}) == {}
    assert_nothing_partial(folder)
    assert_token_nowhere(chaos.deployment, chaos.token)


def test_resubmit_after_an_orphaned_submit_pays_exactly_once_more(
    chaos: Chaos, figures: dict[str, Any]
) -> None:
    dag_id = "dreamina_chaos_orphan_resubmit"
    run_id, orphan, killed = crash_during_a_held_submit(chaos, dag_id, "orphan-resubmit")

    run = chaos.finished_run(dag_id, run_id, timeout=240)
    paid = payments(chaos.emulator)
    figures.update(
        seconds_from_kill_to_success=round(time.monotonic() - killed, 1),
        submissions=paid.submissions,
        **chaos.run_figures(dag_id, run_id),
    )
    assert run["state"] == "success", chaos.deployment.describe_run(dag_id, run_id)
    assert chaos.tries(dag_id, run_id, "generate") == [(1, "failed"), (2, "success")]
    assert_mentions(RESUBMIT_TEXT, chaos.log(dag_id, run_id, "generate", 2))
    assert paid.submissions == 2
    folder = chaos.output_root / "orphan-resubmit"
    saved = assert_every_paid_output_saved(chaos.emulator, folder, unsaved_accepted={orphan})
    assert len(saved) == 1 and orphan not in saved
    assert_nothing_partial(folder)
    assert_token_nowhere(chaos.deployment, chaos.token)
