"""Input rules and answer models: no network involved."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_dreamina.exceptions import DreaminaInvalidInputError
from airflow_provider_dreamina.inputs.rules import check_image
from airflow_provider_dreamina.models import (
    CancelOutcome,
    GenerationInput,
    GenerationRecord,
    ImageToVideoInput,
    RequestOutput,
    RequestResult,
    RequestState,
    RequestStatus,
)
from tests.helpers import image_bytes

IMAGE = "https://example.org/in.png"


def test_defaults_match_the_schema() -> None:
    request = ImageToVideoInput(prompt="a cat", image_urls=[IMAGE])
    assert (request.seed, request.frames) == (-1, 121)
    assert request.to_request_body() == {"prompt": "a cat", "image_urls": [IMAGE], "seed": -1, "frames": 121}


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"prompt": "x" * 801}, "prompt", "prompt is 801 characters; the limit is 800"),
        ({"prompt": "   "}, "prompt", "prompt is blank"),
        ({"prompt": 42}, "prompt", "prompt must be text"),
        ({"image_urls": []}, "image_urls", "image_urls has 0 items; exactly 1 image is required"),
        ({"image_urls": [IMAGE, IMAGE]}, "image_urls", "image_urls has 2 items"),
        ({"image_urls": IMAGE}, "image_urls", "single string"),
        ({"image_urls": [""]}, "image_urls", "image_urls[0] is empty"),
        ({"frames": 120}, "frames", "frames is 120; allowed values are 121 (about 5 s) and 241 (about 10 s)"),
        ({"frames": "ten"}, "frames", "frames must be an integer; got 'ten'"),
        ({"seed": True}, "seed", "seed must be an integer; got True"),
        ({"seed": 1.5}, "seed", "seed must be an integer"),
        ({"seed": -2}, "seed", "seed is -2; use -1 for a random seed"),
    ],
)
def test_each_rule_names_field_rule_and_value(fields: dict[str, Any], field: str, message: str) -> None:
    values: dict[str, Any] = {"prompt": "a cat", "image_urls": [IMAGE], **fields}
    with pytest.raises(DreaminaInvalidInputError) as caught:
        ImageToVideoInput(**values)
    assert caught.value.field == field
    assert message in str(caught.value)


def test_several_problems_are_reported_together() -> None:
    with pytest.raises(DreaminaInvalidInputError) as caught:
        ImageToVideoInput(prompt="", image_urls=[], frames=5)
    text = str(caught.value)
    assert "prompt is blank" in text and "image_urls has 0 items" in text and "frames is 5" in text


def test_templated_strings_are_accepted() -> None:
    request = ImageToVideoInput(prompt="a cat", image_urls=[IMAGE], seed="42", frames=" 241 ")
    assert (request.seed, request.frames) == (42, 241)


def test_prompt_of_exactly_800_characters_is_fine() -> None:
    assert len(ImageToVideoInput(prompt="y" * 800, image_urls=[IMAGE]).prompt) == 800


@pytest.mark.parametrize(
    ("word", "state", "terminal"),
    [
        ("in_queue", RequestState.QUEUED, False),
        ("pending", RequestState.QUEUED, False),
        ("in_progress", RequestState.RUNNING, False),
        ("processing", RequestState.RUNNING, False),
        ("completed", RequestState.SUCCEEDED, True),
        ("succeeded", RequestState.SUCCEEDED, True),
        ("failed", RequestState.FAILED, True),
        ("cancelled", RequestState.CANCELLED, True),
        ("CANCELED", RequestState.CANCELLED, True),
        ("warming_up", RequestState.UNKNOWN, False),
        (None, RequestState.UNKNOWN, False),
    ],
)
def test_status_words_map_to_one_state(word: str | None, state: RequestState, terminal: bool) -> None:
    assert RequestState.from_word(word) is state
    assert state.is_terminal is terminal


def test_output_urls_in_order_without_repeats() -> None:
    output = RequestOutput(video="v0", videos=["v1", "v0", "v2"], image="i0", images=["i1"])
    assert output.urls == ["v0", "v1", "v2", "i0", "i1"]


def test_answers_keep_unknown_fields() -> None:
    status = RequestStatus.model_validate({"request_id": "r", "status": "in_queue", "trace": {"a": 1}})
    assert status.model_extra == {"trace": {"a": 1}}
    result = RequestResult.model_validate(
        {"request_id": "r", "status": "succeeded", "output": {"video": "u", "poster": "p"}, "x": 1}
    )
    assert result.output_urls == ["u"]


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ("boom", "boom"),
        ({"type": "oom", "message": "no VRAM"}, "oom: no VRAM"),
        ({"message": "only a message"}, "only a message"),
        ({"type": "only_type"}, "only_type"),
    ],
)
def test_error_message_from_either_shape(error: Any, message: str) -> None:
    result = RequestResult(request_id="r", status="failed", error=error)
    assert result.error_message == message


def test_lenient_timestamps_and_cost() -> None:
    result = RequestResult.model_validate(
        {
            "request_id": "r",
            "status": "succeeded",
            "created_at": "2026-01-01T00:00:00Z",
            "finished_at": "not a time",
            "cost": "0.35",
        }
    )
    assert result.created_at is not None and result.finished_at is None
    assert result.cost == 0.35


def _finished_result() -> RequestResult:
    return RequestResult.model_validate(
        {
            "request_id": "r",
            "status": "succeeded",
            "output": {"video": "https://x.runcomfy.net/v.mp4", "images": ["https://x.runcomfy.net/p.png"]},
            "created_at": "2026-01-01T00:00:00+00:00",
            "finished_at": "2026-01-01T00:00:30+00:00",
            "cost": 0.5,
            "model_id": "bytedance/dreamina-3-0/pro/image-to-video",
        }
    )


def test_result_round_trips_through_an_event_without_loss() -> None:
    result = _finished_result()
    again = RequestResult.model_validate(json.loads(json.dumps(result.to_event())))
    assert again == result
    assert again.output is not None and again.output.images == ["https://x.runcomfy.net/p.png"]
    assert again.model_extra == {"model_id": "bytedance/dreamina-3-0/pro/image-to-video"}


def test_generation_record_from_result_and_input() -> None:
    request = ImageToVideoInput(prompt="p", image_urls=["https://img.test/a.png?X-Signature=secret"], seed=3)
    record = GenerationRecord.of(_finished_result(), GenerationInput.of(request, "m/x"))
    data = json.loads(json.dumps(record.to_xcom()))
    assert data["generation_seconds"] == 30
    assert data["cost_usd"] == 0.5 and "cost" not in data
    assert data["input"] == {
        "model_id": "m/x",
        "prompt": "p",
        "image_url": "https://img.test/a.png",
        "seed": 3,
        "frames": 121,
    }
    assert GenerationRecord.coerce(data) == record
    assert GenerationRecord.coerce(json.dumps(data)) == record


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"prompt": "p", "seed": 1, "frames": 241, "image_urls": ["s3://b/k.png"]}, "s3://b/k.png"),
        (
            {"request_id": "r", "input": {"prompt": "p", "image_url": "DATA:image/png;base64,AA"}},
            "(inline data: URI)",
        ),
        ('{"prompt": "p", "image_url": "https://h/x.png#frag"}', "https://h/x.png"),
    ],
)
def test_plain_input_dicts_and_json_text_still_work(value: Any, expected: str) -> None:
    record = GenerationRecord.coerce(value)
    assert isinstance(record, GenerationInput)
    assert record.prompt == "p"
    assert record.image_url == expected


@pytest.mark.parametrize("value", ["{'prompt': 'p'}", "[1, 2]", 42, "not json"])
def test_unreadable_records_are_none_and_never_evaluated(value: Any) -> None:
    assert GenerationRecord.coerce(value) is None


def test_cancel_outcome() -> None:
    assert CancelOutcome(request_id="r", outcome="cancelled").cancelled
    assert not CancelOutcome(request_id="r", outcome="not_cancellable").cancelled


def test_check_image_reads_only_the_header() -> None:
    head = image_bytes(1280, 720)[:4096]
    info = check_image(head, 1_000_000, source="x")
    assert (info.format, info.width, info.height, info.media_type) == ("PNG", 1280, 720, "image/png")
