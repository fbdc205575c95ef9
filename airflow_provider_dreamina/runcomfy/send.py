"""The one loop that sends a call and reads its answer, as a sync and an async twin.

The twins differ only in I/O; every decision is made by ``retries.Attempts`` (when to send again,
what a failure after a paid call means) and ``answers`` (what an answer means). Each attempt
(request and whole answer) has one wall-clock deadline (``deadlines.seconds_left``: the
connection's ``request_deadline``, within any wait around the call) that no slow drip can
stretch: the async twin wraps it in ``asyncio.wait_for``, the sync twin bounds every socket
operation by the time left (``deadlines.within``) and checks it between chunks. Answers are read
within the bounds of ``reading``.

Nothing but a :class:`DreaminaError` leaves a call: an exception this code did not foresee, in
sending, reading, parsing, deciding or logging, is ``Attempts.unforeseen`` (after a paid call:
uncertain). Errors are raised outside the ``except`` block that caught the transport error, so no
httpx exception (and no URL or header inside it) rides along as ``__context__``; and the token is
scrubbed from every attribute of every error on its way out.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from airflow_provider_dreamina.exceptions import DreaminaError
from airflow_provider_dreamina.redaction import scrub_exception
from airflow_provider_dreamina.runcomfy import answers, deadlines, reading
from airflow_provider_dreamina.runcomfy.calls import AnswerT, Call
from airflow_provider_dreamina.runcomfy.clients import POOL_TIMEOUT, SharedAsyncClient
from airflow_provider_dreamina.runcomfy.retries import Attempts, RetryPolicy
from airflow_provider_dreamina.runcomfy.settings import DreaminaSettings

# What one attempt ended with: an answer read whole, or the transport error that ended it.
Outcome = httpx.Response | httpx.HTTPError


def send(
    client: httpx.Client, call: Call[AnswerT], policy: RetryPolicy, settings: DreaminaSettings
) -> AnswerT:
    attempts = Attempts(call, policy, settings)
    failure: DreaminaError | None = None
    try:
        while True:
            seconds = attempts.seconds_for_next()
            try:
                outcome: Outcome = _exchange(client, call, settings, seconds)
            except httpx.HTTPError as error:
                outcome = error
            except reading.UnreadableAnswer as error:
                attempts.unreadable(str(error), error.status_code)
            delay = _next(attempts, outcome)
            if delay is None:
                assert isinstance(outcome, httpx.Response)
                return answers.parse(call, attempts, outcome)
            time.sleep(delay)
    except DreaminaError as error:
        failure = error
    except Exception as error:  # raised outside this block: nothing unforeseen rides along
        failure = _unforeseen(attempts, error)
    raise scrub_exception(failure, settings.token)


async def asend(
    shared: SharedAsyncClient, call: Call[AnswerT], policy: RetryPolicy, settings: DreaminaSettings
) -> AnswerT:
    attempts = Attempts(call, policy, settings)
    failure: DreaminaError | None = None
    try:
        while True:
            seconds = attempts.seconds_for_next()
            try:
                # The deadline starts once a pool slot is free: queueing behind other polls of a
                # busy triggerer is not the answer being slow.
                async with shared.slots:
                    outcome: Outcome = await asyncio.wait_for(
                        _aexchange(shared.client, call, settings), timeout=seconds
                    )
            except asyncio.TimeoutError:
                outcome = deadlines.DeadlinePassed(seconds)
            except httpx.HTTPError as error:
                outcome = error
            except reading.UnreadableAnswer as error:
                attempts.unreadable(str(error), error.status_code)
            delay = _next(attempts, outcome)
            if delay is None:
                assert isinstance(outcome, httpx.Response)
                return answers.parse(call, attempts, outcome)
            await asyncio.sleep(delay)
    except DreaminaError as error:
        failure = error
    except Exception as error:
        failure = _unforeseen(attempts, error)
    raise scrub_exception(failure, settings.token)


def _exchange(
    client: httpx.Client, call: Call[AnswerT], settings: DreaminaSettings, seconds: float
) -> httpx.Response:
    """One request and its whole answer, read within the bounds, or an exception."""
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


def _next(attempts: Attempts, outcome: Outcome) -> float | None:
    """None when ``outcome`` is a success to parse; else seconds before the next attempt (or raises)."""
    if isinstance(outcome, httpx.HTTPError):
        return attempts.after_transport_error(outcome)
    failure = answers.error_for(attempts.call, outcome, attempts.settings)
    return None if failure is None else attempts.after_error_answer(failure)


def _unforeseen(attempts: Attempts, error: Exception) -> DreaminaError:
    try:
        attempts.unforeseen(error)
    except DreaminaError as typed:
        return typed
    raise AssertionError("unforeseen() always raises")  # pragma: no cover
