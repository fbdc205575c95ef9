"""(g) Redis, the Celery broker, stops for 30 s and comes back while tasks are queued and running.

Redis runs without persistence (as many do for Celery), so it comes back empty: the messages of the
tasks queued in it are lost. Running tasks carry on (they report through the API server, not the
broker); Airflow queues the lost ones again once they have been queued for
``[scheduler] task_queued_timeout``. Nothing stays in queued, and nothing is paid twice.
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
GENERATE = "video.generate"
DOWN_SECONDS = 30
# Twice the workers' task slots: half the generations run, the other half wait in the broker.
ROWS = 16
# Each submit is answered after this long, so that the generations are still running at the stop.
SUBMIT_SECONDS = 10
# The scheduler's record of a task it queued again after `task_queued_timeout`.
REQUEUED_EVENT = "stuck in queued reschedule"


def test_redis_away_for_thirty_seconds_leaves_nothing_queued_and_pays_nothing_twice(
    chaos: Chaos, figures: dict[str, Any]
) -> None:
    deployment, emulator = chaos.deployment, chaos.emulator
    emulator.configure(queue_seconds=0.5, run_seconds=3, output_bytes=5_000_000)
    emulator.inject_fault("submit", "slow", delay=SUBMIT_SECONDS, count=ROWS)
    run_id, folder = chaos.trigger(DAG_ID, "broker-outage", count=ROWS)

    def in_position() -> dict[str, int] | None:
        states = chaos.states(DAG_ID, run_id, GENERATE)
        counts = {"running": states.count("running"), "queued": states.count("queued")}
        return counts if counts["running"] >= 4 and counts["queued"] >= 4 else None

    at_stop = wait_for(in_position, "generations running and queued", timeout=180, interval=0.3)

    with deployment.supervised() as restarts:
        stopped = time.monotonic()
        deployment.redis.stop()
        time.sleep(DOWN_SECONDS)
        deployment.redis.start()
        back = time.monotonic()
        run = chaos.finished_run_patiently(DAG_ID, run_id, timeout=480)
        ended = time.monotonic() - back

    requeued = deployment.postgres.query(
        "SELECT count(*) FROM log WHERE event = %s AND dag_id = %s AND run_id = %s",
        (REQUEUED_EVENT, DAG_ID, run_id),
    )[0][0]
    outcome = chaos.run_figures(DAG_ID, run_id)
    paid = payments(emulator)
    figures.update(
        rows=ROWS,
        running_at_stop=at_stop["running"],
        queued_at_stop=at_stop["queued"],
        seconds_down=round(back - stopped, 1),
        seconds_from_back_to_success=round(ended, 1),
        requeued_after_queued_timeout=requeued,
        components_restarted=[vars(restart) for restart in restarts],
        submissions=paid.submissions,
        duplicates=paid.duplicates,
        **outcome,
    )
    assert run["state"] == "success", deployment.describe_run(DAG_ID, run_id)
    assert not outcome["human_needed"]
    assert paid.submissions == paid.distinct_inputs == ROWS
    saved = assert_every_paid_output_saved(emulator, folder)
    assert len(saved) == ROWS
    assert_nothing_partial(folder)
    searched = assert_token_nowhere(deployment, chaos.token)
    figures.update(files_saved=len(saved), log_files_searched=searched.files)
