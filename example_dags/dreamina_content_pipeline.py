"""A daily content pipeline: one video per row of a batch file, saved into a dated folder.

Each row of ``data/batch.jsonl`` holds a prompt and an image. Each row is one instance of the
mapped task group ``video``: a deferrable generation in the ``dreamina`` pool, then the download
of that generation's video. Create the pool first, counting deferred tasks, so that it caps how
many generations are in flight (and paid for) at once, not only how many are submitting::

    airflow pools set dreamina 4 "Dreamina generations" --include-deferred

Mapping the group, rather than generations and downloads separately, keeps rows independent: a
row whose generation fails leaves every other row's video downloaded, instead of leaving the
whole mapped download ``upstream_failed`` with videos already paid for. Each download records the
submitted input (prompt, seed, frames) in the manifest beside its video. When every video is
saved, ``publish`` emits one event on the ``dreamina_daily_videos`` asset, listing the files; that
event schedules ``dreamina_asset_consumer``. If a row failed, clear it from the UI: the other rows
are not generated again, and ``publish`` runs once the batch is complete.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Asset, task, task_group

from airflow_provider_dreamina.operators.dreamina import (
    DreaminaDownloadOperator,
    DreaminaImageToVideoOperator,
)

DATA = Path(__file__).parent / "data"
DAILY_VIDEOS = Asset(name="dreamina_daily_videos", uri="dreamina://videos/daily")
# Runs triggered without a logical date (allowed since Airflow 3) have no `ds`: fall back to run_after.
DAY = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"
OUTPUT = "{{ var.value.get('dreamina_output_dir', '/tmp/dreamina-videos') }}/pipeline/" + DAY


@task
def read_batch() -> list[dict[str, str]]:
    """The rows to generate, read when the task runs (never while the DAG file is parsed)."""
    rows = []
    for line in (DATA / "batch.jsonl").read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            image = row["image"]
            # Images named without a scheme or absolute path live beside the batch file.
            if "://" not in image and not image.startswith("/"):
                image = str(DATA / image)
            rows.append({"prompt": row["prompt"], "image_url": image})
    return rows


@task_group
def video(prompt: str, image_url: str) -> Any:
    """One row: generate the video, then save it (with the submitted input in its manifest)."""
    generate = DreaminaImageToVideoOperator(
        task_id="generate",
        prompt=prompt,
        image_url=image_url,
        image_roots=[str(DATA)],  # the batch's images live beside it; nothing else is read
        pool="dreamina",
        wait_for_completion=True,
        deferrable=True,
        poll_interval=10,
        timeout=2 * 60 * 60,
        retries=2,
    )
    download = DreaminaDownloadOperator(
        task_id="download",
        request_id=generate.output["request_id"],  # the XCom the operator pushes under that key
        generation_input=generate.output,  # its result: the manifest records result["input"]
        destination=OUTPUT,
        retries=2,
    )
    return download.output


@task(outlets=[DAILY_VIDEOS])
def publish(stored: list[list[str]], *, outlet_events: Any = None) -> list[str]:
    """Announce the day's videos in one asset event; its extra lists every stored file."""
    files = [uri for uris in stored for uri in uris]
    outlet_events[DAILY_VIDEOS].extra = {"files": files, "count": len(files)}
    return files


with DAG(
    dag_id="dreamina_content_pipeline",
    description="Daily batch of image-to-video generations, saved and announced as an asset",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["dreamina", "example"],
    doc_md=__doc__,
) as dag:
    publish(video.expand_kwargs(read_batch()))
