"""Retries, backoff, Retry-After and the paid-submit rule, counted by the emulator."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time

import httpx
import pytest

from airflow_provider_dreamina.emulator import EmulatorHandle
from airflow_provider_dreamina.exceptions import (
    DreaminaAuthError,
    DreaminaConnectionError,
    DreaminaInsufficientBalanceError,
    DreaminaNotFoundError,
    DreaminaRateLimitError,
    DreaminaRejectedInputError,
    DreaminaSubmitUncertainError,
)
from airflow_provider_dreamina.hooks.dreamina import (
    DreaminaHook,
)
from airflow_provider_dreamina.models import (
    ImageToVideoInput,
    RequestStatus,
)
from airflow_provider_dreamina.runcomfy.retries import maybe_paid, parse_retry_after
from airflow_provider_dreamina.runcomfy.settings import DreaminaSettings
from tests.helpers import (
    Api,
    AsyncFlakyConnectTransport,
    FlakyConnectTransport,
    data_uri,
    fast_hook,
    sample_input,
)

# -- retries, counted by the emulator -------------------------------------------------------


@pytest.mark.parametrize("kind", ["500", "429", "reset", "slow"])
def test_reads_are_retried_through_faults(emulator: EmulatorHandle, api: Api, kind: str) -> None:
    submitted = fast_hook().submit(sample_input(emulator))
    emulator.inject_fault("status", kind, count=2, retry_after=0.1, delay=3)
    hook = DreaminaHook(retry_backoff=0.01, max_retry_wait=0.2)
    if kind == "slow":
        # A read timeout is retried like any other transient fault.
        hook._settings = dataclasses.replace(hook.settings, timeout=0.5)
    status = api(hook, "get_status", submitted.request_id)
    assert status.request_id == submitted.request_id
    assert emulator.counters()["calls_per_request"][submitted.request_id]["status"] == 3


def test_rate_limit_honours_retry_after_then_gives_up(emulator: EmulatorHandle, api: Api) -> None:
    submitted = fast_hook().submit(sample_input(emulator))
    emulator.inject_fault("status", "429", count=10, retry_after=0.3)
    hook = DreaminaHook(max_retries=2, retry_backoff=5, max_retry_wait=30)
    started = time.monotonic()
    with pytest.raises(DreaminaRateLimitError) as caught:
        api(hook, "get_status", submitted.request_id)
    elapsed = time.monotonic() - started
    assert caught.value.retry_after == pytest.approx(0.3)
    # Two waits of Retry-After (0.3 s each), not the 5 s backoff.
    assert 0.6 <= elapsed < 4
    assert emulator.counters()["calls_per_request"][submitted.request_id]["status"] == 3


def test_rate_limit_without_retry_after_backs_off(emulator: EmulatorHandle) -> None:
    submitted = fast_hook().submit(sample_input(emulator))
    emulator.inject_fault("status", "429", count=1)
    status = fast_hook().get_status(submitted.request_id)
    assert status.request_id == submitted.request_id


def test_retry_after_is_capped(emulator: EmulatorHandle) -> None:
    submitted = fast_hook().submit(sample_input(emulator))
    emulator.inject_fault("status", "429", count=1, retry_after=3600)
    started = time.monotonic()
    fast_hook(max_retry_wait=0.3).get_status(submitted.request_id)
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("kind", ["500", "reset", "reset_after_send"])
def test_submit_is_never_resent_when_it_may_have_arrived(
    emulator: EmulatorHandle, api: Api, kind: str
) -> None:
    emulator.inject_fault("submit", kind, count=1)
    with pytest.raises(DreaminaSubmitUncertainError, match="not resent") as caught:
        api(fast_hook(), "submit", sample_input(emulator))
    assert caught.value.retryable is False
    counters = emulator.counters()
    assert counters["calls"]["submit"] == 1
    assert counters["submissions"] == (1 if kind == "reset_after_send" else 0)


def test_submit_read_timeout_is_not_resent(emulator: EmulatorHandle, api: Api) -> None:
    emulator.inject_fault("submit", "slow", count=1, delay=1)
    hook = fast_hook()
    hook._settings = dataclasses.replace(hook.settings, timeout=0.5)
    with pytest.raises(DreaminaSubmitUncertainError):
        api(hook, "submit", sample_input(emulator))
    # A resend would have been made before the error was raised: nothing is left to wait for (the
    # delayed submit finds its connection closed, so it reads no body and creates no request).
    assert emulator.counters()["calls"]["submit"] == 1


def test_submit_is_resent_after_a_429(emulator: EmulatorHandle, api: Api) -> None:
    emulator.inject_fault("submit", "429", count=2, retry_after=0.05)
    submitted = api(fast_hook(), "submit", sample_input(emulator))
    counters = emulator.counters()
    assert counters["calls"]["submit"] == 3
    assert counters["submissions"] == 1
    assert submitted.request_id


def test_submit_is_resent_after_a_refused_connection(emulator: EmulatorHandle, api: Api) -> None:
    if api.mode == "sync":
        hook = fast_hook(transport=FlakyConnectTransport(failures=2))
    else:
        hook = fast_hook(async_transport=AsyncFlakyConnectTransport(failures=2))
    submitted = api(hook, "submit", sample_input(emulator))
    counters = emulator.counters()
    assert counters["calls"]["submit"] == 1
    assert counters["submissions"] == 1
    assert submitted.request_id


def test_unreachable_server_is_a_connection_error(
    emulator: EmulatorHandle, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_DREAMINA_DEFAULT",
        json.dumps({"conn_type": "dreamina", "host": "http://127.0.0.1:9", "password": "secret-token-1"}),
    )
    with pytest.raises(DreaminaConnectionError, match="after 3 attempts"):
        api(fast_hook(max_retries=2), "get_status", "some-request")


def test_thousand_concurrent_polls_share_a_bounded_pool(
    emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DREAMINA_DEFAULT", emulator.connection_json(max_connections=10))
    submitted = fast_hook().submit(sample_input(emulator))
    before = emulator.counters()["connections"]
    # httpcore logs each connection it opens and closes: the pool's bound is on those open at once.
    caplog.set_level(logging.DEBUG, logger="httpcore.connection")

    async def poll_all() -> list[RequestStatus]:
        hooks = [DreaminaHook() for _ in range(1000)]
        try:
            return await asyncio.gather(*(hook.aget_status(submitted.request_id) for hook in hooks))
        finally:
            await DreaminaHook.aclose_shared_clients()

    statuses = asyncio.run(poll_all())
    assert len(statuses) == 1000
    open_now, most_open, client_opened = 0, 0, 0
    for record in caplog.records:
        if record.name == "httpcore.connection" and record.getMessage().startswith("connect_tcp.complete"):
            open_now, client_opened = open_now + 1, client_opened + 1
        elif record.name == "httpcore.connection" and record.getMessage().startswith("close.complete"):
            open_now -= 1
        most_open = max(most_open, open_now)
    assert 0 < most_open <= 10
    # The control client's own call to read the counters may open one connection too. On a busy
    # machine the polls can outlast httpx's 5 s keep-alive: a connection the pool let idle that
    # long is closed and another opened later, still never more than 10 at once.
    opened = emulator.counters()["connections"] - before
    assert client_opened <= opened <= client_opened + 1
    if client_opened == most_open:
        assert opened <= 10 + 1


def test_retry_after_parsing() -> None:
    assert parse_retry_after("2") == 2
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert 0 <= (parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") or 0) < 1


# -- what an error answer to a paid submit means --------------------------------------------


def _answering(status: int, body: dict[str, object]) -> DreaminaHook:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body)

    hook = DreaminaHook(transport=httpx.MockTransport(answer), max_retries=3, retry_backoff=0.01)
    hook._settings = DreaminaSettings(conn_id="c", base_url="https://api.test", token="t" * 32)
    return hook


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, {"error_code": 123456, "error_message": "something new"}),
        (200, {"error_code": "x"}),
        (409, {"message": "conflict"}),
        (418, {}),
        (503, {"error_code": 500001}),
        # A refusal's code on an answer that is neither a 2xx nor a 4xx proves nothing.
        (303, {"error_code": 400002}),
        # Nor on a 4xx RunComfy does not refuse with: the status may name what was created.
        (409, {"error_code": 400001}),
        (410, {"error_code": 404001}),
        (413, {"error_code": 422001}),
        (451, {"error_code": 403001}),
    ],
)
def test_an_error_answer_that_is_not_a_refusal_makes_a_paid_submit_uncertain(
    status: int, body: dict[str, object]
) -> None:
    hook = _answering(status, body)
    with pytest.raises(DreaminaSubmitUncertainError) as caught:
        hook.submit(ImageToVideoInput(prompt="p", image_urls=[data_uri(400, 400)]))
    assert maybe_paid(caught.value)


@pytest.mark.parametrize(
    ("status", "body", "refusal"),
    [
        (401, {"error_code": 400004}, DreaminaAuthError),
        (402, {}, DreaminaInsufficientBalanceError),
        (200, {"error_code": 400002}, DreaminaInsufficientBalanceError),
        (404, {"error_code": 400001}, DreaminaNotFoundError),
        (422, {"detail": [{"loc": ["body", "prompt"], "msg": "too long"}]}, DreaminaRejectedInputError),
    ],
)
def test_a_refusal_of_a_paid_submit_says_nothing_was_created(
    status: int, body: dict[str, object], refusal: type[Exception]
) -> None:
    hook = _answering(status, body)
    with pytest.raises(refusal) as caught:
        hook.submit(ImageToVideoInput(prompt="p", image_urls=[data_uri(400, 400)]))
    assert not maybe_paid(caught.value)
