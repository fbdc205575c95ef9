"""An outsider's attack on the documented guarantees: inputs the authors' tests did not write.

Each test here failed on the code it was written against: an outside review with only the public
docs, after the property tests had passed. Each guarantee it broke is in SECURITY.md.
No emulator: RunComfy is an ``httpx.MockTransport`` that records every request it is sent.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from airflow_provider_dreamina.compat import AirflowFailException
from airflow_provider_dreamina.defaults import STATE_KEY
from airflow_provider_dreamina.exceptions import (
    DreaminaInvalidInputError,
    DreaminaSubmitUncertainError,
)
from airflow_provider_dreamina.hooks.dreamina import DreaminaHook
from airflow_provider_dreamina.models import (
    DEFAULT_MODEL_ID,
    ImageToVideoInput,
    RequestResult,
    RequestStatus,
    SubmittedRequest,
    is_request_id,
)
from airflow_provider_dreamina.operators.dreamina import DreaminaImageToVideoOperator
from tests.helpers import FakeStateStore, FakeTI, data_uri, make_context, parse_record

TOKEN = "tok-outsider-5f1c9a7e42"


@pytest.fixture
def connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_DREAMINA_DEFAULT",
        json.dumps({"conn_type": "dreamina", "password": TOKEN, "host": "https://model-api.runcomfy.net"}),
    )


class Recorder:
    """A RunComfy stand-in: records each request, answers with ``answer(request)``."""

    def __init__(self, answer: Any = None) -> None:
        self.sent: list[tuple[str, str]] = []
        self.answer = answer or (lambda request: httpx.Response(404, json={"error_code": 404001}))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((request.method, request.url.path))
        return self.answer(request)

    def hook(self) -> DreaminaHook:
        return DreaminaHook(transport=httpx.MockTransport(self), max_retries=0)


def operator(recorder: Recorder, **kwargs: Any) -> DreaminaImageToVideoOperator:
    kwargs.setdefault("image_url", data_uri(640, 480))
    op = DreaminaImageToVideoOperator(task_id="generate", prompt="a heron in the reeds", **kwargs)
    op.__dict__["hook"] = recorder.hook()  # the operator's cached hook, talking to the recorder
    return op


# 1. A malformed image URL param escapes as a bare ValueError after the intent was recorded:
#    the task is retried, and the retry reports an orphaned (maybe paid) submit although nothing
#    was ever sent.

MALFORMED_IMAGE_PARAMS = [
    "https://[::1/frame.png",  # unclosed IPv6 literal: urlsplit raises, httpx does not
    "https://ex\u2100ample.com/frame.png",  # U+2100 (a/c) normalises to '/' under NFKC
    "s3://[bucket/frames/frame.png",  # the same for an object-storage URI
]


@pytest.mark.parametrize("image_url", MALFORMED_IMAGE_PARAMS)
def test_a_malformed_image_url_param_is_an_input_error_not_an_orphaned_submit(
    connection: None, image_url: str
) -> None:
    recorder = Recorder()
    store = FakeStateStore()
    with pytest.raises(AirflowFailException) as caught:
        operator(recorder, image_url=image_url, image_roots=["s3://bucket/frames"]).execute(
            make_context(store)
        )
    assert isinstance(caught.value.__cause__, DreaminaInvalidInputError)
    assert caught.value.__cause__.field == "image_urls"
    assert recorder.sent == []
    # Nothing was sent, so nothing may be left pending: a retry must not be told it may have paid.
    # (Refused as input, the URL leaves no record at all.)
    assert STATE_KEY not in store.values or not parse_record(store.values[STATE_KEY]).orphaned


# 2. model_id is templated (a param may set it) and checked with `re.match(...$)`: `$` also
#    matches before a trailing newline, so "…\n" passes the check, httpx then refuses the URL,
#    and the unsent submit is reported as "may have created a paid request" and left orphaned.


def test_a_model_id_with_a_trailing_newline_is_refused_before_anything_is_paid(connection: None) -> None:
    recorder = Recorder()
    store = FakeStateStore()
    with pytest.raises(AirflowFailException) as caught:
        operator(recorder, model_id=DEFAULT_MODEL_ID + "\n").execute(make_context(store))
    assert isinstance(caught.value.__cause__, DreaminaInvalidInputError), repr(caught.value.__cause__)
    assert caught.value.__cause__.field == "model_id"
    assert recorder.sent == []
    assert STATE_KEY not in store.values or not parse_record(store.values[STATE_KEY]).orphaned


# 3. model_id may hold '.' and '..' segments: a param walks the paid, token-bearing submit POST to
#    any path of the API host. Here it cancels another request, whose cancel answer (it carries a
#    request_id) is then taken for this task's own submission, recorded and followed.


def test_a_model_id_cannot_walk_the_paid_post_to_another_endpoint(connection: None) -> None:
    def runcomfy(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/requests/victim-request/cancel":
            return httpx.Response(
                202, json={"request_id": "victim-request", "status": "cancelled", "outcome": "cancelled"}
            )
        return httpx.Response(404, json={"error_code": 404001})

    recorder = Recorder(runcomfy)
    param = "bytedance/../../requests/victim-request/cancel"
    with pytest.raises((AirflowFailException, DreaminaInvalidInputError)) as caught:
        operator(recorder, model_id=param).execute(make_context(FakeStateStore()))
    cause = caught.value.__cause__ if isinstance(caught.value, AirflowFailException) else caught.value
    assert isinstance(cause, DreaminaInvalidInputError) and cause.field == "model_id"
    assert recorder.sent == []


# 4. The request-id rule is also `re.match(...$)`: "r1\n" passes it. A submit answer (untrusted)
#    with a request id ending in a newline is logged, pushed to XCom and stored as this task's
#    request, against the rule "1 to 200 letters, digits, '-', '_', '.', ':'".


@pytest.mark.parametrize("model", [SubmittedRequest, RequestStatus, RequestResult])
def test_a_request_id_ending_in_a_newline_breaks_the_rule_and_is_refused(model: Any) -> None:
    assert not is_request_id("r1\n")
    with pytest.raises(ValueError, match="request_id"):
        model.model_validate({"request_id": "r1\n", "status": "in_queue"})


def test_a_submit_answer_whose_request_id_ends_in_a_newline_is_uncertain(connection: None) -> None:
    recorder = Recorder(lambda request: httpx.Response(200, json={"request_id": "r1\n", "status_url": "x"}))
    with pytest.raises(DreaminaSubmitUncertainError):
        recorder.hook().submit(
            ImageToVideoInput(prompt="p", image_urls=[data_uri(640, 480)]), validate_image=False
        )
    assert len(recorder.sent) == 1


def test_the_operator_never_pushes_or_records_a_request_id_ending_in_a_newline(connection: None) -> None:
    recorder = Recorder(lambda request: httpx.Response(200, json={"request_id": "r1\n", "status_url": "x"}))
    store = FakeStateStore()
    ti = FakeTI()
    with pytest.raises(AirflowFailException):
        operator(recorder).execute(make_context(store, ti))
    assert "request_id" not in ti.xcom
    assert parse_record(store.values[STATE_KEY]).request_id is None


# 5. The example DAG records `"image_url": params.image` in the download's manifest. The submit
#    strips a param's surrounding whitespace and sends " data:image/...;base64,..." inline, but
#    `recorded_image` only recognises "data:" at position 0: the manifest then records the whole
#    inline image, against "Inline data: images ... are never recorded".


@pytest.mark.parametrize("padding", [" ", "\n", "\t"])
def test_an_inline_image_with_leading_whitespace_is_never_recorded(padding: str) -> None:
    from airflow_provider_dreamina.operators.download import DreaminaDownloadOperator

    image = padding + data_uri(640, 480)
    # The submit accepts the param as the example DAG passes it (stripped, sent inline) ...
    assert ImageToVideoInput(prompt="p", image_urls=[image]).image_source == image.strip()
    # ... and the download records it as the example DAG renders it.
    download = DreaminaDownloadOperator(
        task_id="download",
        request_id="r1",
        destination="/tmp/unused",
        generation_input=json.dumps({"prompt": "p", "image_url": image, "seed": -1, "frames": 121}),
    )
    recorded = download._generation_details()
    assert recorded is not None
    assert "base64" not in (recorded.image_url or "")


# 6. "The refusal reads the same whether the file exists or not": a param can still tell whether
#    a name outside the roots is a symbolic link. `os.path.realpath` follows a link met on the way
#    and walks '..' lexically past anything else, so "<outside>/<name>/../root/frame.png" reads the
#    image when <name> is missing (or a plain directory) and is refused when it is a symlink.


def test_a_param_cannot_tell_whether_a_name_outside_the_roots_is_a_symlink(tmp_path: Any) -> None:
    from airflow_provider_dreamina.inputs.prepare import prepare_image
    from airflow_provider_dreamina.inputs.sources import ImagePolicy
    from tests.helpers import image_bytes

    root = tmp_path / "root"
    root.mkdir()
    (root / "frame.png").write_bytes(image_bytes(640, 480))
    outside = tmp_path / "outside"
    (outside / "deep" / "er").mkdir(parents=True)
    (outside / "link").symlink_to(outside / "deep" / "er")  # e.g. ~/.ssh -> /secure/ssh on a worker
    policy = ImagePolicy(roots=(str(root),))

    def outcome(name: str) -> str:
        try:
            prepare_image(f"{outside}/{name}/../../root/frame.png", policy=policy)
        except Exception as error:
            return type(error).__name__
        return "read"

    assert outcome("link") == outcome("no-such-name")
