"""Properties of every call to RunComfy, against answers nobody on the team wrote (Hypothesis).

Whatever RunComfy (or anything in its place) answers, with any status, headers and body, or a
transport failure, on the sync and the async path:

* only a :class:`DreaminaError` leaves a call; model info and balance answer a value or None;
* a paid submit is sent again only after an attempt that proves nothing was created (connection
  refused, HTTP 429), and any failure after one that may have created a request is
  :class:`DreaminaSubmitUncertainError`;
* the API token planted anywhere in an answer is in no attribute, ``str``, ``repr`` or ``args`` of
  an error, no returned model and no log record (DEBUG included);
* a returned answer holds only bounded, well-formed values.

The strategies, and the profiles that set how many examples run, are in ``tests/strategies.py``.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_dreamina.exceptions import DreaminaError, DreaminaSubmitUncertainError
from airflow_provider_dreamina.hooks.dreamina import DreaminaHook
from airflow_provider_dreamina.models import (
    ERROR_MAX_CHARS,
    MAX_OUTPUTS,
    OUTPUT_URL_MAX_CHARS,
    WORD_MAX_CHARS,
    CancelOutcome,
    GenerationRecord,
    ImageToVideoInput,
    ModelInfo,
    RequestResult,
    RequestStatus,
    SubmittedRequest,
    is_request_id,
)
from tests.helpers import Api
from tests.leaks import assert_no_leak
from tests.strategies import (
    ERROR_CODES,
    REQUEST_ID,
    TIMEOUT_SECONDS,
    TOKEN,
    Failure,
    Outcome,
    Reply,
    Script,
    outcomes,
    scripted_hook,
)

pytestmark = pytest.mark.timeout(TIMEOUT_SECONDS)

#: The refusals RunComfy documents: an answer carrying one proves nothing was created.
REFUSAL_CODES = frozenset(code for code in ERROR_CODES if code != 500001)
#: The statuses RunComfy (and its own clients) refuse a call with (RUNCOMFY_API.md, "Errors").
REFUSAL_STATUSES = frozenset({400, 401, 402, 403, 404, 422, 429})
LOGGERS = ("", "airflow_provider_dreamina", "httpx", "httpcore")

# What each call is asked, and which fields its answers most likely carry.
FREE_CALLS: dict[str, tuple[str, tuple[str, ...], type[Any]]] = {
    "get_status": ("status", ("request_id", "status", "queue_position"), RequestStatus),
    "get_result": ("result", ("request_id", "status", "output", "error"), RequestResult),
    "cancel": ("cancel", ("request_id", "status", "outcome"), bool),
}


def a_hook(script: Script, max_retries: int = 0, **settings: Any) -> DreaminaHook:
    hook: DreaminaHook = scripted_hook(script, max_retries, **settings)
    return hook


def call(hook: DreaminaHook, mode: str, name: str, *args: Any, **kwargs: Any) -> Any:
    """``hook.name(...)`` or, in async mode, its async twin; returns the value or the exception."""
    try:
        return Api(mode)(hook, name, *args, **kwargs)
    except Exception as error:
        return error


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name or None)
    return caplog


def check_answer(answer: Any) -> None:
    """What a returned answer may hold: bounded words, well-formed ids and URLs, finite numbers."""
    if isinstance(answer, (RequestStatus, RequestResult, CancelOutcome, SubmittedRequest)):
        assert is_request_id(answer.request_id)
    if isinstance(answer, (RequestStatus, RequestResult)):
        assert len(answer.status) <= WORD_MAX_CHARS and answer.status.isprintable()
    if isinstance(answer, RequestStatus) and answer.queue_position is not None:
        assert 0 <= answer.queue_position <= 1_000_000
    if isinstance(answer, RequestResult):
        assert len(answer.output_urls) <= 4 * MAX_OUTPUTS
        for url in answer.output_urls:
            assert isinstance(url, str) and len(url) <= OUTPUT_URL_MAX_CHARS and url.isprintable()
        assert answer.cost is None or (math.isfinite(answer.cost) and answer.cost >= 0)
        assert answer.error_message is None or len(answer.error_message) <= 2 * ERROR_MAX_CHARS + 2
        # What the operator, the sensor and the trigger make of it: small, valid JSON.
        record = GenerationRecord.of(answer).to_xcom()
        json.dumps(record, allow_nan=False)
        json.dumps(answer.to_event(), allow_nan=False)


def check_failure(error: BaseException) -> None:
    assert isinstance(error, DreaminaError), f"an untyped {type(error).__name__} escaped: {error!r}"
    str(error), repr(error)


# -- free calls: a value or a typed error, whatever the answer -------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("name", sorted(FREE_CALLS))
@given(data=st.data(), max_retries=st.integers(0, 2))
def test_a_free_call_answers_a_model_or_a_typed_error(
    logs: pytest.LogCaptureFixture, mode: str, name: str, data: st.DataObject, max_retries: int
) -> None:
    logs.clear()
    endpoint, likely, answer_type = FREE_CALLS[name]
    script = Script({endpoint: data.draw(st.lists(outcomes(likely), min_size=1, max_size=3))})
    answer = call(a_hook(script, max_retries), mode, name, REQUEST_ID)
    if isinstance(answer, BaseException):
        check_failure(answer)
    else:
        assert isinstance(answer, answer_type)
        check_answer(answer)
    assert len(script.sent) <= max_retries + 1
    assert_no_leak(TOKEN, answer, records=logs.records)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("name", ["get_model_info", "get_balance"])
@given(data=st.data())
def test_model_info_and_balance_answer_a_value_or_none(
    logs: pytest.LogCaptureFixture, mode: str, name: str, data: st.DataObject
) -> None:
    logs.clear()
    endpoint, likely = (
        ("model", ("base_price_usd", "price_unit"))
        if name == "get_model_info"
        else (
            "balance",
            ("balance_usd", "currency"),
        )
    )
    script = Script({endpoint: data.draw(st.lists(outcomes(likely), min_size=1, max_size=2))})
    answer = call(a_hook(script, 1), mode, name)
    assert not isinstance(answer, BaseException), f"{name} raised {answer!r}"
    if name == "get_balance":
        assert answer is None or (isinstance(answer, float) and math.isfinite(answer))
    else:
        assert answer is None or isinstance(answer, ModelInfo)
        price = answer.base_price_usd if answer is not None else None
        assert price is None or math.isfinite(price)
    assert_no_leak(TOKEN, answer, records=logs.records)


# -- the paid submit: sent once, and uncertain unless refused --------------------------------


def may_have_created(outcome: Outcome) -> bool:
    """Whether RunComfy may have created (and charged for) a request, by what the attempt saw.

    Nothing was created only when the request never left (connection refused, connect or pool
    timeout) or RunComfy refused it: a status it refuses with (400, 401, 402, 403, 404, 422, 429),
    or a documented refusal code on a 2xx answer. Any other 4xx (409 Conflict), whatever its code,
    may have created a request.
    """
    if isinstance(outcome, Failure):
        return not outcome.not_sent
    if outcome.status in REFUSAL_STATUSES:
        return False
    if 200 <= outcome.status < 300:
        try:
            body = json.loads(outcome.body)
        except (ValueError, RecursionError):
            return True
        code = body.get("error_code") if isinstance(body, dict) else None
        if isinstance(code, str) and code.strip().isdecimal():
            code = int(code.strip())
        return not (isinstance(code, (int, float)) and not isinstance(code, bool) and code in REFUSAL_CODES)
    return True


def an_input() -> ImageToVideoInput:
    return ImageToVideoInput(prompt="a lighthouse at dusk", image_urls=["https://images.example/in.png"])


@given(data=st.data(), max_retries=st.integers(0, 3))
def test_a_paid_submit_is_never_resent_once_it_may_have_created_a_request(
    logs: pytest.LogCaptureFixture, data: st.DataObject, max_retries: int
) -> None:
    logs.clear()
    likely = ("request_id", "status_url", "error_code", "error_message", "detail")
    script = Script({"submit": data.draw(st.lists(outcomes(likely), min_size=1, max_size=4))})
    answer = call(a_hook(script, max_retries), "sync", "submit", an_input(), validate_image=False)
    sent = script.outcomes_of("submit")
    assert sent, "the submit was never sent"
    # Only an attempt that proves nothing was created may be followed by another.
    assert not any(may_have_created(outcome) for outcome in sent[:-1]), sent
    if isinstance(answer, BaseException):
        check_failure(answer)
        if may_have_created(sent[-1]):
            assert isinstance(answer, DreaminaSubmitUncertainError), (sent[-1], answer)
    else:
        assert isinstance(answer, SubmittedRequest)
        assert isinstance(sent[-1], Reply) and 200 <= sent[-1].status < 300
        check_answer(answer)
    assert_no_leak(TOKEN, answer, records=logs.records)


@given(data=st.data(), with_record=st.booleans())
def test_a_task_that_airflow_retries_never_pays_twice(data: st.DataObject, with_record: bool) -> None:
    """The submit task, tried up to three times as Airflow would (again after any failure but
    ``AirflowFailException``), with a ``task_state_store`` (3.3) or without any record (3.1/3.2
    without ``state_path``): a POST that may have created a request is the last POST."""
    from airflow_provider_dreamina.compat import AirflowFailException
    from airflow_provider_dreamina.operators.dreamina import DreaminaImageToVideoOperator
    from tests.helpers import FakeStateStore, FakeTI, make_context

    likely = ("request_id", "error_code", "error_message")
    script = Script({"submit": data.draw(st.lists(outcomes(likely), min_size=1, max_size=4))})
    hook, store = a_hook(script, 1), FakeStateStore() if with_record else None
    for number in (1, 2, 3):
        operator = DreaminaImageToVideoOperator(
            task_id="generate",
            prompt="a pier",
            image_url="https://images.example/in.png",
            validate_image=False,
        )
        operator.__dict__["hook"] = hook
        try:
            operator.execute(make_context(store, FakeTI(try_number=number, max_tries=3)))
            break
        except AirflowFailException:
            break
        except DreaminaError:
            continue  # a retryable typed error: Airflow runs the task again
    sent = script.outcomes_of("submit")
    assert not any(may_have_created(outcome) for outcome in sent[:-1]), sent


# -- inputs the properties found, kept as examples -------------------------------------------


def one_answer(call_name: str, reply: Reply, max_retries: int = 0) -> tuple[DreaminaHook, Script]:
    script = Script({call_name: [reply]})
    return a_hook(script, max_retries), script


@pytest.mark.parametrize("status", [100, 101, 302, 303, 307, 700])
def test_a_paid_submit_answered_with_neither_success_nor_refusal_is_uncertain(status: int) -> None:
    """Found as ``Reply(100, b'')``: a 1xx or 3xx (``303 See Other`` answers a POST that created
    something) was taken for a refusal, so the intent was cleared and a retry would pay again."""
    hook, script = one_answer("submit", Reply(status, b'{"request_id": "r9"}'), max_retries=3)
    with pytest.raises(DreaminaSubmitUncertainError):
        hook.submit(an_input(), validate_image=False)
    assert len(script.outcomes_of("submit")) == 1


def test_a_status_line_quoting_the_token_stays_out_of_httpx_log_lines(logs: pytest.LogCaptureFixture) -> None:
    """Found as a cancel answered ``HTTP/1.1 100 <token>``: httpx logs the reason phrase as sent."""
    hook, _ = one_answer("status", Reply(503, b"{}", reason=f"Bearer {TOKEN}".encode()))
    assert isinstance(call(hook, "sync", "get_status", REQUEST_ID), DreaminaError)
    assert any("HTTP Request" in record.getMessage() for record in logs.records)
    assert_no_leak(TOKEN, records=logs.records)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_encoding_header_echoing_the_token_is_not_quoted(mode: str) -> None:
    """Found as ``Content-Encoding: <token>``: the refusal quoted 20 characters of it, a piece no
    masking of the whole token finds."""
    hook, _ = one_answer("status", Reply(200, b"{}", headers=((b"Content-Encoding", TOKEN.encode()),)))
    error = call(hook, mode, "get_status", REQUEST_ID)
    assert isinstance(error, DreaminaError) and "compressed (an unknown encoding)" in str(error)
    assert_no_leak(TOKEN, error)


def test_a_content_length_of_non_ascii_digits_is_ignored() -> None:
    """``"²".isdigit()`` is true, ``int("²")`` fails: the answer was an unforeseen ValueError."""
    body = b'{"request_id": "r1", "status": "in_progress"}'
    hook, _ = one_answer("status", Reply(200, body, headers=((b"Content-Length", "\u00b2".encode()),)))
    assert hook.get_status(REQUEST_ID).status == "in_progress"


@pytest.mark.parametrize(
    "number", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b'"nan"', b'"inf"', b"9" * 400]
)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_price_or_balance_that_is_not_a_finite_number_is_unknown(mode: str, number: bytes) -> None:
    """A NaN price or balance passed every spend check (any comparison with NaN is false)."""
    body = b'{"base_price_usd": ' + number + b', "balance_usd": ' + number + b"}"
    script = Script({"model": [Reply(200, body)], "balance": [Reply(200, body)]})
    hook = a_hook(script, 0)
    info = call(hook, mode, "get_model_info")
    assert info is None or info.base_price_usd is None
    assert call(hook, mode, "get_balance") is None


def test_a_naive_and_an_aware_time_still_give_the_generation_time() -> None:
    """A naive ``created_at`` with an aware ``finished_at`` made the record raise TypeError after
    the paid generation had succeeded."""
    body = json.dumps(
        {
            "request_id": REQUEST_ID,
            "status": "succeeded",
            "created_at": "2026-01-01T00:00:00",
            "finished_at": "2026-01-01T00:01:00Z",
        }
    ).encode()
    hook, _ = one_answer("result", Reply(200, body))
    result = hook.get_result(REQUEST_ID)
    assert result.generation_seconds == 60
    assert GenerationRecord.of(result).to_xcom()["generation_seconds"] == 60


@pytest.mark.parametrize("header", ["1e300", "99999999999", "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_a_retry_after_past_an_hour_is_an_hour(header: str) -> None:
    """``Retry-After: 1e300`` made a wait sleep for ever, or fail with an untyped OverflowError."""
    from airflow_provider_dreamina.runcomfy.retries import RETRY_AFTER_MAX_SECONDS, parse_retry_after

    assert parse_retry_after(header) == RETRY_AFTER_MAX_SECONDS == 3600
