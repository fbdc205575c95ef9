"""One task that submits and waits in the triggerer, then a download.

``wait_for_completion=True, deferrable=True`` frees the worker slot while the video renders. On
Airflow 3.3+ a retry or a clear of ``generate`` reattaches to the request it already paid for.
The task returns the result with the ``input`` it submitted, which the download records in the
manifest.
"""

from __future__ import annotations

# [START dreamina_single_task]
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, Asset

from airflow_provider_dreamina.operators.dreamina import (
    DreaminaDownloadOperator,
    DreaminaImageToVideoOperator,
)

DATA = Path(__file__).parent / "data"
# Runs triggered without a logical date (allowed since Airflow 3) have no `ds`: fall back to run_after.
DAY = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"
# The download announces what it stored on this asset; the "Dreamina videos" gallery lists it.
VIDEOS = Asset(name="dreamina_videos")

with DAG(
    dag_id="dreamina_single_task",
    description="Generate and wait in one deferrable task, then download",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["dreamina", "example"],
    doc_md=__doc__,
) as dag:
    generate = DreaminaImageToVideoOperator(
        task_id="generate",
        prompt="Fishing boats drifting in a calm harbour at sunrise, gulls circling overhead",
        image_url=str(DATA / "harbour.jpg"),
        image_roots=[str(DATA)],  # local images are read only under these
        frames=121,
        wait_for_completion=True,
        deferrable=True,
        poll_interval=5,
        timeout=60 * 60,
        retries=2,
    )

    download = DreaminaDownloadOperator(
        task_id="download",
        request_id="{{ ti.xcom_pull(task_ids='generate', key='request_id') }}",
        destination="{{ var.value.get('dreamina_output_dir', '/tmp/dreamina-videos') }}/" + DAY,
        generation_input="{{ ti.xcom_pull(task_ids='generate')['input'] | tojson }}",
        outlets=[VIDEOS],
    )

    generate >> download
# [END dreamina_single_task]
