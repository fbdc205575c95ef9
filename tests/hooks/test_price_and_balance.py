"""DreaminaHook.get_model_info and get_balance (and async twins): RunComfy's undocumented endpoints.

Each may be missing, so none of them ever raises: an error, a missing field or an unreadable
answer is None and a log line. Answers are remembered for a minute.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest

from airflow_provider_dreamina.emulator import MODEL_ID, EmulatorHandle
from airflow_provider_dreamina.hooks.dreamina import DreaminaHook
from airflow_provider_dreamina.models import ModelInfo, RequestState
from airflow_provider_dreamina.runcomfy.settings import DEFAULT_ACCOUNT_URL
from tests.helpers import Api, fast_hook, sample_input, wait_until_state

API_HOST = "model-api.example.test"
ACCOUNT_HOST = "account.example.test"
TOKEN = "token-for-the-price-tests"


def test_model_info_tells_price_unit_and_schema(emulator: EmulatorHandle, api: Api) -> None:
    emulator.configure(price_usd=0.42)

    info = api(fast_hook(), "get_model_info", MODEL_ID)

    assert isinstance(info, ModelInfo)
    assert info.base_price_usd == 0.42
    assert info.price_unit == "output"
    assert info.input_schema is not None
    assert set(info.input_schema["properties"]) == {"prompt", "image_urls", "seed", "frames"}


def test_balance_is_usd_and_falls_by_each_succeeded_generation(emulator: EmulatorHandle, api: Api) -> None:
    emulator.configure(balance_usd=5.0, price_usd=0.5, queue_seconds=0, run_seconds=0)
    assert api(fast_hook(), "get_balance") == 5.0

    hook = fast_hook()
    submitted = hook.submit(sample_input(emulator))
    wait_until_state(hook, submitted.request_id, RequestState.SUCCEEDED)

    # A new hook: the first one remembers its answer for a minute.
    assert api(fast_hook(), "get_balance") == pytest.approx(4.5)


@pytest.mark.parametrize("switch", ["offer_model_info", "offer_balance"])
def test_an_endpoint_switched_off_is_none_and_a_log_line(
    emulator: EmulatorHandle, api: Api, switch: str, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.configure(balance_usd=5.0, **{switch: False})
    method = "get_model_info" if switch == "offer_model_info" else "get_balance"

    with caplog.at_level(logging.INFO, logger="airflow_provider_dreamina"):
        assert api(fast_hook(), method) is None

    assert "RunComfy did not tell the" in caplog.text
    assert "HTTP 404" in caplog.text


def test_a_balance_answer_without_balance_usd_is_none(
    emulator: EmulatorHandle, api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    assert emulator.config()["balance_usd"] is None  # the emulator answers {"currency": "USD"}

    with caplog.at_level(logging.INFO, logger="airflow_provider_dreamina"):
        assert api(fast_hook(), "get_balance") is None

    assert "carries no balance_usd" in caplog.text


def test_answers_are_remembered_for_a_minute(emulator: EmulatorHandle, api: Api) -> None:
    emulator.configure(balance_usd=5.0)
    hook = fast_hook()

    if api.mode == "sync":
        answers = [(hook.get_model_info(), hook.get_balance()) for _ in range(3)]
    else:

        async def ask() -> list[tuple[Any, Any]]:
            try:
                # Two hooks on one event loop share what it has read.
                return [
                    (await fast_hook().aget_model_info(), await fast_hook().aget_balance()) for _ in range(3)
                ]
            finally:
                await DreaminaHook.aclose_shared_clients()

        answers = asyncio.run(ask())

    assert len({(info.base_price_usd if info else None, balance) for info, balance in answers}) == 1
    calls = emulator.counters()["calls"]
    assert (calls["model"], calls["balance"]) == (1, 1)


class Recorder:
    """A fake RunComfy on two hosts that records where each request went and with which header."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.seen: list[tuple[str, str, str | None]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.url.host, request.url.path, request.headers.get("authorization")))
        return self.answer(request) if callable(self.answer) else self.answer


@pytest.fixture
def two_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    connection = {
        "conn_type": "dreamina",
        "host": f"https://{API_HOST}",
        "password": TOKEN,
        "extra": {"account_url": f"https://{ACCOUNT_HOST}"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_DREAMINA_DEFAULT", json.dumps(connection))


def mock_hook(recorder: Recorder) -> DreaminaHook:
    transport = httpx.MockTransport(recorder)
    return fast_hook(transport=transport, async_transport=transport)


def test_the_token_goes_only_to_the_two_configured_hosts(two_hosts: None, api: Api) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/prod/v2/balance":
            return httpx.Response(200, json={"balance_usd": "12.5", "currency": "USD"})
        return httpx.Response(200, json={"model_id": MODEL_ID, "base_price_usd": 0.5, "price_unit": "output"})

    recorder = Recorder(answer)
    hook = mock_hook(recorder)

    assert api(hook, "get_balance") == 12.5
    assert api(hook, "get_model_info", MODEL_ID).base_price_usd == 0.5

    assert recorder.seen == [
        (ACCOUNT_HOST, "/prod/v2/balance", f"Bearer {TOKEN}"),
        (API_HOST, f"/v1/models/{MODEL_ID}", f"Bearer {TOKEN}"),
    ]


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, {"text": "<html>maintenance</html>"}),
        (200, {"json": ["not", "an", "object"]}),
        (401, {"json": {"error_code": 400004, "error_message": "token not valid here"}}),
        (500, {"json": {"error_message": "down"}}),
    ],
    ids=["not-json", "not-an-object", "token-refused", "server-error"],
)
def test_anything_but_an_answer_is_none(two_hosts: None, api: Api, status: int, body: dict[str, Any]) -> None:
    hook = mock_hook(Recorder(lambda request: httpx.Response(status, **body)))

    assert api(hook, "get_balance") is None
    assert api(hook, "get_model_info", MODEL_ID) is None


def test_an_unreachable_account_host_is_none(two_hosts: None, api: Api) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused (simulated)", request=request)

    assert api(mock_hook(Recorder(refuse)), "get_balance") is None


def test_odd_fields_are_read_leniently(two_hosts: None) -> None:
    body = {"base_price_usd": "free", "price_unit": " Second ", "input_schema": "x"}

    info = mock_hook(Recorder(httpx.Response(200, json=body))).get_model_info(MODEL_ID)

    assert info is not None
    assert (info.base_price_usd, info.price_unit, info.input_schema) == (None, "second", None)


def test_the_account_url_defaults_to_runcomfys_account_host(monkeypatch: pytest.MonkeyPatch) -> None:
    connection = {"conn_type": "dreamina", "password": TOKEN}
    monkeypatch.setenv("AIRFLOW_CONN_DREAMINA_DEFAULT", json.dumps(connection))

    settings = DreaminaHook().settings

    assert settings.account_url == DEFAULT_ACCOUNT_URL == "https://api.runcomfy.net"
    assert (settings.min_balance_usd, settings.price_usd) == (None, None)
