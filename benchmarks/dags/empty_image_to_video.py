"""The DAG of ``example_dags/dreamina_image_to_video.py`` built from EmptyOperators: the parse floor.

Same DAG arguments, params, task ids and dependencies; only the three operators are replaced, so the
difference in import time is what the provider's operators cost a DAG file.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Param

SAMPLE_IMAGE = str(Path(__file__).parent / "data" / "lighthouse.png")

with DAG(
    dag_id="dreamina_image_to_video_empty",
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
        "image": Param(SAMPLE_IMAGE, type="string", description="URL, local path or object-storage URI"),
        "seed": Param(-1, type="integer", minimum=-1, description="-1 for a random seed"),
        "frames": Param(121, type="integer", enum=[121, 241], description="121 is about 5 s, 241 about 10 s"),
    },
    doc_md=__doc__,
) as dag:
    submit = EmptyOperator(task_id="submit", retries=2)
    wait = EmptyOperator(task_id="wait")
    download = EmptyOperator(task_id="download", retries=2)

    submit >> wait >> download
