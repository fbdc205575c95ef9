"""The content pipeline's shape (a mapped group: generate in a pool, then download; then publish).

(d) The scheduler is SIGKILLed and started again in the middle of a run: the run completes and
nothing is paid twice. (e) 30 rows while the emulator fails a fifth of the calls of every endpoint
(the fault soak's mix, ``benchmarks/soak.py``): 30 videos, no duplicate payment.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from benchmarks.soak import inject_faults
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


def states(chaos: Chaos, run_id: str, task_id: str) -> list[str | None]:
    return [ti["state"] for ti in chaos.deployment.task_instances(DAG_ID, run_id, task_id)]


def published(chaos: Chaos, run_id: str) -> list[str]:
    entries = chaos.deployment.xcom_entries(DAG_ID, run_id, "publish")
    (files,) = [entry["value"] for entry in entries if entry["key"] == "return_value"]
    return list(files)


def test_restarting_the_scheduler_mid_run_completes_it_without_paying_twice(
    chaos: Chaos, figures: dict[str, Any]
) -> None:
    rows = 8
    # Generations long enough that the restart finds some deferred, some not yet submitted.
    chaos.emulator.configure(queue_seconds=1, run_seconds_range=[5, 12])
    run_id, folder = chaos.trigger(DAG_ID, "scheduler-restart", count=rows)
    wait_for(
        lambda: len([state for state in states(chaos, run_id, GENERATE) if state == "deferred"]) >= 2,
        "two generations waiting in a triggerer",
        timeout=180,
    )
    at_restart = {
        "submitted": chaos.emulator.counters()["submissions"],
        "downloads_done": states(chaos, run_id, DOWNLOAD).count("success"),
    }
    restarted = time.monotonic()
    chaos.deployment.restart("scheduler", crash=True)

    run = chaos.finished_run(DAG_ID, run_id, timeout=300)
    assert run["state"] == "success", chaos.deployment.describe_run(DAG_ID, run_id)
    paid = payments(chaos.emulator)
    figures.update(
        rows=rows,
        submissions_at_restart=at_restart["submitted"],
        downloads_done_at_restart=at_restart["downloads_done"],
        seconds_from_restart_to_success=round(time.monotonic() - restarted, 1),
        submissions=paid.submissions,
        duplicates=paid.duplicates,
        **chaos.run_figures(DAG_ID, run_id),
    )
    assert at_restart["submitted"] < rows or at_restart["downloads_done"] < rows
    assert paid.submissions == paid.distinct_inputs == rows
    saved = assert_every_paid_output_saved(chaos.emulator, folder)
    assert len(saved) == rows
    assert sorted(published(chaos, run_id)) == sorted(manifest["stored_uri"] for manifest in saved.values())
    assert_nothing_partial(folder)
    assert_token_nowhere(chaos.deployment, chaos.token)


def test_thirty_rows_with_a_fifth_of_the_calls_failing_make_thirty_videos_paid_once(
    chaos: Chaos, figures: dict[str, Any]
) -> None:
    rows = 30
    chaos.emulator.configure(queue_seconds=0.5, run_seconds_range=[3, 8], seed=12)
    inject_faults(chaos.emulator, 0.2)
    started = time.monotonic()
    run_id, folder = chaos.trigger(DAG_ID, "faults", count=rows)

    run = chaos.finished_run(DAG_ID, run_id, timeout=600)
    elapsed = time.monotonic() - started
    faults = chaos.emulator.counters()["faults_injected"]
    assert run["state"] == "success", chaos.deployment.describe_run(DAG_ID, run_id)
    paid = payments(chaos.emulator)
    figures.update(
        rows=rows,
        seconds_run=round(elapsed, 1),
        faults_injected=faults,
        submissions=paid.submissions,
        duplicates=paid.duplicates,
        **chaos.run_figures(DAG_ID, run_id),
    )
    assert faults > 0
    assert paid.submissions == paid.distinct_inputs == rows
    assert paid.duplicates == 0
    saved = assert_every_paid_output_saved(chaos.emulator, folder)
    assert len(saved) == rows
    assert len(published(chaos, run_id)) == rows
    assert_nothing_partial(folder)
    searched = assert_token_nowhere(chaos.deployment, chaos.token)
    figures.update(files_saved=len(saved), log_files_searched=searched.files)
