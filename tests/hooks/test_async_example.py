"""The hook's async methods as the docs show them: example_dags/dreamina_async_hook.py, run for real."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Awaitable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from airflow_provider_dreamina.emulator import EmulatorHandle
from airflow_provider_dreamina.hooks.dreamina import DreaminaHook
from tests.helpers import fast_hook, sample_input

EXAMPLE = Path(__file__).resolve().parents[2] / "example_dags" / "dreamina_async_hook.py"
T = TypeVar("T")


def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dreamina_async_hook", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(coroutine: Awaitable[T]) -> T:
    async def scoped() -> T:
        try:
            return await coroutine
        finally:
            await DreaminaHook.aclose_shared_clients()

    return asyncio.run(scoped())


def test_check_funds_asks_balance_and_price_at_once(emulator: EmulatorHandle) -> None:
    emulator.configure(balance_usd=12.5, price_usd=0.5)
    funds: dict[str, Any] = run(example().check_funds.function())
    assert funds == {"balance_usd": 12.5, "price_usd": 0.5, "generations_affordable": 25}
    calls = emulator.counters()["calls"]
    assert (calls["balance"], calls["model"], calls["submit"]) == (1, 1, 0)


def test_check_funds_without_an_offered_price(emulator: EmulatorHandle) -> None:
    emulator.configure(balance_usd=12.5, offer_model_info=False)
    funds = run(example().check_funds.function())
    assert funds["price_usd"] is None and funds["generations_affordable"] is None


def test_follow_waits_for_several_requests_side_by_side(emulator: EmulatorHandle) -> None:
    hook = fast_hook()
    request_ids = [hook.submit(sample_input(emulator, seed=seed)).request_id for seed in (1, 2, 3)]
    outputs = run(example().follow.function(request_ids, poll_interval=0.1, timeout=30))
    assert [len(urls) for urls in outputs] == [1, 1, 1]
    assert all(request_id in urls[0] for request_id, urls in zip(request_ids, outputs, strict=True))
    assert emulator.counters()["submissions"] == 3
