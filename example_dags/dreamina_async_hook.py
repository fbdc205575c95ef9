"""The hook's async methods in ``async def`` tasks (Airflow 3.2+ runs them on the worker's event loop).

``check_funds`` asks RunComfy for the balance and the model's price at once, before a batch is
planned; ``follow`` waits for several requests side by side, for requests submitted elsewhere (by
hand in RunComfy's dashboard, or by another system) that a DAG should pick up. Neither pays for
anything: paying is the submit operator's job, with an intent recorded first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG, task

from airflow_provider_dreamina.defaults import DEFAULT_MODEL_ID


# [START howto_hook_async_balance]
@task
async def check_funds(model_id: str = DEFAULT_MODEL_ID) -> dict[str, Any]:
    """The balance and the price of one generation, asked at the same time."""
    import asyncio

    from airflow_provider_dreamina.hooks.dreamina import DreaminaHook

    hook = DreaminaHook()
    balance, info = await asyncio.gather(hook.aget_balance(), hook.aget_model_info(model_id))
    price = info.base_price_usd if info is not None else None
    return {
        "balance_usd": balance,
        "price_usd": price,
        "generations_affordable": int(balance // price) if balance is not None and price else None,
    }


# [END howto_hook_async_balance]


# [START howto_hook_async_follow]
@task
async def follow(request_ids: list[str], poll_interval: float = 10, timeout: float = 3600) -> list[list[str]]:
    """Wait for several requests side by side; each one's output URLs, in the order given."""
    import asyncio

    from airflow_provider_dreamina.hooks.dreamina import DreaminaHook

    hook = DreaminaHook()
    waits = (hook.await_result(rid, poll_interval=poll_interval, timeout=timeout) for rid in request_ids)
    results = await asyncio.gather(*waits)
    return [result.output_urls for result in results]


# [END howto_hook_async_follow]

with DAG(
    dag_id="dreamina_async_hook",
    description="The hook's async methods in async tasks (Airflow 3.2+)",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["dreamina", "example"],
    params={"request_ids": []},
    # The param renders as the list it is, not as its text.
    render_template_as_native_obj=True,
    doc_md=__doc__,
) as dag:
    check_funds()
    follow("{{ params.request_ids }}")
