"""The pipeline benchmark's DAGs: N rows through generate, then download, then one publish.

``benchmarks/pipeline.py`` runs them on the distributed deployment. Both have the content
pipeline's shape (``example_dags/dreamina_content_pipeline.py``): a mapped task group per row whose
``generate`` waits deferred in the ``dreamina`` pool and whose ``download`` stores one file and
announces it on the ``dreamina_videos`` asset, then ``publish`` lists every stored file.

* ``dreamina_pipeline_bench`` (variant ``provider``): ``DreaminaImageToVideoOperator`` (submit,
  defer to ``DreaminaRequestTrigger``, resume on a worker) and ``DreaminaDownloadOperator``.
* ``dreamina_pipeline_floor`` (variant ``floor``): what Airflow itself costs for the same shape.
  ``generate`` takes the row's prompt and seed, defers to Airflow's own ``DateTimeTrigger`` for
  the same number of seconds, resumes on a worker as the provider's does and returns an id;
  ``download`` takes that id (``generate.output``) and writes as many bytes as the provider's
  video has.
* ``dreamina_pipeline_lean`` (variant ``provider-lean``, diagnostic): the provider's DAG with its
  operators' two extra links switched off, to measure what they cost.

Which DAGs this file defines comes from ``DREAMINA_PIPELINE_VARIANTS`` (``provider``, ``floor``,
``provider-lean``, comma-separated), so that a deployment measuring one variant never imports
another's modules: every task process parses this file too.

Diagnostics (``benchmarks/pipeline.py --task-stats``): with ``DREAMINA_PIPELINE_TASK_STATS`` set to
a directory, each task process, which parses this file first, writes there at exit its task, its
CPU seconds since it was forked and those spent before this file was parsed; with
``DREAMINA_PIPELINE_PROFILE`` also set, a cProfile of everything after the parse began.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Asset, BaseOperator, Param, task, task_group


def _record_task_process(directory: str) -> None:
    """Write this task process's CPU seconds (and, asked for, its profile) into ``directory`` at exit."""
    import atexit
    import json
    import time

    import structlog

    task = structlog.contextvars.get_contextvars()
    if "ti_id" not in task:  # parsed by the DAG processor, not by a task process
        return
    at_parse = os.times()
    profiler = None
    if os.environ.get("DREAMINA_PIPELINE_PROFILE"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    wall_at_parse = time.time()

    def record() -> None:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(f"{directory}/{os.getpid()}.prof")
        ended = os.times()
        facts = {
            "dag_id": task.get("dag_id"),
            "task_id": task.get("task_id"),
            "map_index": task.get("map_index"),
            "try_number": task.get("try_number"),
            "started_at": wall_at_parse,
            "seconds": time.time() - wall_at_parse,
            "cpu": ended.user + ended.system,
            "cpu_before_parse": at_parse.user + at_parse.system,
        }
        Path(directory, f"{os.getpid()}.json").write_text(json.dumps(facts))

    atexit.register(record)


if os.environ.get("DREAMINA_PIPELINE_TASK_STATS"):
    _record_task_process(os.environ["DREAMINA_PIPELINE_TASK_STATS"])

VARIANTS = os.environ.get("DREAMINA_PIPELINE_VARIANTS", "provider,floor").split(",")
VIDEOS = Asset(name="dreamina_videos")
DESTINATION = "{{ params.output_dir }}"
RETRIES: dict[str, Any] = {"retries": 2, "retry_delay": timedelta(seconds=2)}
PARAMS = {
    "count": Param(2, type="integer", minimum=1),
    "image": Param("", type="string"),
    "output_dir": Param("", type="string"),
    # The floor's wait and file size; the provider's come from the emulator's settings.
    "seconds": Param(60, type="number", minimum=0),
    "output_bytes": Param(1_000_000, type="integer", minimum=1),
}


@task
def rows(params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per generation, each its own prompt and seed (one distinct paid input each)."""
    assert params is not None
    return [
        {"prompt": f"Pipeline benchmark row {index}: a paper boat drifts down a rainy street", "seed": index}
        for index in range(int(params["count"]))
    ]


@task
def publish(stored: list[list[str]]) -> list[str]:
    """Every stored file of the run, once each row is saved."""
    return [uri for uris in stored for uri in uris]


def _dag(dag_id: str, description: str) -> DAG:
    return DAG(
        dag_id=dag_id,
        description=description,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        # The pool and the deployment's slots bound the run, not the DAG.
        max_active_tasks=4096,
        tags=["dreamina", "benchmark"],
        params=PARAMS,
    )


if {"provider", "provider-lean"} & set(VARIANTS):
    from airflow_provider_dreamina.operators.dreamina import (
        DreaminaDownloadOperator,
        DreaminaImageToVideoOperator,
    )

    def provider_row(generate_class: type[Any], download_class: type[Any]) -> Any:
        @task_group(group_id="video")
        def row(prompt: str, seed: int) -> Any:
            """One row: a generation waited for in the triggerer, then its verified download."""
            generate = generate_class(
                task_id="generate",
                prompt=prompt,
                image_url="{{ params.image }}",
                seed=seed,
                pool="dreamina",
                wait_for_completion=True,
                deferrable=True,
                poll_interval=10,
                timeout=60 * 60,
                **RETRIES,
            )
            download = download_class(
                task_id="download",
                generation_input=generate.output,  # names the request too (as the content pipeline)
                destination=DESTINATION,
                outlets=[VIDEOS],
                **RETRIES,
            )
            return download.output

        return row

    if "provider" in VARIANTS:
        with _dag("dreamina_pipeline_bench", "Pipeline benchmark: the provider"):
            row = provider_row(DreaminaImageToVideoOperator, DreaminaDownloadOperator)
            publish(row.expand_kwargs(rows()))

    if "provider-lean" in VARIANTS:
        # Diagnostic: what the operators' two extra links cost. Airflow stores each link as an
        # XCom (a write through the Execution API) whenever a task defers or ends.
        class LeanGenerate(DreaminaImageToVideoOperator):
            operator_extra_links = ()

        class LeanDownload(DreaminaDownloadOperator):
            operator_extra_links = ()

        with _dag("dreamina_pipeline_lean", "Pipeline benchmark: the provider without extra links"):
            publish(provider_row(LeanGenerate, LeanDownload).expand_kwargs(rows()))


if "floor" in VARIANTS:

    class FloorWait(BaseOperator):
        """Airflow's own deferrable wait of ``seconds``, resumed on a worker like the provider's generate.

        It takes the row's prompt and seed as the provider's operator does (so each try renders them
        from the row), and returns an id for the download, as a generation's request id.
        """

        template_fields = ("prompt", "seed", "seconds")

        def __init__(self, *, prompt: str, seed: int | str, seconds: float | str, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.prompt = prompt
            self.seed = seed
            self.seconds = seconds

        def execute(self, context: Any) -> None:
            from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

            self.defer(
                trigger=TimeDeltaTrigger(timedelta(seconds=float(self.seconds))),
                method_name="execute_complete",
                timeout=timedelta(hours=1),
            )

        def execute_complete(self, context: Any, event: Any = None) -> str:
            return f"floor-{context['run_id']}-{self.seed}"

    @task(outlets=[VIDEOS], **RETRIES)
    def floor_download(
        request_id: str, params: dict[str, Any] | None = None, outlet_events: Any = None
    ) -> list[str]:
        """Write as many bytes as the provider's video has, and announce the file."""
        assert params is not None
        target = Path(params["output_dir"]) / f"{request_id.rsplit('-', 1)[-1]}.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        remaining, piece = int(params["output_bytes"]), b"\0" * (1 << 20)
        with target.open("wb") as handle:
            while remaining > 0:
                remaining -= handle.write(piece[:remaining])
        outlet_events[VIDEOS].extra = {"uri": target.as_uri(), "bytes": target.stat().st_size}
        return [target.as_uri()]

    @task_group(group_id="video")
    def floor_row(prompt: str, seed: int) -> Any:
        """One row: a deferred wait in the pool, then a plain write of what it names."""
        wait = FloorWait(
            task_id="generate",
            prompt=prompt,
            seed=seed,
            seconds="{{ params.seconds }}",
            pool="dreamina",
            **RETRIES,
        )
        return floor_download.override(task_id="download")(wait.output)

    with _dag("dreamina_pipeline_floor", "Pipeline benchmark: Airflow's floor for the same shape"):
        publish(floor_row.expand_kwargs(rows()))
