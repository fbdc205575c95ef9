"""(h) RunComfy is down for five minutes while 10 generations run and 5 more are being submitted.

Every endpoint fails for 100 s with 503, then 100 s with connection resets, then 100 s with refused
connections (the emulator's outage, on the emulator of the connection ``dreamina_outage``). The 10
waits (deferred, in the triggerers) must ride it out: their generations have no retry, so a wait
that gives up fails its generation. The 5
submits start while connections are refused: a refused connection is certain not to have reached
RunComfy, so they are tried again (by the hook, then by Airflow's retries) until RunComfy is back.
A submit answered 503 or reset after it was sent may have been paid: it fails closed as uncertain
(scenario c's path), which is why the submits here begin in the refused phase. Every generation
completes, each paid once, each saved whole.

The session begins this scenario before the others (``runcomfy_outage.py`` says why); this test
waits for the end of the outage and asserts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tests.distributed.chaos import Chaos
from tests.distributed.checks import (
    assert_every_paid_output_saved,
    assert_nothing_partial,
    assert_token_nowhere,
    payments,
)
from tests.distributed.runcomfy_outage import (
    FOLDER,
    PHASES,
    RUNNING,
    SUBMITS_DAG_ID,
    SUBMITTED,
    SUBMITTED_GENERATE,
    WAITING_GENERATE,
    WAITS_DAG_ID,
    RunComfyOutage,
)

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(1200)]


def tries(chaos: Chaos, dag_id: str, run_id: str, task_id: str) -> list[tuple[int, str]]:
    """(try number, state) of each generation of a run."""
    return sorted(
        (ti["try_number"], ti["state"]) for ti in chaos.deployment.task_instances(dag_id, run_id, task_id)
    )


def test_runcomfy_down_five_minutes_every_generation_completes_paid_once(
    chaos: Chaos, runcomfy_outage: RunComfyOutage, figures: dict[str, Any]
) -> None:
    deployment, emulator, scenario = chaos.deployment, chaos.outage_emulator, runcomfy_outage
    scenario.wait_until_over()
    runs = {
        dag_id: chaos.finished_run(dag_id, run_id, timeout=600)
        for dag_id, run_id in (
            (WAITS_DAG_ID, scenario.running_run_id),
            (SUBMITS_DAG_ID, scenario.submitted_run_id),
        )
    }
    # From the runs' own end dates: the scenarios before this test may have run past the outage.
    ended = max(datetime.fromisoformat(run["end_date"]).timestamp() for run in runs.values())
    waits = tries(chaos, WAITS_DAG_ID, scenario.running_run_id, WAITING_GENERATE)
    submits = tries(chaos, SUBMITS_DAG_ID, scenario.submitted_run_id, SUBMITTED_GENERATE)
    paid = payments(emulator)
    outcomes = [chaos.run_figures(dag_id, run["dag_run_id"]) for dag_id, run in runs.items()]
    figures.update(
        phases=[f"{kind} {seconds:.0f} s" for kind, seconds in PHASES],
        calls_answered_by_the_outage=emulator.counters()["outage_answers"],
        submits_began_seconds_into_refused=scenario.submits_began,
        seconds_from_outage_end_to_success=round(ended - float(scenario.outage["ends_at"]), 1),  # type: ignore[arg-type]
        seconds_from_begin_to_success=round(ended - scenario.began_epoch, 1),
        tries_of_the_waiting_generations=[number for number, _ in waits],
        tries_of_the_submitted_generations=[number for number, _ in submits],
        submissions=paid.submissions,
        duplicates=paid.duplicates,
        tries=sum(outcome["tries"] for outcome in outcomes),
        retried_tries=sum(outcome["retried_tries"] for outcome in outcomes),
        human_needed=any(outcome["human_needed"] for outcome in outcomes),
        tasks_not_successful=[task for outcome in outcomes for task in outcome["tasks_not_successful"]],
    )
    # Whatever the waits did, nothing was paid twice: no generation was submitted again.
    assert paid.submissions == paid.distinct_inputs == RUNNING + SUBMITTED
    # Refused, so certainly not sent: each submit's first try failed without paying, a later one paid.
    assert runs[SUBMITS_DAG_ID]["state"] == "success", deployment.describe_run(
        SUBMITS_DAG_ID, scenario.submitted_run_id
    )
    assert min(number for number, _ in submits) >= 2, submits
    # The waits rode the outage out: they have no retry, so a wait that gave up failed its generation.
    assert waits == [(1, "success")] * RUNNING, waits
    assert runs[WAITS_DAG_ID]["state"] == "success", deployment.describe_run(
        WAITS_DAG_ID, scenario.running_run_id
    )
    folder = chaos.output_root / FOLDER
    saved = assert_every_paid_output_saved(emulator, folder)
    assert len(saved) == RUNNING + SUBMITTED
    assert_nothing_partial(folder)
    searched = assert_token_nowhere(deployment, chaos.token)
    figures.update(files_saved=len(saved), log_files_searched=searched.files)
