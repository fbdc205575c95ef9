"""deadlines.at_most: the async bound of one attempt never swallows the caller's cancellation."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from airflow_provider_dreamina.runcomfy import deadlines


async def cancelled_as_it_completes(bound: Callable[[Awaitable[int]], Awaitable[int]]) -> str:
    """Cancel the caller in the very loop turn its awaited call completes: what happens?"""
    answered: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def call() -> int:
        return await answered

    caller = asyncio.create_task(bound(call()))
    for _ in range(3):
        await asyncio.sleep(0)
    answered.set_result(1)
    caller.cancel()
    try:
        await caller
    except asyncio.CancelledError:
        return "cancelled"
    return "went on"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Python 3.10 has only asyncio.wait_for")
def test_a_cancelled_trigger_stops_even_when_its_answer_arrives_at_that_moment() -> None:
    # asyncio.wait_for (what the send loop used) lets the caller go on, so a trigger the triggerer
    # cancelled could keep polling; the bound the send loop uses now does not.
    def with_wait_for(call: Awaitable[int]) -> Awaitable[int]:
        return asyncio.wait_for(call, 5)

    def with_at_most(call: Awaitable[int]) -> Awaitable[int]:
        return deadlines.at_most(5, call)

    outcomes: dict[str, Any] = {
        "wait_for": asyncio.run(cancelled_as_it_completes(with_wait_for)),
        "at_most": asyncio.run(cancelled_as_it_completes(with_at_most)),
    }
    assert outcomes["at_most"] == "cancelled"
    if sys.version_info < (3, 12):
        assert outcomes["wait_for"] == "went on"  # the failure this guards against, on this Python


def test_at_most_times_out() -> None:
    async def slow() -> None:
        await asyncio.sleep(10)

    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(deadlines.at_most(0.01, slow()))
