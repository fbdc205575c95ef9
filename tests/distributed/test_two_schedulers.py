"""(i) Two schedulers run the 30-row pipeline at once; one is SIGKILLed mid-run; the other finishes it.

Airflow's schedulers share the work through row locks in PostgreSQL (``SELECT ... FOR UPDATE SKIP
LOCKED``): both queue tasks of the same run. The one killed is the one that queued more of the
run's unfinished tasks; once its heartbeat is older than ``scheduler_health_check_threshold``, the
survivor adopts what it had queued. Nothing is paid twice.
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
UNFINISHED = ("queued", "running", "deferred")
# What a scheduler adopts from a dead one (Airflow's adoptable states).
ADOPTABLE = ("queued", "running")


def queued_by(chaos: Chaos, run_id: str, states: tuple[str, ...] = UNFINISHED) -> dict[int, int]:
    """Scheduler job id -> how many of the run's tasks in ``states`` it queued."""
    rows = chaos.deployment.postgres.query(
        "SELECT queued_by_job_id, count(*) FROM task_instance WHERE dag_id = %s AND run_id = %s "
        "AND state = ANY(%s) AND queued_by_job_id IS NOT NULL GROUP BY queued_by_job_id",
        (DAG_ID, run_id, list(states)),
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
    run_id, folder = chaos.trigger(DAG_ID, "two-schedulers", count=ROWS)

    def both_busy() -> dict[int, int] | None:
        counts = queued_by(chaos, run_id)
        deferred = chaos.states(DAG_ID, run_id, GENERATE).count("deferred")
        return counts if deferred >= 5 and all(counts.get(job, 0) for job in job_of.values()) else None

    at_kill = wait_for(both_busy, "both schedulers queueing the run's tasks", timeout=180, interval=0.5)
    victim = max(SCHEDULERS, key=lambda name: at_kill.get(job_of[name], 0))
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
    figures.update(
        rows=ROWS,
        killed=victim,
        unfinished_tasks_queued_by_each_at_kill={name: at_kill.get(job, 0) for name, job in job_of.items()},
        submissions_at_kill=submitted_at_kill,
        downloads_done_at_kill=downloads_at_kill,
        seconds_from_kill_to_declared_dead=round(declared, 1),
        tasks_left_to_adopt=orphans[-2] if len(orphans) > 1 else 0,
        seconds_from_kill_to_success=round(recovered, 1),
        submissions=paid.submissions,
        duplicates=paid.duplicates,
        **outcome,
    )
    assert run["state"] == "success", deployment.describe_run(DAG_ID, run_id)
    assert survivor not in deployment.exited()
    assert not outcome["human_needed"]
    assert paid.submissions == paid.distinct_inputs == ROWS
    saved = assert_every_paid_output_saved(emulator, folder)
    assert len(saved) == ROWS
    assert_nothing_partial(folder)
    searched = assert_token_nowhere(deployment, chaos.token)
    figures.update(files_saved=len(saved), log_files_searched=searched.files)
