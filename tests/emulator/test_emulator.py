"""The emulator over real HTTP: RunComfy's documented shapes and quirks, faults, outputs, control plane."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from airflow_provider_dreamina.emulator import MODEL_ID, EmulatorError, EmulatorHandle, run_emulator
from airflow_provider_dreamina.emulator.media import (
    BAD_RATIO,
    NOT_JPEG_OR_PNG,
    TOO_LARGE,
    TOO_SMALL,
    TOO_WIDE,
)
from tests.helpers import EMULATOR_STARTUP_SECONDS, await_until, wait_until

QUEUE_SECONDS = 0.2
RUN_SECONDS = 0.3
OUTPUT_BYTES = 64 * 1024
SUBMIT_PATH = f"/v1/models/{MODEL_ID}"
# A dropped connection shows as a reset (ReadError) or as a closed one (RemoteProtocolError).
TRANSPORT_FAILURES = (httpx.RemoteProtocolError, httpx.ReadError)


@pytest.fixture(scope="module")
def emulator_process() -> Iterator[EmulatorHandle]:
    """One emulator process for the module; `emulator` resets it before each test."""
    with run_emulator(
        queue_seconds=QUEUE_SECONDS,
        run_seconds=RUN_SECONDS,
        output_bytes=OUTPUT_BYTES,
        startup_timeout=EMULATOR_STARTUP_SECONDS,
    ) as handle:
        yield handle


@pytest.fixture
def emulator(emulator_process: EmulatorHandle) -> EmulatorHandle:
    emulator_process.reset()
    return emulator_process


def submit(api: httpx.Client, emulator: EmulatorHandle, **fields: Any) -> httpx.Response:
    body = {"prompt": "a lighthouse at dusk, waves rolling in", "image_urls": [emulator.sample_image_url]}
    return api.post(SUBMIT_PATH, json={**body, **fields})


def submit_id(api: httpx.Client, emulator: EmulatorHandle, **fields: Any) -> str:
    response = submit(api, emulator, **fields)
    assert response.status_code == 200, response.text
    request_id: str = response.json()["request_id"]
    return request_id


def finished_job(api: httpx.Client, emulator: EmulatorHandle, **behaviour: Any) -> str:
    """Submit a job scripted to finish at once."""
    emulator.script_jobs(queue_seconds=0, run_seconds=0, **behaviour)
    return submit_id(api, emulator)


def result(api: httpx.Client, request_id: str, **params: str) -> dict[str, Any]:
    response = api.get(f"/v1/requests/{request_id}/result", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def video_url(api: httpx.Client, request_id: str) -> str:
    url: str = result(api, request_id)["output"]["video"]
    return url


def image_bytes(width: int, height: int, image_format: str = "PNG", pad_to: int | None = None) -> bytes:
    buffer = io.BytesIO()
    # the fill the emulator's generated images use, so both come out the same size
    Image.new("L", (width, height), 128).save(buffer, format=image_format)
    data = buffer.getvalue()
    return data if pad_to is None else data + bytes(pad_to - len(data))


def url_expiry_ms(url: str) -> int:
    """When a signed output URL expires (epoch milliseconds), as the emulator wrote it."""
    return int(httpx.URL(url).params["expires"])


def data_uri(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def assert_error_body(response: httpx.Response, status: int, code: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error_code"] == code
    assert isinstance(body["error_message"], str)
    assert body["error_message"]
    return body


def top_level_boxes(data: bytes) -> list[tuple[str, int]]:
    boxes = []
    position = 0
    while position < len(data):
        size, kind = struct.unpack(">I4s", data[position : position + 8])
        if size == 1:
            size = struct.unpack(">Q", data[position + 8 : position + 16])[0]
        boxes.append((kind.decode(), size))
        position += size
    return boxes


def child_boxes(box: bytes) -> list[str]:
    return [kind for kind, _ in top_level_boxes(box[8:])]


# The four calls and their quirks


def test_submit_answers_absolute_urls_built_from_the_request_base_url(
    api: httpx.Client, emulator: EmulatorHandle
) -> None:
    response = submit(api, emulator)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"request_id", "status_url", "result_url", "cancel_url"}
    base = f"{emulator.base_url}/v1/requests/{body['request_id']}"
    assert body["status_url"] == f"{base}/status"
    assert body["result_url"] == f"{base}/result"
    assert body["cancel_url"] == f"{base}/cancel"


def test_status_goes_queued_then_in_progress_then_completed(
    api: httpx.Client, emulator: EmulatorHandle
) -> None:
    # Each state lasts long enough to be seen by a poll on a busy machine.
    emulator.script_jobs(queue_seconds=1, run_seconds=1)
    request_id = submit_id(api, emulator)
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        body = api.get(f"/v1/requests/{request_id}/status").json()
        seen.append(body)
        if body["status"] == "completed":
            break
        time.sleep(0.03)

    words = [body["status"] for body in seen]
    assert words[0] == "in_queue"
    assert "in_progress" in words
    assert words[-1] == "completed"
    assert words == sorted(words, key=["in_queue", "in_progress", "completed"].index)
    for body in seen:
        assert ("queue_position" in body) == (body["status"] == "in_queue")
        assert body["status_url"] == f"{emulator.base_url}/v1/requests/{request_id}/status"
        assert body["result_url"] == f"{emulator.base_url}/v1/requests/{request_id}/result"
    assert seen[0]["queue_position"] == 1


def test_queue_position_counts_queued_jobs_submitted_earlier(
    api: httpx.Client, emulator: EmulatorHandle
) -> None:
    emulator.script_jobs(count=3, queue_seconds=30)
    first, second, third = (submit_id(api, emulator) for _ in range(3))

    positions = [
        api.get(f"/v1/requests/{rid}/status").json()["queue_position"] for rid in (first, second, third)
    ]
    assert positions == [1, 2, 3]

    api.post(f"/v1/requests/{first}/cancel")
    assert api.get(f"/v1/requests/{third}/status").json()["queue_position"] == 2


def test_result_reports_the_current_state_until_done_then_the_output(
    api: httpx.Client, emulator: EmulatorHandle
) -> None:
    # Queued long enough to be seen queued on a busy machine.
    emulator.script_jobs(queue_seconds=1)
    request_id = submit_id(api, emulator)

    queued = result(api, request_id, include_cost="true")
    assert queued["status"] == "in_queue"
    assert "output" not in queued
    assert "finished_at" not in queued
    assert "cost" not in queued

    wait_until(lambda: result(api, request_id)["status"] == "succeeded")
    done = result(api, request_id)
    assert done["status"] == "succeeded"
    assert done["output"]["video"].startswith(f"{emulator.base_url}/outputs/{request_id}/")
    created = datetime.fromisoformat(done["created_at"])
    finished = datetime.fromisoformat(done["finished_at"])
    assert created.utcoffset() is not None
    assert 1 + RUN_SECONDS - 0.1 < (finished - created).total_seconds() < 1 + RUN_SECONDS + 0.1
    assert "cost" not in done
    assert result(api, request_id, include_cost="true")["cost"] == 0.5


def test_cancel_answers_202_and_cancels_only_queued_jobs(api: httpx.Client, emulator: EmulatorHandle) -> None:
    emulator.script_jobs(queue_seconds=30)
    queued = submit_id(api, emulator)
    emulator.script_jobs(queue_seconds=0, run_seconds=30)
    running = submit_id(api, emulator)

    cancelled = api.post(f"/v1/requests/{queued}/cancel")
    refused = api.post(f"/v1/requests/{running}/cancel")

    assert cancelled.status_code == 202
    assert cancelled.json() == {"request_id": queued, "status": "cancelled", "outcome": "cancelled"}
    assert refused.status_code == 202
    assert refused.json() == {"request_id": running, "status": "in_progress", "outcome": "not_cancellable"}
    assert api.get(f"/v1/requests/{queued}/status").json()["status"] == "cancelled"
    cancelled_result = result(api, queued)
    assert cancelled_result["status"] == "cancelled"
    assert "finished_at" in cancelled_result
    assert emulator.counters()["cancellations"] == 1


def test_finished_job_is_not_cancellable(api: httpx.Client, emulator: EmulatorHandle) -> None:
    request_id = finished_job(api, emulator)

    body = api.post(f"/v1/requests/{request_id}/cancel").json()

    assert body == {"request_id": request_id, "status": "completed", "outcome": "not_cancellable"}


def test_model_endpoint_reports_the_price(api: httpx.Client, emulator: EmulatorHandle) -> None:
    emulator.configure(price_usd=0.75)

    body = api.get(f"/v1/models/{MODEL_ID}").json()

    assert body["model_id"] == MODEL_ID
    assert body["base_price_usd"] == 0.75
    assert body["price_unit"] == "output"
    assert body["input_schema"]["properties"]["frames"]["enum"] == [121, 241]


def test_failed_job_with_a_string_error(api: httpx.Client, emulator: EmulatorHandle) -> None:
    request_id = finished_job(api, emulator, outcome="failed", error="content policy violation")

    assert api.get(f"/v1/requests/{request_id}/status").json()["status"] == "failed"
    body = result(api, request_id, include_cost="true")
    assert body["status"] == "failed"
    assert body["error"] == "content policy violation"
    assert "output" not in body
    assert body["cost"] == 0.0


def test_failed_job_with_an_object_error(api: httpx.Client, emulator: EmulatorHandle) -> None:
    error = {"type": "ModelError", "message": "upstream timed out"}
    request_id = finished_job(api, emulator, outcome="failed", error=error)

    assert result(api, request_id)["error"] == error


def test_unknown_status_words_appear_on_both_endpoints(api: httpx.Client, emulator: EmulatorHandle) -> None:
    words = {"in_queue": "pending", "in_progress": "processing", "completed": "done", "succeeded": "finished"}
    emulator.script_jobs(queue_seconds=30, status_words=words)
    queued = submit_id(api, emulator)
    emulator.script_jobs(queue_seconds=0, run_seconds=30, status_words=words)
    running = submit_id(api, emulator)
    done = finished_job(api, emulator, status_words=words)

    queued_status = api.get(f"/v1/requests/{queued}/status").json()
    assert queued_status["status"] == "pending"
    assert queued_status["queue_position"] == 1
    assert api.get(f"/v1/requests/{running}/status").json()["status"] == "processing"
    assert result(api, running)["status"] == "processing"
    assert api.get(f"/v1/requests/{done}/status").json()["status"] == "done"
    assert result(api, done)["status"] == "finished"


def test_extra_fields_on_every_api_answer(api: httpx.Client, emulator: EmulatorHandle) -> None:
    emulator.configure(extra_fields=True)
    submitted = submit(api, emulator)
    request_id = submitted.json()["request_id"]

    answers = [
        submitted,
        api.get(f"/v1/requests/{request_id}/status"),
        api.get(f"/v1/requests/{request_id}/result"),
        api.post(f"/v1/requests/{request_id}/cancel"),
        api.get("/v1/requests/unknown/status"),
    ]

    for answer in answers:
        body = answer.json()
        assert "x_trace" in body
        assert "meta" in body
    assert answers[1].json()["status"] == "in_queue"
    assert answers[4].json()["error_code"] == 404001


def test_repeated_input_is_counted_per_request(api: httpx.Client, emulator: EmulatorHandle) -> None:
    submit_id(api, emulator)
    submit_id(api, emulator)
    submit_id(api, emulator, seed=7)

    jobs = emulator.requests()

    assert [job["submit_count"] for job in jobs] == [1, 2, 1]
    assert [job["sequence"] for job in jobs] == [1, 2, 3]
    assert jobs[2]["input"] == {
        "prompt": "a lighthouse at dusk, waves rolling in",
        "seed": 7,
        "frames": 121,
        "image_width": 640,
        "image_height": 480,
    }
    assert "token" not in json.dumps(jobs)


def test_requests_report_epoch_times_and_ranged_durations(
    api: httpx.Client, emulator: EmulatorHandle
) -> None:
    emulator.configure(queue_seconds=0, run_seconds_range=[0.05, 0.15], seed=3)
    before = time.time()
    request_ids = [submit_id(api, emulator) for _ in range(5)]
    wait_until(lambda: all(job["finished_at"] is not None for job in emulator.requests()))

    jobs = emulator.requests()

    assert [job["request_id"] for job in jobs] == request_ids
    durations = [job["finished_at"] - job["started_at"] for job in jobs]
    assert all(0.05 <= duration <= 0.15 for duration in durations)
    assert len(set(durations)) > 1
    assert all(before <= job["created_at"] <= job["started_at"] for job in jobs)
    assert all(job["state"] == "succeeded" for job in jobs)


def test_scripts_apply_to_the_next_submissions_in_order(api: httpx.Client, emulator: EmulatorHandle) -> None:
    # Unscripted jobs stay queued for as long as the test may take on a busy machine.
    emulator.configure(queue_seconds=30)
    emulator.script_jobs(count=2, queue_seconds=0, run_seconds=0, outcome="failed", error="first two")
    emulator.script_jobs(queue_seconds=0, run_seconds=0, cost=2.5)
    request_ids = [submit_id(api, emulator) for _ in range(4)]

    outcomes = [result(api, rid, include_cost="true") for rid in request_ids[:3]]

    assert [body["status"] for body in outcomes] == ["failed", "failed", "succeeded"]
    assert outcomes[2]["cost"] == 2.5
    assert result(api, request_ids[3])["status"] == "in_queue"


# Auth and errors


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", "Token emulator-token", "Bearer", "emulator-token"],
    ids=["missing", "wrong", "other-scheme", "empty", "no-scheme"],
)
def test_bad_token_is_401_with_code_400004(emulator: EmulatorHandle, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    with httpx.Client(base_url=emulator.base_url, headers=headers, trust_env=False) as client:
        responses = [
            client.post(SUBMIT_PATH, json={"prompt": "x", "image_urls": [emulator.sample_image_url]}),
            client.get("/v1/requests/anything/status"),
            client.get("/v1/requests/anything/result"),
            client.post("/v1/requests/anything/cancel"),
        ]

    for response in responses:
        assert_error_body(response, 401, 400004)
    assert emulator.counters()["submissions"] == 0


def test_forbidden_token_is_403_with_code_403001(api: httpx.Client, emulator: EmulatorHandle) -> None:
    emulator.configure(forbidden_tokens=[emulator.token])

    assert_error_body(submit(api, emulator), 403, 403001)


def test_configured_token_replaces_the_old_one(api: httpx.Client, emulator: EmulatorHandle) -> None:
    emulator.configure(token="rotated")

    assert emulator.token == "rotated"
    assert_error_body(submit(api, emulator), 401, 400004)
    emulator.reset()
    assert emulator.token == "emulator-token"
    assert submit(api, emulator).status_code == 200


@pytest.mark.parametrize(("method", "call"), [("GET", "status"), ("GET", "result"), ("POST", "cancel")])
def test_unknown_request_id_is_404_with_code_404001(api: httpx.Client, method: str, call: str) -> None:
    response = api.request(method, f"/v1/requests/no-such-request/{call}")

    assert_error_body(response, 404, 404001)


def test_unknown_model_is_400_with_code_400001(api: httpx.Client, emulator: EmulatorHandle) -> None:
    response = api.post(
        "/v1/models/bytedance/dreamina-2-0/image-to-video",
        json={"prompt": "x", "image_urls": [emulator.sample_image_url]},
    )

    assert_error_body(response, 400, 400001)
    assert emulator.counters()["submissions"] == 0


def test_insufficient_balance_is_402_and_creates_no_job(api: httpx.Client, emulator: EmulatorHandle) -> None:
    emulator.configure(balance_usd=0.7, price_usd=0.5)

    first = submit(api, emulator)
    second = submit(api, emulator)

    assert first.status_code == 200
    assert_error_body(second, 402, 400002)
    assert emulator.counters()["submissions"] == 1
    # The job in flight holds its price; it is charged once it has succeeded.
    wait_until(lambda: emulator.counters()["generations_charged"] == 1)
    assert emulator.counters()["balance_usd"] == pytest.approx(0.2)


def test_a_cancelled_submission_is_never_charged(api: httpx.Client, emulator: EmulatorHandle) -> None:
    emulator.configure(balance_usd=0.5, price_usd=0.5, queue_seconds=30)
    request_id = submit_id(api, emulator)
    assert submit(api, emulator).status_code == 402

    api.post(f"/v1/requests/{request_id}/cancel")

    assert submit(api, emulator).status_code == 200


def test_unknown_paths_and_methods_answer_the_error_body(api: httpx.Client) -> None:
    assert_error_body(api.get("/v2/nothing/here"), 404, 404001)
    assert_error_body(api.get("/v1/requests/some-id/cancel"), 405, 405001)


@pytest.mark.parametrize(
    ("field", "expected"),
    [("message", "message"), ("error", "error"), ("detail", "detail")],
)
def test_message_field_name_is_configurable(
    api: httpx.Client, emulator: EmulatorHandle, field: str, expected: str
) -> None:
    emulator.configure(message_field=field)

    body = api.get("/v1/requests/nope/status").json()

    assert body["error_code"] == 404001
    assert isinstance(body[expected], str)
    assert "error_message" not in body


def test_detail_message_field_keeps_the_validation_list(api: httpx.Client, emulator: EmulatorHandle) -> None:
    emulator.configure(message_field="detail")

    body = submit(api, emulator, prompt="").json()

    assert body["error_code"] == 422001
    assert body["detail"][0]["loc"] == ["body", "prompt"]


# Input validation


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"prompt": "p" * 801}, "prompt"),
        ({"prompt": "   \n"}, "prompt"),
        ({"prompt": 42}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"image_urls": []}, "image_urls"),
        ({"image_urls": ["http://127.0.0.1:1/a.png", "http://127.0.0.1:1/b.png"]}, "image_urls"),
        ({"image_urls": "http://127.0.0.1:1/a.png"}, "image_urls"),
        ({"image_urls": [7]}, "image_urls"),
        ({"frames": 120}, "frames"),
        ({"frames": "121"}, "frames"),
        ({"frames": True}, "frames"),
        ({"seed": True}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"seed": "7"}, "seed"),
        ({"image_urls": ["ftp://example.com/a.png"]}, "image_urls"),
        ({"image_urls": ["data:image/png;base64,not base64!"]}, "image_urls"),
        ({"image_urls": ["data:text/plain;base64,aGVsbG8="]}, "image_urls"),
    ],
    ids=[
        "prompt-801-chars",
        "prompt-blank",
        "prompt-number",
        "prompt-null",
        "no-image",
        "two-images",
        "images-not-a-list",
        "image-not-a-string",
        "frames-120",
        "frames-string",
        "frames-bool",
        "seed-bool",
        "seed-float",
        "seed-string",
        "image-ftp",
        "image-bad-base64",
        "image-not-image-data",
    ],
)
def test_invalid_input_is_422_naming_the_field(
    api: httpx.Client, emulator: EmulatorHandle, fields: dict[str, Any], field: str
) -> None:
    response = submit(api, emulator, **fields)

    body = assert_error_body(response, 422, 422001)
    assert [entry["loc"] for entry in body["detail"]] == [["body", field]]
    assert all(entry["msg"] and entry["type"] for entry in body["detail"])
    assert emulator.counters()["submissions"] == 0


def test_missing_fields_are_all_reported(api: httpx.Client) -> None:
    body = assert_error_body(api.post(SUBMIT_PATH, json={"seed": True}), 422, 422001)

    assert {tuple(entry["loc"]) for entry in body["detail"]} == {
        ("body", "prompt"),
        ("body", "image_urls"),
        ("body", "seed"),
    }


def test_boundary_values_are_accepted(api: httpx.Client, emulator: EmulatorHandle) -> None:
    assert submit(api, emulator, prompt="p" * 800, frames=241, seed=2**40).status_code == 200
    assert submit(api, emulator, frames=121, seed=0, unknown_field="ignored").status_code == 200


IMAGE_CASES = [
    pytest.param(300, 300, "PNG", None, [TOO_SMALL], id="300x300"),
    pytest.param(320, 500, "PNG", None, [TOO_SMALL], id="320-wide"),
    pytest.param(5000, 400, "PNG", None, [TOO_WIDE, BAD_RATIO], id="5000x400"),
    pytest.param(4097, 2000, "PNG", None, [TOO_WIDE], id="4097-wide"),
    pytest.param(1200, 400, "PNG", None, [BAD_RATIO], id="ratio-exactly-3"),
    pytest.param(640, 480, "GIF", None, [NOT_JPEG_OR_PNG], id="gif"),
    pytest.param(640, 480, "BMP", None, [NOT_JPEG_OR_PNG], id="bmp"),
    pytest.param(640, 480, "PNG", 4_700_000, [TOO_LARGE], id="4.7MB-exactly"),
]


@pytest.mark.parametrize(("width", "height", "image_format", "pad_to", "messages"), IMAGE_CASES)
def test_image_rules_on_data_uris(
    api: httpx.Client,
    emulator: EmulatorHandle,
    width: int,
    height: int,
    image_format: str,
    pad_to: int | None,
    messages: list[str],
) -> None:
    uri = data_uri(image_bytes(width, height, image_format, pad_to))

    body = assert_error_body(submit(api, emulator, image_urls=[uri]), 422, 422001)

    assert [entry["msg"] for entry in body["detail"]] == messages
    assert all(entry["loc"] == ["body", "image_urls"] for entry in body["detail"])


@pytest.mark.parametrize(("width", "height", "image_format", "pad_to", "messages"), IMAGE_CASES)
def test_image_rules_on_http_urls(
    api: httpx.Client,
    emulator: EmulatorHandle,
    width: int,
    height: int,
    image_format: str,
    pad_to: int | None,
    messages: list[str],
) -> None:
    extension = {"PNG": "png", "GIF": "gif", "BMP": "bmp"}[image_format]
    size = len(image_bytes(width, height, image_format))
    pad_bytes = 0 if pad_to is None else pad_to - size
    url = emulator.image_url(width, height, extension, pad_bytes=pad_bytes)

    body = assert_error_body(submit(api, emulator, image_urls=[url]), 422, 422001)

    assert [entry["msg"] for entry in body["detail"]] == messages


def test_image_type_is_judged_by_content_not_by_name(api: httpx.Client, emulator: EmulatorHandle) -> None:
    png_declared_as_jpeg = data_uri(image_bytes(640, 480, "PNG"), "image/jpeg")
    gif_declared_as_png = data_uri(image_bytes(640, 480, "GIF"), "image/png")

    assert submit(api, emulator, image_urls=[png_declared_as_jpeg]).status_code == 200
    assert submit(api, emulator, image_urls=[gif_declared_as_png]).status_code == 422


def test_largest_accepted_image_fits_in_a_data_uri(api: httpx.Client, emulator: EmulatorHandle) -> None:
    uri = data_uri(image_bytes(4096, 2000, "JPEG", pad_to=4_700_000 - 1), "image/jpeg")
    assert len(uri) > 6_000_000

    response = submit(api, emulator, image_urls=[uri])

    assert response.status_code == 200, response.text
    assert emulator.requests()[0]["input"]["image_width"] == 4096


def test_http_image_url_is_fetched(api: httpx.Client, emulator: EmulatorHandle) -> None:
    assert submit(api, emulator, image_urls=[emulator.image_url(1024, 768, "jpg")]).status_code == 200
    missing = submit(api, emulator, image_urls=[f"{emulator.base_url}/samples/missing.png"])
    assert assert_error_body(missing, 422, 422001)["detail"][0]["loc"] == ["body", "image_urls"]


def test_sample_image_passes_every_rule(emulator: EmulatorHandle) -> None:
    data = httpx.get(emulator.sample_image_url, trust_env=False).content

    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.size) == ("PNG", (640, 480))


# Bad input never crashes the server


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"[1, 2]", b'"text"', b"null", b"\xff\xfe\x00", b"[" * 100_000],
    ids=["empty", "malformed", "array", "string", "null", "not-utf8", "deep-nesting"],
)
def test_bad_bodies_are_422_with_the_error_body(api: httpx.Client, content: bytes) -> None:
    response = api.post(SUBMIT_PATH, content=content, headers={"Content-Type": "application/json"})

    body = assert_error_body(response, 422, 422001)
    assert body["detail"][0]["loc"] == ["body"]


def test_huge_body_is_413_and_the_connection_survives(api: httpx.Client) -> None:
    response = api.post(SUBMIT_PATH, content=b"x" * 17_000_000)

    assert_error_body(response, 413, 413001)
    assert api.get("/v1/requests/x/status").status_code == 404


def test_huge_body_without_content_length_is_413(api: httpx.Client) -> None:
    def chunks() -> Any:
        for _ in range(20):
            yield b"y" * 1_000_000

    assert_error_body(api.post(SUBMIT_PATH, content=chunks()), 413, 413001)


def test_unparseable_http_gets_the_error_body(emulator: EmulatorHandle) -> None:
    url = httpx.URL(emulator.base_url)
    with socket.create_connection((url.host, url.port), timeout=5) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert json.loads(body)["error_code"] == 400000


# Faults


@pytest.mark.parametrize(("retry_after", "header"), [(2, "2"), (None, None), (1.5, "1.5")])
def test_429_fault_with_and_without_retry_after(
    api: httpx.Client, emulator: EmulatorHandle, retry_after: float | None, header: str | None
) -> None:
    emulator.inject_fault("submit", 429, count=2, retry_after=retry_after)

    responses = [submit(api, emulator) for _ in range(3)]

    assert [response.status_code for response in responses] == [429, 429, 200]
    assert responses[0].headers.get("Retry-After") == header
    assert responses[0].json()["error_code"] == 429001
    counters = emulator.counters()
    assert counters["submissions"] == 1
    assert counters["faults_injected"] == 2


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_error_faults(api: httpx.Client, emulator: EmulatorHandle, status: int) -> None:
    request_id = submit_id(api, emulator)
    emulator.inject_fault("status", str(status))

    assert_error_body(api.get(f"/v1/requests/{request_id}/status"), status, 500001)
    assert api.get(f"/v1/requests/{request_id}/status").status_code == 200


@pytest.mark.parametrize("endpoint", ["status", "result", "cancel"])
def test_reset_fault_drops_the_connection_without_an_answer(
    api: httpx.Client, emulator: EmulatorHandle, endpoint: str
) -> None:
    emulator.script_jobs(queue_seconds=30)
    request_id = submit_id(api, emulator)
    emulator.inject_fault(endpoint, "reset")
    method = "POST" if endpoint == "cancel" else "GET"

    with pytest.raises(TRANSPORT_FAILURES):
        api.request(method, f"/v1/requests/{request_id}/{endpoint}")

    assert emulator.counters()["calls_per_request"][request_id][endpoint] == 1
    assert api.get(f"/v1/requests/{request_id}/status").json()["status"] == "in_queue"


def test_reset_on_submit_creates_no_job(api: httpx.Client, emulator: EmulatorHandle) -> None:
    emulator.inject_fault("submit", "reset")

    with pytest.raises(TRANSPORT_FAILURES):
        submit(api, emulator)

    counters = emulator.counters()
    assert counters["calls"]["submit"] == 1
    assert counters["submissions"] == 0


def test_reset_after_send_on_submit_creates_the_job(api: httpx.Client, emulator: EmulatorHandle) -> None:
    emulator.inject_fault("submit", "reset_after_send")

    with pytest.raises(TRANSPORT_FAILURES):
        submit(api, emulator)

    assert emulator.counters()["submissions"] == 1
    assert len(emulator.requests()) == 1


def test_reset_after_send_on_cancel_cancels(api: httpx.Client, emulator: EmulatorHandle) -> None:
    emulator.script_jobs(queue_seconds=30)
    request_id = submit_id(api, emulator)
    emulator.inject_fault("cancel", "reset_after_send")

    with pytest.raises(TRANSPORT_FAILURES):
        api.post(f"/v1/requests/{request_id}/cancel")

    assert api.get(f"/v1/requests/{request_id}/status").json()["status"] == "cancelled"


def test_slow_fault_delays_a_normal_answer(api: httpx.Client, emulator: EmulatorHandle) -> None:
    request_id = submit_id(api, emulator)
    emulator.inject_fault("status", "slow", delay=0.5)

    started = time.monotonic()
    response = api.get(f"/v1/requests/{request_id}/status")

    assert time.monotonic() - started >= 0.5
    assert response.status_code == 200
    assert response.json()["request_id"] == request_id


def test_slow_fault_does_not_block_other_calls(api: httpx.Client, emulator: EmulatorHandle) -> None:
    emulator.inject_fault("model", "slow", delay=1.0)

    async def race() -> float:
        headers = {"Authorization": f"Bearer {emulator.token}"}
        async with httpx.AsyncClient(base_url=emulator.base_url, headers=headers, trust_env=False) as client:
            slow = asyncio.create_task(client.get(f"/v1/models/{MODEL_ID}"))
            await await_until(lambda: emulator.counters()["calls"]["model"] == 1)
            started = time.monotonic()
            await client.get("/v1/requests/x/status")
            elapsed = time.monotonic() - started
            await slow
            return elapsed

    assert asyncio.run(race()) < 0.5


def test_error_200_fault(api: httpx.Client, emulator: EmulatorHandle) -> None:
    emulator.inject_fault("submit", "error_200")

    response = submit(api, emulator)

    assert_error_body(response, 200, 500001)
    assert emulator.counters()["submissions"] == 0


def test_any_endpoint_fault_hits_whichever_call_comes_next(
    api: httpx.Client, emulator: EmulatorHandle
) -> None:
    emulator.inject_fault("any", 503, count=2)

    assert api.get(f"/v1/models/{MODEL_ID}").status_code == 503
    assert api.get("/v1/requests/x/result").status_code == 503
    assert api.get("/v1/requests/x/result").status_code == 404


def test_rate_fault_hits_a_fraction_of_calls_until_cleared(
    api: httpx.Client, emulator: EmulatorHandle
) -> None:
    emulator.configure(seed=11)
    emulator.inject_fault("status", 500, rate=0.3)

    statuses = [api.get("/v1/requests/x/status").status_code for _ in range(60)]
    failures = statuses.count(500)
    assert 5 <= failures <= 35
    assert failures + statuses.count(404) == 60

    emulator.clear_faults()
    assert {api.get("/v1/requests/x/status").status_code for _ in range(10)} == {404}
    assert emulator.counters()["faults_injected"] == failures


def test_rate_faults_repeat_with_the_same_seed(api: httpx.Client, emulator: EmulatorHandle) -> None:
    def pattern() -> list[int]:
        emulator.reset()
        emulator.configure(seed=5)
        emulator.inject_fault("status", 500, rate=0.5)
        return [api.get("/v1/requests/x/status").status_code for _ in range(20)]

    assert pattern() == pattern()


def test_download_only_faults_are_refused_elsewhere(emulator: EmulatorHandle) -> None:
    with pytest.raises(EmulatorError, match="download"):
        emulator.inject_fault("status", "truncate")
    with pytest.raises(EmulatorError, match="422"):
        emulator.inject_fault("status", "teapot")


def test_truncate_fault_sends_half_of_the_declared_body(api: httpx.Client, emulator: EmulatorHandle) -> None:
    url = video_url(api, finished_job(api, emulator))
    emulator.inject_fault("download", "truncate")

    received: list[bytes] = []
    with api.stream("GET", url) as response:
        declared = int(response.headers["Content-Length"])
        with pytest.raises(httpx.RemoteProtocolError):
            received.extend(response.iter_raw())

    assert declared == OUTPUT_BYTES
    assert len(b"".join(received)) == OUTPUT_BYTES // 2
    assert emulator.counters()["bytes_served"] == OUTPUT_BYTES // 2
    assert len(api.get(url).content) == OUTPUT_BYTES


def test_expired_fault_on_download_is_410(api: httpx.Client, emulator: EmulatorHandle) -> None:
    url = video_url(api, finished_job(api, emulator))
    emulator.inject_fault("download", "expired")

    assert api.get(url).status_code == 410
    assert api.get(url).status_code == 200


def test_reset_fault_on_download(api: httpx.Client, emulator: EmulatorHandle) -> None:
    url = video_url(api, finished_job(api, emulator))
    emulator.inject_fault("download", "reset")

    with pytest.raises(TRANSPORT_FAILURES):
        api.get(url)
    assert emulator.counters()["bytes_served"] == 0


# Outputs


def test_output_is_an_mp4_whose_boxes_add_up_to_content_length(
    api: httpx.Client, emulator: EmulatorHandle
) -> None:
    response = api.get(video_url(api, finished_job(api, emulator)))

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "video/mp4"
    assert response.headers["Accept-Ranges"] == "bytes"
    data = response.content
    assert int(response.headers["Content-Length"]) == len(data) == OUTPUT_BYTES
    boxes = top_level_boxes(data)
    assert [kind for kind, _ in boxes] == ["ftyp", "moov", "mdat"]
    assert sum(size for _, size in boxes) == len(data)
    assert data[8:12] == b"isom"
    moov_start = boxes[0][1]
    moov = data[moov_start : moov_start + boxes[1][1]]
    assert child_boxes(moov) == ["mvhd", "trak"]


def test_output_bytes_are_deterministic_per_request(api: httpx.Client, emulator: EmulatorHandle) -> None:
    first_url = video_url(api, finished_job(api, emulator))
    second_url = video_url(api, finished_job(api, emulator))

    first = api.get(first_url).content

    assert api.get(first_url).content == first
    assert api.get(second_url).content != first


def test_output_size_is_configurable_per_job(api: httpx.Client, emulator: EmulatorHandle) -> None:
    url = video_url(api, finished_job(api, emulator, output_bytes=3_000_000))

    response = api.get(url)

    assert len(response.content) == 3_000_000
    assert sum(size for _, size in top_level_boxes(response.content)) == 3_000_000
    assert emulator.counters()["bytes_served"] == 3_000_000


def test_outputs_over_4_gib_use_a_64_bit_mdat_size(api: httpx.Client, emulator: EmulatorHandle) -> None:
    size = 5 * 1024**3
    url = video_url(api, finished_job(api, emulator, output_bytes=size))

    head = api.head(url)
    assert head.status_code == 200
    assert int(head.headers["Content-Length"]) == size
    start = api.get(url, headers={"Range": "bytes=0-4095"}).content
    ftyp_size = struct.unpack(">I", start[:4])[0]
    moov_size = struct.unpack(">I", start[ftyp_size : ftyp_size + 4])[0]
    mdat_start = ftyp_size + moov_size
    mdat_header = start[mdat_start : mdat_start + 16]
    assert mdat_header[:8] == struct.pack(">I", 1) + b"mdat"
    assert mdat_start + struct.unpack(">Q", mdat_header[8:])[0] == size
    tail = api.get(url, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206
    assert tail.headers["Content-Range"] == f"bytes {size - 10}-{size - 1}/{size}"
    assert len(tail.content) == 10


def test_abandoned_download_stops_streaming(api: httpx.Client, emulator: EmulatorHandle) -> None:
    size = 256 * 1024 * 1024
    url = video_url(api, finished_job(api, emulator, output_bytes=size))

    with api.stream("GET", url) as response:
        for index, _ in enumerate(response.iter_raw()):
            if index == 4:
                break
    time.sleep(0.3)

    assert emulator.counters()["bytes_served"] < size // 4


def test_range_requests(api: httpx.Client, emulator: EmulatorHandle) -> None:
    url = video_url(api, finished_job(api, emulator))
    full = api.get(url).content
    size = len(full)

    first = api.get(url, headers={"Range": "bytes=0-99"})
    middle = api.get(url, headers={"Range": "bytes=1000-"})
    suffix = api.get(url, headers={"Range": "bytes=-50"})
    past_end = api.get(url, headers={"Range": f"bytes=10-{size + 500}"})

    assert first.status_code == 206
    assert first.headers["Content-Range"] == f"bytes 0-99/{size}"
    assert first.headers["Content-Length"] == "100"
    assert first.content == full[:100]
    assert middle.status_code == 206
    assert middle.content == full[1000:]
    assert suffix.content == full[-50:]
    assert past_end.content == full[10:]


def test_unsatisfiable_range_is_416(api: httpx.Client, emulator: EmulatorHandle) -> None:
    url = video_url(api, finished_job(api, emulator))

    response = api.get(url, headers={"Range": f"bytes={OUTPUT_BYTES}-"})

    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{OUTPUT_BYTES}"


def test_multiple_ranges_are_answered_with_the_whole_file(
    api: httpx.Client, emulator: EmulatorHandle
) -> None:
    url = video_url(api, finished_job(api, emulator))

    response = api.get(url, headers={"Range": "bytes=0-1,5-9"})

    assert response.status_code == 200
    assert len(response.content) == OUTPUT_BYTES


def test_downloads_need_no_token_but_a_valid_signature(api: httpx.Client, emulator: EmulatorHandle) -> None:
    request_id = finished_job(api, emulator)
    url = video_url(api, request_id)

    assert httpx.get(url, trust_env=False).status_code == 200
    assert httpx.get(url.replace("sig=", "sig=0"), trust_env=False).status_code == 403
    assert httpx.get(url.split("?")[0], trust_env=False).status_code == 403


def test_expired_output_url_is_403_and_a_fresh_result_works(
    api: httpx.Client, emulator: EmulatorHandle
) -> None:
    emulator.configure(output_url_ttl=1.5)
    request_id = finished_job(api, emulator)
    stale = video_url(api, request_id)
    assert api.get(stale).status_code == 200

    wait_until(lambda: time.time() * 1000 > url_expiry_ms(stale))

    assert_error_body(api.get(stale), 403, 403001)
    # Long enough that the fresh URL cannot expire before it is fetched, however busy the machine.
    emulator.configure(output_url_ttl=60)
    fresh = video_url(api, request_id)
    assert fresh != stale
    assert api.get(fresh).status_code == 200


@pytest.mark.parametrize(
    ("output_key", "outputs"), [("video", 1), ("videos", 1), ("videos", 3), ("image", 1), ("images", 2)]
)
def test_output_keys_and_counts(
    api: httpx.Client, emulator: EmulatorHandle, output_key: str, outputs: int
) -> None:
    request_id = finished_job(api, emulator, output_key=output_key, outputs=outputs)

    output = result(api, request_id)["output"]

    assert list(output) == [output_key]
    urls = [output[output_key]] if output_key in ("video", "image") else output[output_key]
    assert len(urls) == outputs
    assert len(set(urls)) == outputs
    for url in urls:
        assert api.get(url).content[4:8] == b"ftyp"


def test_explicit_output_urls_are_reported_verbatim(api: httpx.Client, emulator: EmulatorHandle) -> None:
    urls = ["https://evil.example.com/video.mp4", "https://cdn.runcomfy.net/out/../../etc/passwd.mp4"]
    request_id = finished_job(api, emulator, output_key="videos", output_urls=urls)

    assert result(api, request_id)["output"] == {"videos": urls}


def test_singular_output_key_refuses_several_outputs(emulator: EmulatorHandle) -> None:
    with pytest.raises(EmulatorError, match="videos"):
        emulator.script_jobs(output_key="video", outputs=3)


def test_output_of_an_unfinished_job_is_404(api: httpx.Client, emulator: EmulatorHandle) -> None:
    request_id = finished_job(api, emulator)
    url = video_url(api, request_id)
    emulator.reset()

    assert_error_body(api.get(url), 404, 404001)


# Control plane


def test_counters_count_api_calls_connections_and_bytes(api: httpx.Client, emulator: EmulatorHandle) -> None:
    request_id = finished_job(api, emulator)
    api.get(f"/v1/requests/{request_id}/status")
    api.get(f"/v1/requests/{request_id}/status")
    url = video_url(api, request_id)
    api.get(url)
    api.post(f"/v1/requests/{request_id}/cancel")
    api.get(f"/v1/models/{MODEL_ID}")
    emulator.requests()
    emulator.faults()

    counters = emulator.counters()

    assert counters["submissions"] == 1
    assert counters["calls"] == {
        "submit": 1,
        "status": 2,
        "result": 1,
        "cancel": 1,
        "download": 1,
        "model": 1,
        "balance": 0,
    }
    assert counters["calls_per_request"] == {
        request_id: {"status": 2, "result": 1, "cancel": 1, "download": 1}
    }
    assert counters["bytes_served"] == OUTPUT_BYTES
    assert counters["connections"] >= 1
    assert counters["faults_injected"] == 0
    assert counters["cancellations"] == 0


def test_new_connections_are_counted(emulator: EmulatorHandle) -> None:
    before = emulator.counters()["connections"]
    for _ in range(3):
        with httpx.Client(trust_env=False) as client:
            client.get(f"{emulator.base_url}/v1/requests/x/status")

    assert emulator.counters()["connections"] == before + 3


def test_reset_forgets_jobs_faults_scripts_and_config(api: httpx.Client, emulator: EmulatorHandle) -> None:
    request_id = submit_id(api, emulator)
    emulator.configure(queue_seconds=99, extra_fields=True)
    emulator.inject_fault("status", 500, count=5)
    emulator.script_jobs(outcome="failed")

    emulator.reset()

    counters = emulator.counters()
    assert counters["submissions"] == 0
    assert counters["calls"]["submit"] == 0
    assert counters["calls_per_request"] == {}
    assert emulator.faults() == []
    assert emulator.config()["queue_seconds"] == 0.2
    assert emulator.config()["extra_fields"] is False
    assert emulator.requests() == []
    assert api.get(f"/v1/requests/{request_id}/status").status_code == 404
    done = finished_job(api, emulator)
    assert result(api, done)["status"] == "succeeded"


def test_bad_configuration_is_refused_and_changes_nothing(emulator: EmulatorHandle) -> None:
    with pytest.raises(EmulatorError, match="422"):
        emulator.configure(queue_seconds=-1)
    with pytest.raises(EmulatorError, match="422"):
        emulator.configure(no_such_setting=True)
    with pytest.raises(EmulatorError, match="422"):
        emulator.configure(message_field="msg")

    assert emulator.config()["queue_seconds"] == 0.2


def test_connection_json_points_a_provider_at_the_emulator(emulator: EmulatorHandle) -> None:
    connection = json.loads(emulator.connection_json(timeout=5))

    assert connection == {
        "conn_type": "dreamina",
        "host": emulator.base_url,
        "password": "emulator-token",
        "extra": {
            "allowed_output_hosts": ["127.0.0.1"],
            "allowed_image_hosts": ["127.0.0.1"],
            "account_url": emulator.base_url,
            "timeout": 5,
        },
    }


def test_a_thousand_concurrent_pollers(api: httpx.Client, emulator: EmulatorHandle) -> None:
    request_ids = [submit_id(api, emulator) for _ in range(10)]
    url = httpx.URL(emulator.base_url)

    # Raw connections rather than an httpx pool, whose bookkeeping is slow at this many connections.
    async def poll(request_id: str) -> bytes:
        reader, writer = await asyncio.open_connection(url.host, url.port)
        writer.write(
            f"GET /v1/requests/{request_id}/status HTTP/1.1\r\nHost: {url.netloc.decode()}\r\n"
            f"Authorization: Bearer {emulator.token}\r\nConnection: close\r\n\r\n".encode()
        )
        answer = await reader.read()
        writer.close()
        return answer.split(b"\r\n", 1)[0]

    async def poll_all() -> list[bytes]:
        return await asyncio.gather(*(poll(request_id) for request_id in request_ids * 100))

    assert set(asyncio.run(poll_all())) == {b"HTTP/1.1 200 OK"}
    counters = emulator.counters()
    assert counters["calls"]["status"] == 1000
    assert counters["connections"] >= 1000


# The process


def test_command_line_prints_the_listening_line() -> None:
    package_root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_dreamina.emulator", "--port", "0", "--run-seconds", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=package_root,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        assert line.startswith("emulator listening on http://127.0.0.1:")
        base_url = line.split()[-1]
        assert httpx.get(f"{base_url}/_emulator/health", trust_env=False).json() == {"status": "ok"}
        assert httpx.get(f"{base_url}/_emulator/config", trust_env=False).json()["run_seconds"] == 0.1
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_startup_failure_reports_the_emulator_stderr() -> None:
    with pytest.raises(EmulatorError, match="queue_seconds"), run_emulator(queue_seconds=-5):
        pass


def test_importing_the_package_does_not_load_the_server() -> None:
    package_root = Path(__file__).resolve().parents[2]
    code = "import sys, airflow_provider_dreamina.emulator; print({'fastapi', 'uvicorn'} & set(sys.modules))"

    output = subprocess.run([sys.executable, "-c", code], cwd=package_root, capture_output=True, check=True)

    assert output.stdout.decode().strip() == "set()"
