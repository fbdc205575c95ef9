"""The one loop that sends a call and reads its answer, as a sync and an async twin.

The twins differ only in I/O; every decision is made by ``retries`` and ``answers``. Each attempt
(request and whole answer) has one wall-clock deadline, the connection's ``request_deadline``,
that no slow drip can stretch: the async twin wraps it in ``asyncio.wait_for``, the sync twin
bounds every socket operation by the time left (``deadlines``) and checks it between chunks.
Answers are read within the bounds of ``reading``. After a paid submit, *any* failure to read or
parse the answer is :class:`DreaminaSubmitUncertainError`: the request may exist.

Errors are raised outside the ``except`` block that caught the transport error, so no httpx
exception (and no URL or header inside it) rides along as ``__context__``; and the token is
scrubbed from every attribute of every error on its way out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time

import httpx

from airflow_provider_dreamina.exceptions import DreaminaError
from airflow_provider_dreamina.redaction import scrub_exception
from airflow_provider_dreamina.runcomfy import answers, deadlines, reading
from airflow_provider_dreamina.runcomfy.calls import AnswerT, Call
from airflow_provider_dreamina.runcomfy.clients import POOL_TIMEOUT, SharedAsyncClient
from airflow_provider_dreamina.runcomfy.retries import RetryPolicy, submit_uncertain
from airflow_provider_dreamina.runcomfy.settings import DreaminaSettings


def send(
    client: httpx.Client, call: Call[AnswerT], policy: RetryPolicy, settings: DreaminaSettings
) -> AnswerT:
    try:
        for attempt in itertools.count():
            response: httpx.Response | None = None
            transport_error: httpx.HTTPError | None = None
            unreadable: reading.UnreadableAnswer | None = None
            unexpected: Exception | None = None
            try:
                response = _exchange(client, call, settings)
            except httpx.HTTPError as error:
                transport_error = error
            except reading.UnreadableAnswer as error:
                unreadable = error
            except Exception as error:
                unexpected = error
            _raise_unreadable(call, unreadable, unexpected)
            delay = _next_delay(call, attempt, policy, settings, response, transport_error)
            if delay is None:
                assert response is not None
                return _parse(call, response)
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover
    except DreaminaError as error:
        scrub_exception(error, settings.token)
        raise


async def asend(
    shared: SharedAsyncClient, call: Call[AnswerT], policy: RetryPolicy, settings: DreaminaSettings
) -> AnswerT:
    try:
        for attempt in itertools.count():
            response: httpx.Response | None = None
            transport_error: httpx.HTTPError | None = None
            unreadable: reading.UnreadableAnswer | None = None
            unexpected: Exception | None = None
            try:
                # The deadline starts once a pool slot is free: queueing behind other polls of a
                # busy triggerer is not the answer being slow.
                async with shared.slots:
                    response = await asyncio.wait_for(
                        _aexchange(shared.client, call, settings), timeout=settings.request_deadline
                    )
            except asyncio.TimeoutError:
                transport_error = deadlines.DeadlinePassed(settings.request_deadline)
            except httpx.HTTPError as error:
                transport_error = error
            except reading.UnreadableAnswer as error:
                unreadable = error
            except Exception as error:
                unexpected = error
            _raise_unreadable(call, unreadable, unexpected)
            delay = _next_delay(call, attempt, policy, settings, response, transport_error)
            if delay is None:
                assert response is not None
                return _parse(call, response)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover
    except DreaminaError as error:
        scrub_exception(error, settings.token)
        raise


def _exchange(client: httpx.Client, call: Call[AnswerT], settings: DreaminaSettings) -> httpx.Response:
    """One request and its whole answer, read within the bounds, or an exception."""
    seconds = settings.request_deadline
    with deadlines.within(seconds) as deadline:
        remaining = max(0.001, deadline - time.monotonic())
        timeout = httpx.Timeout(
            min(settings.timeout, remaining),
            connect=min(settings.connect_timeout, remaining),
            pool=min(POOL_TIMEOUT, remaining),
        )
        try:
            with client.stream(
                call.method, call.url(settings), json=call.json, params=call.params, timeout=timeout
            ) as streamed:
                body = reading.read_body(streamed, deadline, seconds)
        except httpx.TimeoutException as error:
            if isinstance(error, deadlines.DeadlinePassed) or time.monotonic() < deadline:
                raise
            # The socket timed out because the deadline left it no more time: say so.
            raise deadlines.DeadlinePassed(seconds) from None
    return _answer(streamed, body)


async def _aexchange(
    client: httpx.AsyncClient, call: Call[AnswerT], settings: DreaminaSettings
) -> httpx.Response:
    async with client.stream(call.method, call.url(settings), json=call.json, params=call.params) as streamed:
        body = await reading.aread_body(streamed)
    return _answer(streamed, body)


def _answer(streamed: httpx.Response, body: bytes) -> httpx.Response:
    # A complete, already read answer: what ``answers`` reads the status, headers and body of.
    return httpx.Response(
        streamed.status_code, headers=streamed.headers, content=body, request=streamed.request
    )


def _raise_unreadable(
    call: Call[AnswerT], unreadable: reading.UnreadableAnswer | None, unexpected: Exception | None
) -> None:
    """Raise for an answer that broke a bound, or for anything else that went wrong in between."""
    if unexpected is not None:
        if call.paid:  # whatever it was, the POST may have been paid for
            raise submit_uncertain(call, f"{type(unexpected).__name__} while reading the answer")
        raise unexpected
    if unreadable is None:
        return
    if call.paid:
        raise submit_uncertain(call, str(unreadable))
    raise answers.unreadable(call, unreadable.status_code, str(unreadable))


def _parse(call: Call[AnswerT], response: httpx.Response) -> AnswerT:
    try:
        return answers.parse(call, response)
    except DreaminaError as error:
        if not call.paid:
            raise
        reason = str(error)
    # Created or not, the request id is lost: resending could pay twice.
    raise submit_uncertain(call, reason)


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
        if isinstance(transport_error, deadlines.DeadlinePassed):
            # A whole deadline spent: retrying would multiply it (a drip would hold a poll for
            # max_retries + 1 deadlines). The caller's own policy decides what comes next.
            call = dataclasses.replace(call, max_retries=0)
        return policy.after_error(call, attempt, transport_error, settings)
    assert response is not None
    failure = answers.error_for(call, response, settings)
    if failure is None:
        return None
    return policy.after_failure(call, attempt, failure)
