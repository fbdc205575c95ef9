"""(i) Two schedulers run the 30-row pipeline at once; one is SIGKILLed mid-run; the other finishes it.

Airflow's schedulers share the work through row locks in PostgreSQL (``SELECT ... FOR UPDATE SKIP
LOCKED``): both queue tasks of the same run. The first submits are answered slowly, so that tasks
are still running when one scheduler dies: the one killed is one with at least three of the run's
tasks queued or running. Once its heartbeat is older than ``scheduler_health_check_threshold``, the
survivor declares it dead and adopts those tasks. Nothing is paid twice.
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

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(900)]

DAG_ID = "dreamina_chaos_pipeline"
GENERATE, DOWNLOAD = "video.generate", "video.download"
ROWS = 30
SCHEDULERS = ("scheduler", "scheduler-b")
# What a scheduler adopts from a dead one (Airflow's adoptable states).
ADOPTABLE = ("queued", "running")
# The first submits hold every worker slot this long (under the connection's 30 s read timeout, after
# which a submit is uncertain), so that the run's next tasks wait queued while a scheduler is declared dead.
SLOW_SUBMITS, SUBMIT_SECONDS = 8, 25


def queued_by(chaos: Chaos, run_id: str, states: tuple[str, ...] | None) -> dict[int, int]:
    """Scheduler job id -> how many of the run's tasks in ``states`` (None: any) it queued."""
    rows = chaos.deployment.postgres.query(
        "SELECT queued_by_job_id, count(*) FROM task_instance WHERE dag_id = %s AND run_id = %s "
        "AND (%s OR state = ANY(%s)) AND queued_by_job_id IS NOT NULL GROUP BY queued_by_job_id",
        (DAG_ID, run_id, states is None, list(states or ())),
    )
    return {job_id: count for job_id, count in rows}


def live_schedulers(chaos: Chaos) -> set[int]:
    rows = chaos.deployment.postgres.query(
        "SELECT id FROM job WHERE job_type = 'SchedulerJob' AND state = 'running' "
        "AND latest_heartbeat > now() - interval '10 seconds'"
    )
    return {row[0] for row in rows}


def test_two_schedulers_one_killed_mid_run_finish_thirty_rows_paid_once(
    chaos: Chaos, figures: dict[str, Any]
) -> None:
    deployment, emulator = chaos.deployment, chaos.emulator
    deployment.start_component("scheduler-b")
    second = deployment.scheduler_job_ids["scheduler-b"]
    (first,) = wait_for(lambda: (live := live_schedulers(chaos) - {second}) and live, "the first scheduler")
    job_of = {"scheduler": first, "scheduler-b": second}

    emulator.configure(queue_seconds=0.5, run_seconds_range=[3, 10], output_bytes=5_000_000, seed=21)
    emulator.inject_fault("submit", "slow", delay=SUBMIT_SECONDS, count=SLOW_SUBMITS)
    run_id, folder = chaos.trigger(DAG_ID, "two-schedulers", count=ROWS)

    def both_busy() -> tuple[str, dict[int, int]] | None:
        in_flight = queued_by(chaos, run_id, ADOPTABLE)
        busiest = max(SCHEDULERS, key=lambda name: in_flight.get(job_of[name], 0))
        both = all(queued_by(chaos, run_id, None).get(job, 0) for job in job_of.values())
        return (busiest, in_flight) if both and in_flight.get(job_of[busiest], 0) >= 3 else None

    victim, at_kill = wait_for(
        both_busy, "both schedulers queueing the run's tasks", timeout=180, interval=0.5
    )
    (survivor,) = set(SCHEDULERS) - {victim}
    submitted_at_kill = emulator.counters()["submissions"]
    downloads_at_kill = chaos.states(DAG_ID, run_id, DOWNLOAD).count("success")

    killed = time.monotonic()
    deployment.crash(victim)
    # Once the dead one's heartbeat is older than the threshold, the survivor marks its job failed
    # and, in the same transaction, adopts what it had queued that is still queued or running.
    orphans: list[int] = []

    def declared_dead() -> bool:
        orphans.append(queued_by(chaos, run_id, ADOPTABLE).get(job_of[victim], 0))
        rows = deployment.postgres.query("SELECT state FROM job WHERE id = %s", (job_of[victim],))
        return rows[0][0] == "failed"

    wait_for(declared_dead, "the survivor to declare the killed scheduler dead", timeout=240, interval=0.5)
    declared = time.monotonic() - killed
    run = chaos.finished_run(DAG_ID, run_id, timeout=420)
    recovered = time.monotonic() - killed

    outcome = chaos.run_figures(DAG_ID, run_id)
    paid = payments(emulator)
    # Tasks the dead scheduler had marked queued but not yet sent to Celery: adopted, then queued
    # again once `task_queued_timeout` passed (the window the Celery provider documents).
    requeued = deployment.postgres.query(
        "SELECT count(*) FROM log WHERE event = 'stuck in queued reschedule' AND dag_id = %s AND run_id = %s",
        (DAG_ID, run_id),
    )[0][0]
    figures.update(
        rows=ROWS,
        killed=victim,
        tasks_queued_or_running_by_each_at_kill={name: at_kill.get(job, 0) for name, job in job_of.items()},
        submissions_at_kill=submitted_at_kill,
        downloads_done_at_kill=downloads_at_kill,
        seconds_from_kill_to_declared_dead=round(declared, 1),
        tasks_left_to_adopt=orphans[-2] if len(orphans) > 1 else 0,
        requeued_after_queued_timeout=requeued,
        seconds_from_kill_to_success=round(recovered, 1),
        submissions=paid.submissions,
        duplicates=paid.duplicates,
        **outcome,
    )
    assert run["state"] == "success", deployment.describe_run(DAG_ID, run_id)
    assert survivor not in deployment.exited()
    # The survivor had tasks to adopt: still queued or running when it declared the other dead.
    assert len(orphans) > 1 and orphans[-2] > 0, orphans
    assert not outcome["human_needed"]
    assert paid.submissions == paid.distinct_inputs == ROWS
    saved = assert_every_paid_output_saved(emulator, folder)
    assert len(saved) == ROWS
    assert_nothing_partial(folder)
    searched = assert_token_nowhere(deployment, chaos.token)
    figures.update(files_saved=len(saved), log_files_searched=searched.files)
