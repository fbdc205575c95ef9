"""What an answer may put into a log line, an XCom or a trigger event is bounded, whatever it says;
the token is masked in every attribute of every error; the new connection extras are read."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from pydantic import ValidationError

from airflow_provider_dreamina.exceptions import (
    DreaminaAPIError,
    DreaminaConfigurationError,
    DreaminaRequestFailedError,
)
from airflow_provider_dreamina.models import (
    ERROR_MAX_CHARS,
    MAX_OUTPUTS,
    GenerationRecord,
    RequestResult,
    RequestStatus,
    SubmittedRequest,
)
from airflow_provider_dreamina.redaction import scrub_exception
from airflow_provider_dreamina.runcomfy.reading import UnreadableAnswer, json_of
from airflow_provider_dreamina.runcomfy.settings import DreaminaSettings
from airflow_provider_dreamina.waiting.outcome import RequestEvent
from airflow_provider_dreamina.waiting.policy import Waiting, WaitPolicy

TOKEN = "tok-e2b7a1c94d"


@pytest.mark.parametrize("bad", ["r1\nINFO forged", "../../x", "", "a" * 201, "..", 42, None])
def test_answers_with_an_invalid_request_id_are_refused(bad: Any) -> None:
    for model in (SubmittedRequest, RequestStatus, RequestResult):
        with pytest.raises(ValidationError):
            model.model_validate({"request_id": bad, "status": "in_queue"})


def test_a_huge_failure_reason_is_cut_everywhere_it_goes() -> None:
    reason = "blocked: " + "x" * 20_000_000
    result = RequestResult(request_id="r1", status="failed", error=reason)
    assert len(result.error_message or "") <= ERROR_MAX_CHARS
    record = GenerationRecord.of(result).to_xcom()
    assert len(json.dumps(record)) < ERROR_MAX_CHARS + 1000
    event = RequestEvent.failed(
        "r1", DreaminaRequestFailedError(f"failed: {result.error_message}", request_id="r1", result=result)
    )
    assert len(json.dumps(event.model_dump(mode="json"))) < 3 * ERROR_MAX_CHARS + 2000


def test_an_error_object_keeps_its_known_fields_bounded() -> None:
    error = {"type": "safety", "message": "m" * 100_000, "trace": ["t" * 100_000] * 10}
    result = RequestResult(request_id="r1", status="failed", error=error)
    assert isinstance(result.error, dict) and set(result.error) == {"type", "message"}
    assert (result.error_message or "").startswith("safety: mmm")
    assert len(json.dumps(result.to_event())) < 2 * ERROR_MAX_CHARS


def test_output_lists_are_capped() -> None:
    urls = [f"https://o.runcomfy.net/{index}.mp4" for index in range(100_000)]
    result = RequestResult.model_validate(
        {"request_id": "r1", "status": "succeeded", "output": {"videos": urls, "images": urls}}
    )
    assert len(result.output_urls) == MAX_OUTPUTS
    assert len(GenerationRecord.of(result).output_urls) == MAX_OUTPUTS


def test_an_endless_output_url_is_refused() -> None:
    with pytest.raises(ValidationError):
        RequestResult.model_validate(
            {
                "request_id": "r1",
                "status": "succeeded",
                "output": {"video": "https://o.runcomfy.net/" + "a" * 10_000},
            }
        )


def test_unknown_fields_stay_in_an_event_only_while_it_is_small() -> None:
    small = RequestResult.model_validate({"request_id": "r1", "status": "succeeded", "seed_used": 7})
    assert small.to_event()["seed_used"] == 7
    large = RequestResult.model_validate(
        {
            "request_id": "r1",
            "status": "succeeded",
            "debug": "d" * 500_000,
            "output": {"video": "https://a.runcomfy.net/v.mp4", "blob": "b" * 500_000},
        }
    )
    event = large.to_event()
    assert "debug" not in event and "blob" not in event["output"]
    assert RequestResult.model_validate(event).output_urls == ["https://a.runcomfy.net/v.mp4"]


def test_status_words_and_queue_positions_are_bounded() -> None:
    status = RequestStatus(request_id="r1", status="w" * 100_000, queue_position=10**4000)
    assert len(status.status) <= 100
    assert status.queue_position == 1_000_000
    waiting = Waiting("r1", WaitPolicy(poll_interval=1))
    assert waiting.next_delay(status) <= 6  # no OverflowError from a position beyond float range
    assert RequestStatus(request_id="r1", status="x", queue_position="many").queue_position is None


def test_unknown_status_words_are_logged_once_per_request_and_capped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="airflow_provider_dreamina.waiting.policy")
    for request in ("r1", "r2"):
        waiting = Waiting(request, WaitPolicy(poll_interval=1))
        for index in range(300):
            word = f"{index:03d}" + "z" * 100_000
            waiting.saw(RequestStatus(request_id=request, status=word))
            waiting.saw(RequestStatus(request_id=request, status=word))
            waiting.saw(RequestStatus(request_id=request, status="in_queue"))
    warnings = [record for record in caplog.records if "unknown status" in record.getMessage()]
    assert len(warnings) == 2 * 10  # at most ten words per request, each once
    assert max(len(record.getMessage()) for record in warnings) < 300
    assert len(caplog.text) < 20_000


def test_json_nested_past_the_limit_is_refused_without_recursion() -> None:
    with pytest.raises(UnreadableAnswer, match="nest"):
        json_of(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(UnreadableAnswer, match="deeper than"):
        json_of(b"[" * 40 + b"]" * 40)
    assert json_of(b'{"a": [{"b": 1}]}') == {"a": [{"b": 1}]}
    with pytest.raises(UnreadableAnswer):
        json_of(b"1" * 5000)  # Python refuses integers this long: still a typed refusal


def test_the_token_is_scrubbed_from_every_attribute_of_an_error() -> None:
    result = RequestResult(request_id="r1", status="failed", error=f"echo Bearer {TOKEN}")
    error = DreaminaAPIError(
        f"message {TOKEN}", status_code=400, detail=[{"msg": {"header": f"Bearer {TOKEN}"}}]
    )
    error.result = result  # type: ignore[attr-defined]
    error.extra_note = (f"x{TOKEN}", {f"k{TOKEN}": TOKEN})  # type: ignore[attr-defined]
    cause = ValueError(f"cause {TOKEN}")
    error.__cause__ = cause
    scrub_exception(error, TOKEN)
    everything = repr(error.args) + repr(vars(error)) + str(error) + repr(cause.args)
    assert TOKEN not in everything
    assert error.detail == [{"msg": {"header": "Bearer ***"}}]
    assert error.message == "message ***"


def test_the_new_connection_extras_are_read() -> None:
    class Conn:
        password = "t"
        host = "https://x"
        port = None
        extra_dejson = {
            "allowed_image_roots": "/data/frames, s3://bucket/inputs/",
            "allowed_image_hosts": ["LOCALHOST:8765"],
            "request_deadline": "5",
            "preflight_deadline": 7,
            "download_deadline": 9,
        }

    settings = DreaminaSettings.from_connection(Conn(), "c")
    assert settings.allowed_image_roots == ("/data/frames", "s3://bucket/inputs/")
    assert settings.allowed_image_hosts == ("localhost:8765",)
    assert (settings.request_deadline, settings.preflight_deadline, settings.download_deadline) == (5, 7, 9)
    Conn.extra_dejson = {"request_deadline": -1}
    with pytest.raises(DreaminaConfigurationError, match="request_deadline"):
        DreaminaSettings.from_connection(Conn(), "c")
    defaults = DreaminaSettings(conn_id="c", base_url="https://x", token="t")
    assert (defaults.request_deadline, defaults.preflight_deadline, defaults.download_deadline) == (
        120,
        60,
        3600,
    )
    assert defaults.allowed_image_roots == () and defaults.allowed_image_hosts == ()


def test_answer_words_and_urls_cannot_forge_log_lines() -> None:
    status = RequestStatus(
        request_id="r1", status="completed\n2026 INFO forged", status_url="https://x/\nforged"
    )
    assert "\n" not in status.status and status.status_url is None
    assert RequestStatus(request_id="r1", status=" completed\n").state.value == "succeeded"
    with pytest.raises(ValidationError):
        RequestResult.model_validate(
            {
                "request_id": "r1",
                "status": "succeeded",
                "output": {"video": "https://a.runcomfy.net/v.mp4\nX: y"},
            }
        )


def test_a_failure_reason_quoting_a_signed_url_loses_its_signature() -> None:
    reason = "could not fetch https://bucket.s3.amazonaws.com/in.png?X-Amz-Signature=5ecret: 403"
    result = RequestResult(request_id="r1", status="failed", error={"type": "fetch", "message": reason})
    assert "5ecret" not in json.dumps(result.to_event())
    assert "https://bucket.s3.amazonaws.com/in.png" in (result.error_message or "")
