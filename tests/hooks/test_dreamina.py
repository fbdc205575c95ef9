"""DreaminaHook against the emulator over real HTTP, sync and async alike."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from typing import Any

import httpx
import pytest

from airflow_provider_dreamina.emulator import EmulatorHandle
from airflow_provider_dreamina.exceptions import (
    DreaminaAuthError,
    DreaminaConfigurationError,
    DreaminaConnectionError,
    DreaminaError,
    DreaminaInsufficientBalanceError,
    DreaminaInvalidInputError,
    DreaminaJobCancelledError,
    DreaminaJobFailedError,
    DreaminaNotFoundError,
    DreaminaRateLimitError,
    DreaminaRejectedInputError,
    DreaminaServerError,
    DreaminaSubmitUncertainError,
    DreaminaTimeoutError,
)
from airflow_provider_dreamina.hooks.dreamina import (
    DreaminaHook,
    DreaminaSettings,
    next_poll_interval,
    parse_retry_after,
)
from airflow_provider_dreamina.models import (
    ImageToVideoInput,
    RequestResult,
    RequestState,
    RequestStatus,
    SubmittedRequest,
)
from tests.helpers import (
    Api,
    AsyncFlakyConnectTransport,
    CountingTransport,
    FlakyConnectTransport,
    data_uri,
    image_bytes,
)


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest) -> Api:
    return Api(request.param)


def fast_hook(**kwargs: Any) -> DreaminaHook:
    kwargs.setdefault("retry_backoff", 0.01)
    kwargs.setdefault("max_retry_wait", 0.2)
    return DreaminaHook(**kwargs)


def sample_input(emulator: EmulatorHandle, **overrides: Any) -> ImageToVideoInput:
    fields: dict[str, Any] = {"prompt": "a lighthouse at dawn", "image_urls": [emulator.sample_image_url]}
    fields.update(overrides)
    return ImageToVideoInput(**fields)


def wait_until_state(hook: DreaminaHook, request_id: str, state: RequestState, limit: float = 10) -> None:
    deadline = time.monotonic() + limit
    while hook.get_status(request_id).state is not state:
        assert time.monotonic() < deadline, f"request never reached {state}"
        time.sleep(0.05)


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


def test_wait_returns_the_result_and_logs_each_change(
    emulator: EmulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    hook = fast_hook()
    submitted = hook.submit(sample_input(emulator))
    with caplog.at_level(logging.INFO, logger="airflow_provider_dreamina"):
        result = hook.wait(submitted.request_id, poll_interval=0.1, timeout=20)
    assert result.state is RequestState.SUCCEEDED
    assert result.output_urls
    assert "queued at position" in caplog.text
    assert ": running" in caplog.text
    # One line per change, not per poll.
    assert caplog.text.count(": running") == 1


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("GPU ran out of memory", "GPU ran out of memory"),
        ({"type": "oom", "message": "no VRAM"}, "oom: no VRAM"),
    ],
)
def test_wait_raises_for_a_failed_job_with_its_reason(
    emulator: EmulatorHandle, error: Any, expected: str
) -> None:
    emulator.script_jobs(outcome="failed", error=error)
    hook = fast_hook()
    submitted = hook.submit(sample_input(emulator))
    with pytest.raises(DreaminaJobFailedError, match=expected) as caught:
        hook.wait(submitted.request_id, poll_interval=0.1, timeout=20)
    assert caught.value.result is not None
    assert caught.value.result.state is RequestState.FAILED


def test_cancel_queued_request_and_refusal_for_a_running_one(emulator: EmulatorHandle, api: Api) -> None:
    hook = fast_hook()
    emulator.script_jobs(queue_seconds=60)
    queued = hook.submit(sample_input(emulator))
    assert api(hook, "cancel", queued.request_id) is True
    with pytest.raises(DreaminaJobCancelledError):
        hook.wait(queued.request_id, poll_interval=0.1, timeout=5)

    emulator.script_jobs(queue_seconds=0, run_seconds=60)
    running = hook.submit(sample_input(emulator))
    wait_until_state(hook, running.request_id, RequestState.RUNNING)
    assert api(hook, "cancel", running.request_id) is False


def test_wait_times_out_with_the_request_id(emulator: EmulatorHandle) -> None:
    emulator.script_jobs(queue_seconds=60)
    hook = fast_hook()
    submitted = hook.submit(sample_input(emulator))
    started = time.monotonic()
    with pytest.raises(DreaminaTimeoutError, match=submitted.request_id):
        hook.wait(submitted.request_id, poll_interval=0.1, timeout=0.5)
    assert time.monotonic() - started < 5


# -- errors, each from its real trigger -----------------------------------------------------


def test_rejected_token_names_the_connection_not_the_token(emulator: EmulatorHandle, api: Api) -> None:
    emulator.configure(token="another-token-entirely")
    with pytest.raises(DreaminaAuthError) as caught:
        api(fast_hook(), "get_status", "some-request")
    text = str(caught.value)
    assert caught.value.status_code == 401
    assert caught.value.error_code == 400004
    assert "dreamina_default" in text
    assert emulator.token not in text


def test_forbidden_token_is_an_auth_error(emulator: EmulatorHandle, api: Api) -> None:
    emulator.configure(forbidden_tokens=[emulator.token])
    with pytest.raises(DreaminaAuthError) as caught:
        api(fast_hook(), "submit", sample_input(emulator))
    assert caught.value.status_code == 403


def test_insufficient_balance(emulator: EmulatorHandle, api: Api) -> None:
    emulator.configure(balance_usd=0)
    with pytest.raises(DreaminaInsufficientBalanceError, match="top it up") as caught:
        api(fast_hook(), "submit", sample_input(emulator))
    assert caught.value.error_code == 400002
    assert emulator.counters()["submissions"] == 0


def test_unknown_request_is_not_found(emulator: EmulatorHandle, api: Api) -> None:
    with pytest.raises(DreaminaNotFoundError, match="no-such-request") as caught:
        api(fast_hook(), "get_result", "no-such-request")
    assert caught.value.error_code == 404001


def test_server_side_validation_error_carries_detail(emulator: EmulatorHandle, api: Api) -> None:
    small = data_uri(300, 300)
    with pytest.raises(DreaminaRejectedInputError) as caught:
        api(fast_hook(), "submit", sample_input(emulator, image_urls=[small]), validate_image=False)
    assert caught.value.status_code == 422
    assert caught.value.error_code == 422001
    assert caught.value.field == "image_urls"
    assert caught.value.detail
    assert isinstance(caught.value, DreaminaInvalidInputError)


@pytest.mark.parametrize("message_field", ["error_message", "message", "error", "detail"])
def test_error_message_is_read_from_any_field(emulator: EmulatorHandle, message_field: str) -> None:
    emulator.configure(message_field=message_field)
    with pytest.raises(DreaminaNotFoundError) as caught:
        fast_hook().get_status("missing-request")
    assert caught.value.message.count("(") >= 1
    assert "unknown" in str(caught.value).lower()


def test_200_with_error_code_is_an_error(emulator: EmulatorHandle, api: Api) -> None:
    submitted = fast_hook().submit(sample_input(emulator))
    emulator.inject_fault("result", "error_200", count=10)
    with pytest.raises(DreaminaServerError) as caught:
        api(fast_hook(max_retries=1), "get_result", submitted.request_id)
    assert caught.value.status_code == 200
    assert caught.value.error_code == 500001


# -- retries, counted by the emulator -------------------------------------------------------


@pytest.mark.parametrize("kind", ["500", "429", "reset", "slow"])
def test_reads_are_retried_through_faults(emulator: EmulatorHandle, api: Api, kind: str) -> None:
    submitted = fast_hook().submit(sample_input(emulator))
    emulator.inject_fault("status", kind, count=2, retry_after=0.1, delay=3)
    hook = DreaminaHook(retry_backoff=0.01, max_retry_wait=0.2)
    if kind == "slow":
        # A read timeout is retried like any other transient fault.
        hook._settings = _with(hook, timeout=0.5)
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
    emulator.inject_fault("submit", "slow", count=1, delay=3)
    hook = fast_hook()
    hook._settings = _with(hook, timeout=0.5)
    with pytest.raises(DreaminaSubmitUncertainError):
        api(hook, "submit", sample_input(emulator))
    time.sleep(3)  # let the slow submit finish on the server
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
    emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DREAMINA_DEFAULT", emulator.connection_json(max_connections=10))
    submitted = fast_hook().submit(sample_input(emulator))
    before = emulator.counters()["connections"]

    async def poll_all() -> list[RequestStatus]:
        hooks = [DreaminaHook() for _ in range(1000)]
        try:
            return await asyncio.gather(*(hook.aget_status(submitted.request_id) for hook in hooks))
        finally:
            await DreaminaHook.aclose_shared_clients()

    statuses = asyncio.run(poll_all())
    assert len(statuses) == 1000
    # The control client's own call to read the counters may open one connection too.
    opened = emulator.counters()["connections"] - before
    assert opened <= 10 + 1


# -- image preflight ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "rule"),
    [
        ((300, 300), "shortest side must be more than 320"),
        ((320, 600), "shortest side must be more than 320"),
        ((4097, 2000), "maximum resolution is 4096x4096"),
        ((1000, 330), "within 3:1"),
    ],
)
@pytest.mark.parametrize("form", ["data", "file", "url"])
def test_preflight_refuses_each_rule_before_paying(
    emulator: EmulatorHandle, api: Api, tmp_path: Any, size: tuple[int, int], rule: str, form: str
) -> None:
    if form == "data":
        source = data_uri(*size)
    elif form == "file":
        source = str(tmp_path / "input.png")
        (tmp_path / "input.png").write_bytes(image_bytes(*size))
    else:
        source = emulator.image_url(*size)
    with pytest.raises(DreaminaInvalidInputError, match=rule) as caught:
        api(fast_hook(), "submit", sample_input(emulator, image_urls=[source]))
    assert caught.value.field == "image_urls"
    assert f"{size[0]}x{size[1]}" in str(caught.value)
    assert emulator.counters()["calls"]["submit"] == 0


def test_preflight_accepts_the_edges(emulator: EmulatorHandle, api: Api, tmp_path: Any) -> None:
    for name, size in {"a.png": (321, 900), "b.jpg": (4096, 1400)}.items():
        path = tmp_path / name
        path.write_bytes(image_bytes(*size, fmt="JPEG" if name.endswith("jpg") else "PNG"))
        api(fast_hook(), "submit", sample_input(emulator, image_urls=[str(path)]))
    assert emulator.counters()["submissions"] == 2


def test_local_file_is_sent_inline_as_a_data_uri(emulator: EmulatorHandle, api: Api, tmp_path: Any) -> None:
    path = tmp_path / "photo.jpeg"
    path.write_bytes(image_bytes(800, 600, fmt="JPEG"))
    api(fast_hook(), "submit", sample_input(emulator, image_urls=[f"file://{path}"]))
    assert emulator.counters()["submissions"] == 1


@pytest.mark.usefixtures("memory_storage")
def test_object_storage_image_is_read_and_inlined(emulator: EmulatorHandle, api: Api) -> None:
    from airflow.sdk import ObjectStoragePath

    target = ObjectStoragePath("memory://bucket/inputs/frame.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as handle:
        handle.write(image_bytes(640, 480))
    api(fast_hook(), "submit", sample_input(emulator, image_urls=["memory://bucket/inputs/frame.png"]))
    assert emulator.counters()["submissions"] == 1


def test_gif_is_refused_by_content_not_by_name(emulator: EmulatorHandle, tmp_path: Any) -> None:
    disguised = tmp_path / "really-a-gif.png"
    disguised.write_bytes(image_bytes(640, 480, fmt="GIF"))
    with pytest.raises(DreaminaInvalidInputError, match="GIF"):
        fast_hook().submit(sample_input(emulator, image_urls=[str(disguised)]))


def test_oversized_file_is_refused_with_its_size(emulator: EmulatorHandle, tmp_path: Any) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(image_bytes(640, 480) + b"\0" * 5_100_000)
    with pytest.raises(DreaminaInvalidInputError, match=r"image is 5\.1 MB; the limit is 4\.7 MB"):
        fast_hook().submit(sample_input(emulator, image_urls=[str(big)]))


def test_missing_file_names_the_path(emulator: EmulatorHandle, tmp_path: Any) -> None:
    with pytest.raises(DreaminaInvalidInputError, match="no such file"):
        fast_hook().submit(sample_input(emulator, image_urls=[str(tmp_path / "nope.png")]))


def test_oversized_remote_image_reads_at_most_the_cap(emulator: EmulatorHandle) -> None:
    transport = CountingTransport()
    url = emulator.image_url(640, 480, pad_bytes=8_000_000, chunked=True)
    with pytest.raises(DreaminaInvalidInputError, match=r"limit is 4\.7 MB"):
        DreaminaHook(transport=transport).prepare_image(url)
    # The probe stops one chunk past the cap; httpx reads in chunks of at most 64 KiB.
    assert transport.bytes_read[0] <= 4_700_000 + 1 + 65_536


def test_remote_image_with_content_length_reads_only_its_header(emulator: EmulatorHandle) -> None:
    transport = CountingTransport()
    url = emulator.image_url(1200, 900, pad_bytes=3_000_000)
    assert DreaminaHook(transport=transport).prepare_image(url) == url
    assert transport.bytes_read[0] < 1_000_000


def test_preflight_can_be_switched_off(emulator: EmulatorHandle) -> None:
    small = data_uri(300, 300)
    hook = fast_hook()
    assert hook.prepare_image(small, validate=False) == small


def test_bad_data_uri_is_refused(emulator: EmulatorHandle) -> None:
    with pytest.raises(DreaminaInvalidInputError, match="base64"):
        fast_hook().prepare_image("data:image/png;base64,@@@not-base64@@@")
    with pytest.raises(DreaminaInvalidInputError, match="data: URI"):
        fast_hook().prepare_image("data:text/plain,hello")


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
    for name in ("submit", "get_status", "get_result", "cancel", "prepare_image"):
        sync, async_ = getattr(DreaminaHook, name), getattr(DreaminaHook, f"a{name}")
        assert inspect.iscoroutinefunction(async_), name
        assert inspect.signature(sync).parameters.keys() == inspect.signature(async_).parameters.keys()


def test_poll_interval_slows_down_far_back_in_the_queue() -> None:
    def status(position: int | None, word: str = "in_queue") -> RequestStatus:
        return RequestStatus(request_id="r", status=word, queue_position=position)

    assert next_poll_interval(status(1), 5) == 5
    assert next_poll_interval(status(None, "in_progress"), 5) == 5
    assert 5 < next_poll_interval(status(5), 5) <= 30
    assert next_poll_interval(status(500), 5) == 30


def test_retry_after_parsing() -> None:
    assert parse_retry_after("2") == 2
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert 0 <= (parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") or 0) < 1


def _with(hook: DreaminaHook, **changes: Any) -> DreaminaSettings:
    import dataclasses

    return dataclasses.replace(hook.settings, **changes)


def test_http_transport_is_injectable() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer injected-token"
        assert request.headers["User-Agent"].startswith("airflow-provider-dreamina/")
        return httpx.Response(200, json={"request_id": "r1", "status": "in_queue", "queue_position": 3})

    hook = DreaminaHook(transport=httpx.MockTransport(answer))
    hook._settings = DreaminaSettings(conn_id="x", base_url="https://api.test", token="injected-token")
    assert hook.get_status("r1").queue_position == 3
