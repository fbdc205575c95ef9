"""The one loop that sends a call and reads its answer, as a sync and an async twin.

The twins differ only in I/O; every decision is made by ``retries`` and ``answers``. Errors are
raised outside the ``except`` block that caught the transport error, so no httpx exception (and
no URL or header inside it) rides along as ``__context__``.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import httpx

from airflow_provider_dreamina.runcomfy import answers
from airflow_provider_dreamina.runcomfy.calls import AnswerT, Call
from airflow_provider_dreamina.runcomfy.clients import SharedAsyncClient
from airflow_provider_dreamina.runcomfy.retries import RetryPolicy
from airflow_provider_dreamina.runcomfy.settings import DreaminaSettings


def send(
    client: httpx.Client, call: Call[AnswerT], policy: RetryPolicy, settings: DreaminaSettings
) -> AnswerT:
    for attempt in itertools.count():
        response: httpx.Response | None = None
        transport_error: httpx.HTTPError | None = None
        try:
            response = client.request(call.method, call.url(settings), json=call.json, params=call.params)
        except httpx.HTTPError as error:
            transport_error = error
        delay = _next_delay(call, attempt, policy, settings, response, transport_error)
        if delay is None:
            assert response is not None
            return answers.parse(call, response)
        time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


async def asend(
    shared: SharedAsyncClient, call: Call[AnswerT], policy: RetryPolicy, settings: DreaminaSettings
) -> AnswerT:
    for attempt in itertools.count():
        response: httpx.Response | None = None
        transport_error: httpx.HTTPError | None = None
        try:
            async with shared.slots:
                response = await shared.client.request(
                    call.method, call.url(settings), json=call.json, params=call.params
                )
        except httpx.HTTPError as error:
            transport_error = error
        delay = _next_delay(call, attempt, policy, settings, response, transport_error)
        if delay is None:
            assert response is not None
            return answers.parse(call, response)
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _next_delay(
    call: Call[AnswerT],
    attempt: int,
    policy: RetryPolicy,
    settings: DreaminaSettings,
    response: httpx.Response | None,
    transport_error: httpx.HTTPError | None,
) -> float | None:
    """None when ``response`` is a success to parse; else seconds before the next attempt (or raises)."""
    if transport_error is not None:
        return policy.after_error(call, attempt, transport_error, settings)
    assert response is not None
    failure = answers.error_for(call, response, settings)
    if failure is None:
        return None
    return policy.after_failure(call, attempt, failure)
