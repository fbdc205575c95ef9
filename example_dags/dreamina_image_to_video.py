"""Submit, wait in the triggerer, download: the three tasks of one Dreamina generation.

Trigger it with your own prompt and image: an https URL, a ``data:`` URI, or a file under
``image_roots`` (here the ``data`` folder beside this file; add a directory or an object-storage
prefix such as ``s3://bucket/frames/`` to read from there). The ``image`` param comes from whoever
triggers the run, so nothing outside those roots is ever read. Videos land under the Airflow
Variable ``dreamina_output_dir`` (default ``/tmp/dreamina-videos``), one folder per day, each
beside its JSON manifest (``<video>.mp4.json``: request, prompt, seed, frames, size and SHA-256).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, Asset, Param

from airflow_provider_dreamina.operators.dreamina import (
    DreaminaDownloadOperator,
    DreaminaImageToVideoOperator,
)
from airflow_provider_dreamina.sensors.dreamina import DreaminaRequestSensor

DATA = Path(__file__).parent / "data"
SAMPLE_IMAGE = str(DATA / "lighthouse.png")
REQUEST_ID = "{{ ti.xcom_pull(task_ids='submit', key='request_id') }}"
# Runs triggered without a logical date (allowed since Airflow 3) have no `ds`: fall back to run_after.
DAY = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"
OUTPUT_DIR = "{{ var.value.get('dreamina_output_dir', '/tmp/dreamina-videos') }}"
# The download announces what it stored on this asset; the "Dreamina videos" gallery lists it.
# A name only: an asset URI with a scheme makes Airflow load every provider's asset handlers
# (about 130 ms) each time the DAG file is parsed.
VIDEOS = Asset(name="dreamina_videos")

with DAG(
    dag_id="dreamina_image_to_video",
    description="Turn one image and a prompt into a video with Dreamina 3.0 Pro",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["dreamina", "example"],
    params={
        "prompt": Param(
            "A lighthouse at dusk, waves rolling in, the beam sweeping slowly across the sea",
            type="string",
            minLength=1,
            maxLength=800,
        ),
        "image": Param(
            SAMPLE_IMAGE,
            type="string",
            description="https URL, data: URI, or a file under the DAG's image roots",
        ),
        "seed": Param(-1, type="integer", minimum=-1, description="-1 for a random seed"),
        "frames": Param(121, type="integer", enum=[121, 241], description="121 is about 5 s, 241 about 10 s"),
    },
    doc_md=__doc__,
) as dag:
    # [START howto_operator_dreamina_submit]
    submit = DreaminaImageToVideoOperator(
        task_id="submit",
        prompt="{{ params.prompt }}",
        image_url="{{ params.image }}",
        seed="{{ params.seed }}",
        frames="{{ params.frames }}",
        # The only places a param may make the worker read an image from (https URLs and data:
        # URIs need no root).
        image_roots=[str(DATA)],
        retries=2,
    )
    # [END howto_operator_dreamina_submit]

    # [START howto_sensor_dreamina]
    wait = DreaminaRequestSensor(
        task_id="wait",
        request_id=REQUEST_ID,
        deferrable=True,
        poke_interval=5,
        timeout=60 * 60,
    )
    # [END howto_sensor_dreamina]

    # [START howto_operator_dreamina_download]
    download = DreaminaDownloadOperator(
        task_id="download",
        request_id=REQUEST_ID,
        destination=f"{OUTPUT_DIR}/{DAY}",
        # Rendered as JSON so the manifest keeps seed and frames as numbers.
        generation_input=(
            '{{ {"prompt": params.prompt, "image_url": params.image, "seed": params.seed, '
            '"frames": params.frames} | tojson }}'
        ),
        poster=True,  # a JPEG of the middle frame beside the video (the `video` extra, PyAV)
        outlets=[VIDEOS],
        retries=2,
    )
    # [END howto_operator_dreamina_download]

    submit >> wait >> download
