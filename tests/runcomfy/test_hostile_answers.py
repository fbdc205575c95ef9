"""Every answer is bounded: size, encoding, JSON depth and wall-clock time, as typed errors.

Each test plays one finding of the security review against a server that answers the way an
attacker (or a broken proxy) would, on both the sync and the async path.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from airflow.exceptions import AirflowFailException

from airflow_provider_dreamina.exceptions import (
    DreaminaConnectionError,
    DreaminaError,
    DreaminaRejectedInputError,
    DreaminaSubmitUncertainError,
    DreaminaTimeoutError,
    DreaminaUnreadableAnswerError,
)
from airflow_provider_dreamina.hooks.dreamina import DreaminaHook
from airflow_provider_dreamina.models import ImageToVideoInput
from airflow_provider_dreamina.operators.dreamina import (
    STATE_KEY,
    XCOM_REQUEST_ID,
    DreaminaImageToVideoOperator,
)
from airflow_provider_dreamina.triggers.dreamina import DreaminaRequestTrigger
from airflow_provider_dreamina.waiting.outcome import RequestEvent
from tests.bounds import bounded, gzip_bomb_ready
from tests.helpers import Api, FakeStateStore, data_uri, fast_hook, make_context, parse_record
from tests.hostile_server import HostileServer, hostile_server

TOKEN = "hostile-test-token-6f1c2a9e"
DEADLINE = 2.0
SUBMIT = "/v1/models/"
STATUS = "/v1/requests/r1/status"
RESULT = "/v1/requests/r1/result"

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[HostileServer]:
    gzip_bomb_ready()
    with hostile_server() as running:
        monkeypatch.setenv(
            "AIRFLOW_CONN_DREAMINA_DEFAULT", running.connection(TOKEN, request_deadline=DEADLINE)
        )
        yield running


def an_input() -> ImageToVideoInput:
    return ImageToVideoInput(prompt="a lighthouse at dusk", image_urls=[data_uri(640, 480)])


# -- a paid submit is never paid twice, whatever its answer --------------------------------


@pytest.mark.parametrize("kind", ["deep", "gzip", "huge", "drip"])
def test_unreadable_submit_answer_is_uncertain_and_paid_once(
    server: HostileServer, api: Api, kind: str
) -> None:
    server.answer(SUBMIT, kind)
    with bounded(deadline=DEADLINE), pytest.raises(DreaminaSubmitUncertainError, match="was not resent"):
        api(fast_hook(), "submit", an_input())
    assert server.calls("POST") == 1


def test_submit_answer_with_a_forged_request_id_is_uncertain(
    server: HostileServer, api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    server.answer(SUBMIT, body={"request_id": "r1\n2026-01-01 INFO forged line", "status_url": "x"})
    with pytest.raises(DreaminaSubmitUncertainError):
        api(fast_hook(), "submit", an_input())
    assert "forged" not in caplog.text


def test_operator_fails_without_retry_and_records_no_request_on_a_hostile_submit_answer(
    server: HostileServer,
) -> None:
    """Three tries paid three times: a RecursionError escaped as a retryable error (the finding)."""
    server.answer(SUBMIT, "deep")
    store = FakeStateStore()
    for _try in range(3):
        context = make_context(store)
        operator = DreaminaImageToVideoOperator(
            task_id="generate", prompt="a pier", image_url=data_uri(640, 480)
        )
        with pytest.raises(AirflowFailException) as caught:
            operator.execute(context)
        assert isinstance(caught.value.__cause__, DreaminaSubmitUncertainError)
        assert XCOM_REQUEST_ID not in context["ti"].xcom
        if isinstance(caught.value, AirflowFailException):
            break  # Airflow does not retry an AirflowFailException
    assert server.calls("POST") == 1
    # Only the intent is recorded: the next try sees an orphaned submit instead of paying again.
    assert parse_record(store.values[STATE_KEY]).orphaned


def test_operator_does_not_push_or_store_an_invalid_request_id(server: HostileServer) -> None:
    server.answer(SUBMIT, body={"request_id": "../../v1/models/x", "status_url": "x"})
    store = FakeStateStore()
    context = make_context(store)
    operator = DreaminaImageToVideoOperator(task_id="generate", prompt="a pier", image_url=data_uri(640, 480))
    with pytest.raises(AirflowFailException):
        operator.execute(context)
    assert XCOM_REQUEST_ID not in context["ti"].xcom
    record = parse_record(store.values[STATE_KEY])
    assert record.orphaned and record.request_id is None


# -- reads: every bound is a typed, retryable error ---------------------------------------


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("deep", "nests"),
        ("gzip", "compressed"),
        ("huge", "larger than"),
    ],
)
def test_hostile_status_answer_is_a_typed_error_in_bounded_memory(
    server: HostileServer, api: Api, kind: str, reason: str
) -> None:
    gzip_bomb_ready()
    server.answer(STATUS, kind)
    with bounded(deadline=DEADLINE), pytest.raises(DreaminaUnreadableAnswerError, match=reason) as caught:
        api(fast_hook(), "get_status", "r1")
    assert caught.value.retryable
    assert caught.value.request_id == "r1"


@pytest.mark.parametrize("kind", ["drip", "drip_headers"])
def test_a_dripping_answer_stops_at_the_request_deadline(server: HostileServer, api: Api, kind: str) -> None:
    server.answer(STATUS, kind)
    with bounded(deadline=DEADLINE), pytest.raises(DreaminaConnectionError, match="deadline of 2 s"):
        api(fast_hook(), "get_status", "r1")


def test_a_spent_deadline_is_not_spent_again_by_retries(
    server: HostileServer, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With retries, a drip would hold one poll for (max_retries + 1) deadlines."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_DREAMINA_DEFAULT", server.connection(TOKEN, request_deadline=DEADLINE, max_retries=5)
    )
    server.answer(STATUS, "drip")
    with bounded(deadline=DEADLINE), pytest.raises(DreaminaConnectionError, match="deadline of 2 s"):
        api(fast_hook(), "get_status", "r1")
    assert server.calls("GET") == 1


def test_a_dripping_answer_cannot_stretch_a_wait(server: HostileServer) -> None:
    server.answer(STATUS, "drip")
    with bounded(deadline=DEADLINE * 2), pytest.raises((DreaminaTimeoutError, DreaminaError)):
        fast_hook().wait("r1", poll_interval=0.1, timeout=1)


def run_trigger(trigger: DreaminaRequestTrigger) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        try:
            return [event.payload async for event in trigger.run()]
        finally:
            await DreaminaHook.aclose_shared_clients()

    return asyncio.run(collect())


@pytest.mark.parametrize("kind", ["deep", "gzip", "huge", "drip", "drip_headers"])
def test_the_trigger_survives_a_hostile_status_answer(server: HostileServer, kind: str) -> None:
    gzip_bomb_ready()
    server.answer(STATUS, kind)
    trigger = DreaminaRequestTrigger("r1", poll_interval=0.1, max_consecutive_errors=0, max_error_seconds=0)
    with bounded(deadline=DEADLINE):
        (event,) = run_trigger(trigger)
    assert event["status"] == "error"
    assert isinstance(RequestEvent.model_validate(event).to_error(), DreaminaError)
    assert len(json.dumps(event)) < 4000


# -- results are bounded before they reach XCom or a trigger event ------------------------


def test_a_huge_failure_reason_is_cut_before_it_reaches_the_event(server: HostileServer) -> None:
    reason = "the model refused: " + "x" * 700_000
    server.answer(STATUS, body={"request_id": "r1", "status": "failed"})
    server.answer(
        RESULT, body={"request_id": "r1", "status": "failed", "error": reason, "padding": "y" * 200_000}
    )
    (event,) = run_trigger(DreaminaRequestTrigger("r1", poll_interval=0.1))
    assert event["status"] == "failed"
    assert "the model refused" in event["message"]
    assert len(json.dumps(event)) < 12_000


def test_a_result_listing_a_hundred_thousand_outputs_keeps_a_hundred(server: HostileServer, api: Api) -> None:
    urls = [f"https://o.runcomfy.net/{index}.mp4" for index in range(20_000)]  # within the byte cap
    server.answer(RESULT, body={"request_id": "r1", "status": "succeeded", "output": {"videos": urls}})
    result = api(fast_hook(), "get_result", "r1")
    assert len(result.output_urls) == 100
    assert len(json.dumps(result.to_event())) < 64 * 1024


# -- the token never rides along in an error -----------------------------------------------


def _every_string(value: Any, depth: int = 0) -> Iterator[str]:
    if depth > 20:
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _every_string(key, depth + 1)
            yield from _every_string(item, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _every_string(item, depth + 1)
    elif isinstance(value, BaseException):
        yield str(value)
        yield repr(value)
        yield from _every_string(value.args, depth + 1)
        yield from _every_string(vars(value), depth + 1)
    elif hasattr(value, "model_dump"):
        yield from _every_string(value.model_dump(mode="json"), depth + 1)


@pytest.mark.parametrize("endpoint", [SUBMIT, STATUS])
def test_a_token_echoed_by_the_server_is_in_no_attribute_of_the_error(
    server: HostileServer, api: Api, endpoint: str
) -> None:
    server.answer(endpoint, "echo_auth", status=422)
    call = ("submit", an_input()) if endpoint == SUBMIT else ("get_status", "r1")
    with pytest.raises(DreaminaRejectedInputError) as caught:
        api(fast_hook(), *call)
    assert caught.value.detail, "the detail is kept, only masked"
    leaks = [text for text in _every_string(caught.value) if TOKEN in text]
    assert leaks == []
    assert "***" in json.dumps(caught.value.detail)


def test_an_error_quoting_a_signed_image_url_loses_its_signature(server: HostileServer, api: Api) -> None:
    quoted = "https://bucket.s3.amazonaws.com/in.png?X-Amz-Signature=5ecret"
    server.answer(
        SUBMIT,
        status=422,
        body={
            "error_message": f"could not fetch {quoted}",
            "detail": [{"loc": ["body", "image_urls"], "msg": quoted}],
        },
    )
    with pytest.raises(DreaminaRejectedInputError) as caught:
        api(fast_hook(), "submit", an_input())
    assert [text for text in _every_string(caught.value) if "5ecret" in text] == []
    assert "https://bucket.s3.amazonaws.com/in.png" in str(caught.value)


def test_any_failure_after_a_paid_post_is_uncertain() -> None:
    import httpx

    from airflow_provider_dreamina.runcomfy.settings import DreaminaSettings

    def explode(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("something no one planned for")

    hook = DreaminaHook(transport=httpx.MockTransport(explode))
    hook._settings = DreaminaSettings(conn_id="x", base_url="https://api.test", token=TOKEN, max_retries=0)
    with pytest.raises(DreaminaSubmitUncertainError, match="RuntimeError"):
        hook.submit(an_input())
    # A read is not paid for, but only typed errors leave the hook: the waiting policy can judge it.
    with pytest.raises(DreaminaUnreadableAnswerError, match="RuntimeError") as caught:
        hook.get_status("r1")
    assert caught.value.retryable and "something no one planned for" not in str(caught.value)
