"""A daily content pipeline: one video per row of a batch file, optionally reviewed by a person.

Each row of ``data/batch.jsonl`` holds a prompt and an image. Each row is one instance of the
mapped task group ``video``: a deferrable generation in the ``dreamina`` pool, then the download
of that generation's video. Create the pool first, counting deferred tasks, so that it caps how
many generations are in flight (and paid for) at once, not only how many are submitting::

    airflow pools set dreamina 4 "Dreamina generations" --include-deferred

Mapping the group, rather than generations and downloads separately, keeps rows independent: a
row whose generation fails leaves every other row's video downloaded, instead of leaving the
whole mapped download ``upstream_failed`` with videos already paid for. Each download records the
submitted input (prompt, seed, frames) in the manifest beside its video, and announces it on the
``dreamina_videos`` asset, which the "Dreamina videos" gallery in the Airflow UI lists.

Before anything is paid for, ``plan`` estimates the batch (rows times the price of a generation)
and logs it per row and in total; a batch over the ``budget_usd`` param, or over the balance left
above the connection's ``min_balance_usd``, fails the run before any submission.

With the ``review`` param on, each row then waits for a person (Browse → Required Actions, or the
link in the request): **Approve**, **Regenerate** (once per row, with a new seed; the new video
is then reviewed with Approve / Reject) or **Reject**. Waiting holds no worker slot. Only approved
videos are published; with ``review`` off every video is.

When every row is decided, ``publish`` emits one event on the ``dreamina_daily_videos`` asset,
listing the published files and what they actually cost (``total_cost_usd``,
``cost_per_second_usd``); that event schedules ``dreamina_asset_consumer``. If a row failed, clear
it from the UI: the other rows are not generated again, and ``publish`` runs once the batch is
complete. The UI shows each mapped row by the start of its prompt.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import DAG, Asset, Param, task, task_group

from airflow_provider_dreamina.links import gallery_url
from airflow_provider_dreamina.operators.dreamina import (
    DreaminaDownloadOperator,
    DreaminaImageToVideoOperator,
)

try:
    from airflow.sdk.exceptions import AirflowSkipException
except ImportError:  # Airflow 3.1
    from airflow.exceptions import AirflowSkipException

DATA = Path(__file__).parent / "data"
DAILY_VIDEOS = Asset(name="dreamina_daily_videos", uri="dreamina://videos/daily")
# Every stored video is announced here; the "Dreamina videos" gallery lists these events.
VIDEOS = Asset(name="dreamina_videos")
# Runs triggered without a logical date (allowed since Airflow 3) have no `ds`: fall back to run_after.
DAY = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"
OUTPUT = "{{ var.value.get('dreamina_output_dir', '/tmp/dreamina-videos') }}/pipeline/" + DAY
GROUP = "video"
APPROVE, REGENERATE, REJECT = "Approve", "Regenerate", "Reject"


def _result(take: str) -> str:
    """Jinja for this row's result of the generation task ``take`` (mapped: pull by map index)."""
    return f"(ti.xcom_pull(task_ids='{GROUP}.{take}', map_indexes=ti.map_index) or {{}})"


def _row_label(take: str) -> str:
    """The start of the row's prompt, as the UI labels mapped rows (``map_index_template``)."""
    return "{{ ((" + _result(take) + ").get('input') or {}).get('prompt', '') | truncate(48, leeway=0) }}"


PROMPT_LABEL = "{{ task.prompt | truncate(48, leeway=0) }}"


# [START howto_dreamina_review_body]
def _review_body(take: str) -> str:
    """The review request: what was asked, what it cost, and links to the stored video."""
    result = _result(take)
    return (
        "{% set result = " + result + " %}"
        "{% set asked = result.get('input') or {} %}"
        "{% set request_id = result.get('request_id', '') %}"
        "**Prompt:** {{ asked.get('prompt', '') }}\n\n"
        "| seed | frames | cost | request |\n|---|---|---|---|\n"
        "| {{ 'random (-1)' if asked.get('seed', -1) == -1 else asked.get('seed') }} "
        "| {{ asked.get('frames', '') }} "
        "| {{ '$%.2f' | format(result.get('cost_usd', result.get('cost')) or 0) }} "
        "| `{{ request_id }}` |\n\n"
        "[Watch the video]({{ gallery_url(request_id, 'video') }}) · "
        "[Poster]({{ gallery_url(request_id, 'poster') }}) · "
        "[In the gallery]({{ gallery_url(request_id) }})\n"
    )


# [END howto_dreamina_review_body]


# [START howto_dreamina_review_steps]
def _review_wanted(context: Any) -> None:
    """Skip the review (and with it any regeneration) unless the run asked for one."""
    if not context["params"].get("review"):
        raise AirflowSkipException("review is off: the video is published as it is")


def _answer(ti: Any, review_task: str) -> str | None:
    """What the person chose in this row's review task, None when it did not ask."""
    answer = ti.xcom_pull(task_ids=f"{GROUP}.{review_task}", map_indexes=ti.map_index) or {}
    chosen = answer.get("chosen_options") or []
    return str(chosen[0]) if chosen else None


def _regeneration_asked(context: Any) -> None:
    """Skip the second take (and its download and review) unless the reviewer asked for it."""
    if _answer(context["ti"], "review") != REGENERATE:
        raise AirflowSkipException("the reviewer did not ask for another take")


def new_seed(*parts: Any) -> int:
    """A seed for the second take, derived from the run, the row and the first take's request.

    Derived rather than random, so that a retry of the regeneration renders the same seed and
    reattaches to the request it already paid for instead of paying for another.
    """
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") % (2**31 - 1)


# [END howto_dreamina_review_steps]


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


# [START howto_dreamina_plan]
@task(retries=0)  # the price, the budget and the balance do not change on a retry
def plan(rows: list[dict[str, str]], *, params: Any = None) -> list[dict[str, Any]]:
    """Estimate the batch against budget_usd and the balance; the rows pass on only if it fits."""
    from airflow_provider_dreamina.submission.spend import plan_batch

    return plan_batch(rows, budget_usd=params["budget_usd"]).rows


# [END howto_dreamina_plan]


# [START howto_dreamina_verdict]
@task(trigger_rule="none_failed_min_one_success", map_index_template=_row_label("generate"))
def verdict(**context: Any) -> list[str]:
    """The row's videos to publish: all without review, else only what a person approved."""
    ti = context["ti"]

    def stored(download_task: str) -> list[str]:
        return list(ti.xcom_pull(task_ids=f"{GROUP}.{download_task}", map_indexes=ti.map_index) or [])

    first = _answer(ti, "review")
    if first is None or first == APPROVE:  # no review asked for, or approved as it was
        return stored("download")
    if first == REGENERATE and _answer(ti, "review_again") == APPROVE:
        return stored("download_again")
    return []


# [END howto_dreamina_verdict]


# [START howto_dreamina_row]
@task_group(group_id=GROUP)
def video(prompt: str, image_url: str) -> Any:
    """One row: generate, save, and (with ``review``) ask a person; returns what to publish."""
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
        map_index_template=PROMPT_LABEL,
    )
    download = DreaminaDownloadOperator(
        task_id="download",
        # The submit task's result names the request and what was asked (the manifest records it).
        generation_input=generate.output,
        destination=OUTPUT,
        outlets=[VIDEOS],
        retries=2,
        map_index_template=_row_label("generate"),
    )
    review = HITLOperator(
        task_id="review",
        subject="Review: " + _row_label("generate"),
        body=_review_body("generate"),
        options=[APPROVE, REGENERATE, REJECT],
        pre_execute=_review_wanted,
        map_index_template=_row_label("generate"),
    )
    regenerate = DreaminaImageToVideoOperator(
        task_id="regenerate",
        prompt=prompt,
        image_url=image_url,
        image_roots=[str(DATA)],
        seed="{{ new_seed(run_id, ti.map_index, " + _result("generate") + ".get('request_id')) }}",
        pre_execute=_regeneration_asked,
        pool="dreamina",
        wait_for_completion=True,
        deferrable=True,
        poll_interval=10,
        timeout=2 * 60 * 60,
        retries=2,
        map_index_template=PROMPT_LABEL,
    )
    download_again = DreaminaDownloadOperator(
        task_id="download_again",
        generation_input=regenerate.output,
        destination=OUTPUT,
        outlets=[VIDEOS],
        retries=2,
        map_index_template=_row_label("regenerate"),
    )
    review_again = HITLOperator(
        task_id="review_again",
        subject="Review the regenerated video: " + _row_label("regenerate"),
        body=_review_body("regenerate"),
        options=[APPROVE, REJECT],
        map_index_template=_row_label("regenerate"),
    )
    published = verdict()
    # Each optional task decides for itself (pre_execute) whether its row needs it: a branch
    # operator inside a mapped task group does not skip per row in Airflow 3.3.
    download >> review >> regenerate
    download_again >> review_again
    [download, review, review_again] >> published
    return published


# [END howto_dreamina_row]


# [START howto_dreamina_publish]
@task(outlets=[DAILY_VIDEOS])
def publish(approved: list[list[str]], *, outlet_events: Any = None) -> list[str]:
    """Announce the day's published videos in one asset event: the files and what they cost."""
    from airflow_provider_dreamina.submission.spend import actual_spend, read_manifests

    files = [uri for uris in approved for uri in uris]
    # count, total_cost_usd, cost_per_second_usd, from the manifests beside the published videos
    outlet_events[DAILY_VIDEOS].extra = {"files": files, **actual_spend(read_manifests(files))}
    return files


# [END howto_dreamina_publish]


# [START howto_dreamina_pipeline_dag]
with DAG(
    dag_id="dreamina_content_pipeline",
    description="Daily batch of image-to-video generations, optionally reviewed, then announced",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["dreamina", "example"],
    params={
        "budget_usd": Param(
            None, type=["null", "number"], minimum=0, description="most the batch may cost; empty: no budget"
        ),
        "review": Param(
            False,
            type="boolean",
            description="Ask a person to approve, regenerate (once) or reject each video before publishing",
        ),
    },
    user_defined_macros={"gallery_url": gallery_url, "new_seed": new_seed},
    doc_md=__doc__,
) as dag:
    publish(video.expand_kwargs(plan(read_batch())))
# [END howto_dreamina_pipeline_dag]
