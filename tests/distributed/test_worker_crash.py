"""(b) The Celery worker running a download is SIGKILLed halfway: the retry saves the video whole."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.distributed.chaos import Chaos, wait_for
from tests.distributed.checks import (
    assert_every_paid_output_saved,
    assert_nothing_partial,
    assert_token_nowhere,
    leftovers,
    partial_bytes,
    payments,
)
from tests.distributed.harness import WORKERS

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(900)]

DAG_ID = "dreamina_chaos_generation"
OUTPUT_BYTES = 200_000_000
# 10 s for the whole output: the worker dies with a fifth of it on disk.
THROTTLE_BYTES_PER_SECOND = 20_000_000
KILL_AFTER_BYTES = 40_000_000


def test_killing_the_worker_mid_download_leaves_the_retry_to_save_it_whole(
    chaos: Chaos, figures: dict[str, Any]
) -> None:
    deployment, emulator = chaos.deployment, chaos.emulator
    emulator.script_jobs(queue_seconds=0.5, run_seconds=1, output_bytes=OUTPUT_BYTES)
    emulator.configure(download_bytes_per_second=THROTTLE_BYTES_PER_SECOND)
    run_id, folder = chaos.trigger(DAG_ID, "worker-crash-download")

    pid = chaos.running_task_pid(DAG_ID, run_id, "download", timeout=180)
    worker = deployment.component_of(pid)
    assert worker in WORKERS, f"task process {pid} belongs to no worker"
    on_disk = wait_for(lambda: (size := partial_bytes(folder)) >= KILL_AFTER_BYTES and size, "the download")
    killed = time.monotonic()
    deployment.crash(worker)
    left_by_crash = leftovers(folder)
    # The retry downloads at full speed, on the other worker or on this one back up.
    emulator.configure(download_bytes_per_second=None)
    deployment.start_component(worker)

    run = chaos.finished_run(DAG_ID, run_id, timeout=240)
    recovered = time.monotonic() - killed
    assert run["state"] == "success", deployment.describe_run(DAG_ID, run_id)
    tries = chaos.tries(DAG_ID, run_id, "download")
    assert tries[-1][1] == "success" and len(tries) >= 2, tries

    paid = payments(emulator)
    figures.update(
        output_bytes=OUTPUT_BYTES,
        bytes_on_disk_at_kill=on_disk,
        files_left_by_the_crash=left_by_crash,
        seconds_from_kill_to_success=round(recovered, 1),
        download_tries=len(tries),
        submissions=paid.submissions,
        leftovers_after_retry=leftovers(folder),
        **chaos.run_figures(DAG_ID, run_id),
    )
    assert paid.submissions == 1
    saved = assert_every_paid_output_saved(emulator, folder)
    assert [manifest["bytes"] for manifest in saved.values()] == [OUTPUT_BYTES]
    searched = assert_token_nowhere(deployment, chaos.token)
    figures.update(files_saved=len(saved), log_files_searched=searched.files)
    # The retry removed the killed try's .partial file of the same output.
    assert_nothing_partial(folder)
