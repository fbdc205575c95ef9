"""DAGs the end-to-end tests need beyond the examples: each waits on a request the test steers.

The image comes from the Variable ``dreamina_e2e_image`` (a local file, sent inline), so the DAGs
parse without touching the emulator.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG

from airflow_provider_dreamina.operators.dreamina import DreaminaImageToVideoOperator

IMAGE = "{{ var.value.dreamina_e2e_image }}"
COMMON: dict[str, Any] = {
    "schedule": None,
    "start_date": datetime(2026, 1, 1),
    "catchup": False,
    "tags": ["dreamina", "e2e"],
}

# Marked failed by the test while deferred: the trigger's on_kill (Airflow 3.3+) must cancel.
with DAG(dag_id="dreamina_e2e_mark_failed", **COMMON):
    DreaminaImageToVideoOperator(
        task_id="generate",
        prompt="A queued request that the user gives up on",
        image_url=IMAGE,
        wait_for_completion=True,
        deferrable=True,
        poll_interval=1,
    )

# Its trigger gives up on a run of status faults; the retry must reattach, not pay again.
# `dreamina_noretry` has max_retries 0, so every injected fault reaches the trigger, and
# max_error_seconds=0 lets the count of failed polls alone decide when the trigger gives up.
with DAG(dag_id="dreamina_e2e_reattach", **COMMON):
    DreaminaImageToVideoOperator(
        task_id="generate",
        prompt="A request whose status polls fail for a while",
        image_url=IMAGE,
        dreamina_conn_id="dreamina_noretry",
        wait_for_completion=True,
        deferrable=True,
        poll_interval=1,
        max_error_seconds=0,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )

# The trigger's own deadline passes while the request is still queued: it must cancel it.
with DAG(dag_id="dreamina_e2e_timeout", **COMMON):
    DreaminaImageToVideoOperator(
        task_id="generate",
        prompt="A request that stays queued past the deadline",
        image_url=IMAGE,
        wait_for_completion=True,
        deferrable=True,
        poll_interval=1,
        timeout=6,
    )

# Cleared by the test once it succeeded: "reuse" must not pay again, "regenerate" must.
for on_clear in ("reuse", "regenerate"):
    with DAG(dag_id=f"dreamina_e2e_clear_{on_clear}", **COMMON):
        DreaminaImageToVideoOperator(
            task_id="generate",
            prompt="A request the user clears to get another variation",
            image_url=IMAGE,
            wait_for_completion=True,
            deferrable=True,
            poll_interval=1,
            on_clear=on_clear,
        )
