"""(f) PostgreSQL stops for 30 s and comes back while 8 generations wait in triggerers and 2 downloads stream.

The metadata database goes away under every component at once (a fast shutdown: every session ends,
committed work stays; the port refuses connections until it is back). Components reconnect; one whose
process ends is started again, as an orchestrator would (``Deployment.supervised``). Tries may be
retried; nothing is paid twice, and every paid video is saved whole.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.distributed.chaos import Chaos, patiently, wait_for
from tests.distributed.checks import (
    assert_every_paid_output_saved,
    assert_nothing_partial,
    assert_token_nowhere,
    partial_files,
    payments,
)

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(900)]

DAG_ID = "dreamina_chaos_pipeline"
GENERATE = "video.generate"
DOWN_SECONDS = 30
WAITING, STREAMING = 8, 2
# The first two requests finish at once with big outputs, sent slowly: they stream through the outage.
BIG_OUTPUT_BYTES = 120_000_000
THROTTLE_BYTES_PER_SECOND = 2_000_000
# A download is streaming once its partial file holds this much.
STREAMED_BYTES = 1_000_000
# The other eight are still rendering when the database stops, and finish while it is away.
RUN_SECONDS = 25
# Healthy as the API server reports it: every scheduler, triggerer and DAG processor heartbeats.
HEALTHY = ("metadatabase", "scheduler", "triggerer", "dag_processor")


def all_healthy(chaos: Chaos) -> bool:
    health = chaos.deployment.health()
    return health is not None and all((health.get(part) or {}).get("status") == "healthy" for part in HEALTHY)


def test_postgres_away_for_thirty_seconds_loses_nothing_and_pays_nothing_twice(
    chaos: Chaos, figures: dict[str, Any]
) -> None:
    deployment, emulator = chaos.deployment, chaos.emulator
    rows = WAITING + STREAMING
    emulator.configure(queue_seconds=0.5, download_bytes_per_second=THROTTLE_BYTES_PER_SECOND)
    emulator.script_jobs(count=STREAMING, run_seconds=1, output_bytes=BIG_OUTPUT_BYTES)
    emulator.script_jobs(count=WAITING, run_seconds=RUN_SECONDS, output_bytes=5_000_000)
    run_id, folder = chaos.trigger(DAG_ID, "database-outage", count=rows)

    def in_position() -> bool:
        streaming = [size for size in partial_files(folder).values() if size >= STREAMED_BYTES]
        return (
            len(streaming) == STREAMING
            and chaos.states(DAG_ID, run_id, GENERATE).count("deferred") == WAITING
        )

    wait_for(in_position, "8 generations deferred and 2 downloads streaming", timeout=180, interval=0.5)
    at_stop = {
        "partial_files": sorted(partial_files(folder).values()),
        "submissions": emulator.counters()["submissions"],
    }

    with deployment.supervised() as restarts:
        stopped = time.monotonic()
        deployment.postgres.stop()
        time.sleep(DOWN_SECONDS)
        deployment.postgres.start()
        back = time.monotonic()
        # The rest of the downloads at full speed.
        emulator.configure(download_bytes_per_second=None)
        patiently(lambda: all_healthy(chaos), "every component healthy again", timeout=300)
        healthy = time.monotonic() - back
        run = chaos.finished_run_patiently(DAG_ID, run_id, timeout=420)
        ended = time.monotonic() - back

    outcome = chaos.run_figures(DAG_ID, run_id)
    paid = payments(emulator)
    figures.update(
        rows=rows,
        seconds_down=round(back - stopped, 1),
        submissions_at_stop=at_stop["submissions"],
        partial_file_bytes_at_stop=at_stop["partial_files"],
        seconds_from_back_to_healthy=round(healthy, 1),
        seconds_from_back_to_success=round(ended, 1),
        components_restarted=[vars(restart) for restart in restarts],
        submissions=paid.submissions,
        duplicates=paid.duplicates,
        **outcome,
    )
    assert run["state"] == "success", deployment.describe_run(DAG_ID, run_id)
    assert not outcome["human_needed"]
    assert paid.submissions == paid.distinct_inputs == rows
    saved = assert_every_paid_output_saved(emulator, folder)
    assert len(saved) == rows
    assert_nothing_partial(folder)
    searched = assert_token_nowhere(deployment, chaos.token)
    figures.update(files_saved=len(saved), log_files_searched=searched.files)
