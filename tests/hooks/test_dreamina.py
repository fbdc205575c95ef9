"""DreaminaHook against the emulator over real HTTP, sync and async alike: the API surface."""

from __future__ import annotations

import inspect
import json
import logging
import time

import httpx
import pytest

from airflow_provider_dreamina.emulator import EmulatorHandle
from airflow_provider_dreamina.exceptions import (
    DreaminaConfigurationError,
    DreaminaError,
    DreaminaInvalidInputError,
)
from airflow_provider_dreamina.hooks.dreamina import (
    DreaminaHook,
    DreaminaSettings,
)
from airflow_provider_dreamina.models import (
    RequestResult,
    RequestState,
    RequestStatus,
    SubmittedRequest,
)
from tests.helpers import (
    Api,
    fast_hook,
    sample_input,
    wait_until_state,
)

# -- the documented shapes and quirks -------------------------------------------------------


def test_submit_status_result_follow_a_job_to_success(emulator: EmulatorHandle, api: Api) -> None:
    hook = fast_hook()
    submitted = api(hook, "submit", sample_input(emulator))
    assert isinstance(submitted, SubmittedRequest)
    assert submitted.status_url and submitted.status_url.startswith("http://127.0.0.1")

    status = api(hook, "get_status", submitted.request_id)
    assert isinstance(status, RequestStatus)
    assert status.state is RequestState.QUEUED
    assert status.queue_position is not None and status.queue_position >= 1

    running = api(hook, "get_result", submitted.request_id)
    assert isinstance(running, RequestResult)
    assert not running.state.is_terminal
    assert running.output_urls == []

    wait_until_state(hook, submitted.request_id, RequestState.SUCCEEDED)
    status = api(hook, "get_status", submitted.request_id)
    assert status.status == "completed"  # the status endpoint's word for success
    assert status.queue_position is None
    result = api(hook, "get_result", submitted.request_id)
    assert result.status == "succeeded"  # the result endpoint's word for it
    assert result.state is RequestState.SUCCEEDED
    assert len(result.output_urls) == 1 and ".mp4" in result.output_urls[0]


def test_unknown_fields_are_kept_and_unknown_words_are_not_terminal(
    emulator: EmulatorHandle, api: Api
) -> None:
    emulator.configure(extra_fields=True)
    emulator.script_jobs(status_words={"in_progress": "processing"}, queue_seconds=0, run_seconds=2)
    hook = fast_hook()
    submitted = api(hook, "submit", sample_input(emulator))
    assert submitted.model_extra, "unknown fields must be kept"
    time.sleep(0.2)
    status = api(hook, "get_status", submitted.request_id)
    assert status.status == "processing"
    assert status.state is RequestState.RUNNING
    assert not status.state.is_terminal


# -- connection, secrets, shape of the API --------------------------------------------------


def test_test_connection_tells_the_three_cases_apart(
    emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok, message = DreaminaHook().test_connection()
    assert ok, message
    emulator.configure(token="rotated-token-value")
    ok, message = DreaminaHook().test_connection()
    assert not ok
    assert "token rejected" in message
    monkeypatch.setenv(
        "AIRFLOW_CONN_DREAMINA_DEFAULT",
        json.dumps({"conn_type": "dreamina", "host": "http://127.0.0.1:9", "password": "secret-token-1"}),
    )
    ok, message = DreaminaHook().test_connection()
    assert not ok
    assert "127.0.0.1:9" in message


def test_token_never_reaches_logs_or_errors(
    emulator: EmulatorHandle, caplog: pytest.LogCaptureFixture, api: Api
) -> None:
    caplog.set_level(logging.DEBUG)
    emulator.inject_fault("status", "500", count=1)
    hook = fast_hook()
    submitted = api(hook, "submit", sample_input(emulator))
    api(hook, "get_status", submitted.request_id)
    emulator.configure(token="not-the-same")
    texts = []
    for call in ("get_status", "get_result", "cancel"):
        with pytest.raises(DreaminaError) as caught:
            api(fast_hook(), call, submitted.request_id)
        texts.append(str(caught.value))
        texts.append(repr(caught.value))
    assert emulator.token not in caplog.text
    assert all(emulator.token not in text for text in texts)
    assert emulator.token not in repr(hook.settings)


def test_missing_token_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DREAMINA_DEFAULT", json.dumps({"conn_type": "dreamina"}))
    with pytest.raises(DreaminaConfigurationError, match="password"):
        DreaminaHook().get_status("x")


def test_settings_from_a_typical_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_DREAMINA_DEFAULT",
        json.dumps(
            {
                "conn_type": "dreamina",
                "host": "model-api.example.org",
                "password": "secret-token-1",
                "extra": {"allowed_output_hosts": "cdn.example.org, 127.0.0.1", "timeout": "12"},
            }
        ),
    )
    settings = DreaminaHook().settings
    assert settings.base_url == "https://model-api.example.org"
    assert settings.timeout == 12
    assert settings.output_url_allowed("https://files.runcomfy.net/a.mp4")
    assert not settings.output_url_allowed("http://files.runcomfy.net/a.mp4")
    assert not settings.output_url_allowed("https://runcomfy.net.evil.org/a.mp4")
    assert settings.output_url_allowed("http://127.0.0.1:8000/a.mp4")
    assert settings.output_url_allowed("https://cdn.example.org/a.mp4")
    assert not settings.output_url_allowed("ftp://cdn.example.org/a.mp4")


def test_invalid_request_ids_never_reach_the_network(emulator: EmulatorHandle, api: Api) -> None:
    for bad in ("../../v1/models/x", "a b", "", "id?x=1", "..", "."):
        with pytest.raises(DreaminaInvalidInputError, match="request_id"):
            api(fast_hook(), "get_status", bad)
    assert sum(emulator.counters()["calls"].values()) == 0


def test_sync_and_async_methods_have_the_same_signatures() -> None:
    twins = {
        name: f"a{name}" for name in ("get_status", "get_result", "cancel", "get_model_info", "get_balance")
    }
    for sync_name, async_name in {**twins, "wait": "await_result"}.items():
        sync, async_ = getattr(DreaminaHook, sync_name), getattr(DreaminaHook, async_name)
        assert inspect.iscoroutinefunction(async_), async_name
        assert inspect.signature(sync).parameters.keys() == inspect.signature(async_).parameters.keys()


def test_a_paid_submit_has_no_async_twin() -> None:
    # Paying is a worker's job, with an intent recorded first; the triggerer only waits.
    assert not hasattr(DreaminaHook, "asubmit")
    assert not hasattr(DreaminaHook, "aprepare_image")


def test_http_transport_is_injectable() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer injected-token"
        assert request.headers["User-Agent"].startswith("airflow-provider-dreamina/")
        return httpx.Response(200, json={"request_id": "r1", "status": "in_queue", "queue_position": 3})

    hook = DreaminaHook(transport=httpx.MockTransport(answer))
    hook._settings = DreaminaSettings(conn_id="x", base_url="https://api.test", token="injected-token")
    assert hook.get_status("r1").queue_position == 3
