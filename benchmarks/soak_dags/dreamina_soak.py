"""The fault soak's DAG: the content pipeline's shape (a mapped group: generate, then download) for N rows.

``benchmarks/soak.py`` and ``tests/e2e/test_soak.py`` trigger it with ``count`` (how many
generations), ``image`` (a local image, sent inline) and ``output_dir``. Every row has its own
prompt and seed, so each distinct input should be paid for exactly once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, task, task_group

from airflow_provider_dreamina.operators.dreamina import (
    DreaminaDownloadOperator,
    DreaminaImageToVideoOperator,
)


@task
def rows(params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per generation, built when the task runs (never while the DAG file is parsed)."""
    assert params is not None
    return [
        {
            "prompt": f"Soak generation {index}: waves roll in under a slow pan, seed {index}",
            "image_url": params["image"],
            "seed": index,
        }
        for index in range(int(params["count"]))
    ]


@task_group
def video(prompt: str, image_url: str, seed: int) -> None:
    """One row: generate, then download that generation's video."""
    generate = DreaminaImageToVideoOperator(
        task_id="generate",
        prompt=prompt,
        image_url=image_url,
        seed=seed,
        wait_for_completion=True,
        deferrable=True,
        poll_interval=2,
        timeout=15 * 60,
        retries=2,
        retry_delay=timedelta(seconds=2),
    )
    DreaminaDownloadOperator(
        task_id="download",
        request_id=generate.output["request_id"],
        destination="{{ params.output_dir }}",
        retries=2,
        retry_delay=timedelta(seconds=2),
    )


with DAG(
    dag_id="dreamina_soak",
    description="Fault soak: N generations through the content pipeline's shape",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_tasks=128,
    tags=["dreamina", "benchmark"],
    params={
        "count": Param(6, type="integer", minimum=1),
        "image": Param("", type="string"),
        "output_dir": Param("", type="string"),
    },
) as dag:
    video.expand_kwargs(rows())
