"""DAGs the chaos scenarios run on the distributed deployment (tests/distributed, RELIABILITY.md).

Each saves into ``<Variable dreamina_output_dir>/<param folder>``, so a test reads only its own
files. The image comes from the Variable ``dreamina_chaos_image`` (a local file, sent inline), so
the DAGs parse without touching the emulator.
"""

from __future__ import annotations

import inspect
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, task, task_group

from airflow_provider_dreamina.operators.dreamina import (
    DreaminaDownloadOperator,
    DreaminaImageToVideoOperator,
)

IMAGE = "{{ var.value.dreamina_chaos_image }}"
DESTINATION = "{{ var.value.dreamina_output_dir }}/{{ params.folder }}"
RETRIES: dict[str, Any] = {"retries": 2, "retry_delay": timedelta(seconds=1)}
# The pipeline's tasks are retried as in production, after longer than a broker outage lasts: while
# Redis is down each attempt to queue a task fails a try at once (scenario g).
PIPELINE_RETRIES: dict[str, Any] = {"retries": 3, "retry_delay": timedelta(seconds=20)}
COMMON: dict[str, Any] = {
    "schedule": None,
    "start_date": datetime(2026, 1, 1),
    "catchup": False,
    "tags": ["dreamina", "chaos"],
    "params": {"folder": Param("default", type="string")},
}
# Issue 12's operator argument; until the operator has it, the "resubmit" DAG runs without it.
ORPHAN_ARGUMENT = "on_orphaned_submit"
ORPHAN_RESUBMIT = (
    {ORPHAN_ARGUMENT: "resubmit"}
    if ORPHAN_ARGUMENT in inspect.signature(DreaminaImageToVideoOperator.__init__).parameters
    else {}
)


def generate_then_download(task_id: str = "generate", **generate_options: Any) -> None:
    """One deferrable generation (polled every second), then its download."""
    generate = DreaminaImageToVideoOperator(
        task_id=task_id,
        prompt="A lighthouse at dusk, waves rolling in, while the machines fail on purpose",
        image_url=IMAGE,
        seed=7,
        wait_for_completion=True,
        deferrable=True,
        poll_interval=1,
        timeout=15 * 60,
        **{**RETRIES, **generate_options},
    )
    download = DreaminaDownloadOperator(
        task_id="download",
        request_id=generate.output["request_id"],
        generation_input=generate.output,
        destination=DESTINATION,
        **RETRIES,
    )
    generate >> download


# (a) the triggerer running the wait is killed; (b) the worker is killed mid-download.
with DAG(dag_id="dreamina_chaos_generation", **COMMON):
    generate_then_download()

# (c) the worker is killed while RunComfy holds back the answer to a paid submit.
with DAG(dag_id="dreamina_chaos_orphan", **COMMON):
    generate_then_download()

with DAG(dag_id="dreamina_chaos_orphan_resubmit", **COMMON):
    generate_then_download(**ORPHAN_RESUBMIT)


@task
def rows(params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per generation, each its own prompt and seed (so each is one distinct paid input);
    rows are numbered from the param ``first_row``, so that two runs can ask for different videos."""
    assert params is not None
    first = int(params.get("first_row", 0))
    return [
        {"prompt": f"Chaos pipeline row {index}: a paper boat on a rainy street", "seed": index}
        for index in range(first, first + int(params["count"]))
    ]


def generate_and_save(prompt: str, seed: int, **generate_options: Any) -> Any:
    """One row, as in the content pipeline: generate (deferred, polled every 2 s), then save."""
    generate = DreaminaImageToVideoOperator(
        task_id="generate",
        prompt=prompt,
        image_url=IMAGE,
        seed=seed,
        wait_for_completion=True,
        deferrable=True,
        poll_interval=2,
        timeout=15 * 60,
        **generate_options,
    )
    download = DreaminaDownloadOperator(
        task_id="download",
        request_id=generate.output["request_id"],
        generation_input=generate.output,
        destination=DESTINATION,
        **{key: value for key, value in generate_options.items() if key in ("dreamina_conn_id", "pool")},
    )
    return download.output


@task_group
def video(prompt: str, seed: int) -> Any:
    """One row, as in the content pipeline: generate in the dreamina pool, then save."""
    return generate_and_save(prompt, seed, pool="dreamina")


@task
def publish(stored: list[list[str]]) -> list[str]:
    """Every stored file of the run, once each row is saved (the content pipeline's last step)."""
    return [uri for uris in stored for uri in uris]


# (d) the scheduler is restarted mid-run; (e) 30 rows while a fifth of the calls fail; (f) and (g)
# PostgreSQL and Redis stop for a while; (i) two schedulers, one killed.
with DAG(
    dag_id="dreamina_chaos_pipeline",
    default_args=PIPELINE_RETRIES,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_tasks=64,
    tags=["dreamina", "chaos"],
    params={
        "folder": Param("default", type="string"),
        "count": Param(3, type="integer", minimum=1),
        "first_row": Param(0, type="integer", minimum=0),
    },
):
    publish(video.expand_kwargs(rows()))


# (h) RunComfy is down for five minutes. These two pipelines have a RunComfy of their own (the
# connection `dreamina_outage`, another emulator), so that the outage runs beside other scenarios.
# The waits must ride the outage out: their generations have no retry at all. The submits begin
# while connections are refused: their tries are spaced so that they are tried again after it.
OUTAGE_CONN_ID = "dreamina_outage"
OUTAGE_PARAMS = {
    "folder": Param("default", type="string"),
    "count": Param(3, type="integer", minimum=1),
    "first_row": Param(0, type="integer", minimum=0),
}


@task_group
def waiting_video(prompt: str, seed: int) -> Any:
    return generate_and_save(prompt, seed, dreamina_conn_id=OUTAGE_CONN_ID, retries=0)


@task_group
def submitted_video(prompt: str, seed: int) -> Any:
    return generate_and_save(prompt, seed, dreamina_conn_id=OUTAGE_CONN_ID)


for dag_id, group in (
    ("dreamina_chaos_outage_waits", waiting_video),
    ("dreamina_chaos_outage_submits", submitted_video),
):
    with DAG(
        dag_id=dag_id,
        default_args={"retries": 4, "retry_delay": timedelta(seconds=30)},
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_tasks=64,
        tags=["dreamina", "chaos"],
        params=OUTAGE_PARAMS,
    ):
        publish(group.expand_kwargs(rows()))
