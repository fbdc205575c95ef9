"""What an HTTP answer from RunComfy means: a model of its body, or the typed error it stands for.

An answer is untrusted: any JSON value may sit in any position (numbers where text belongs, nulls,
objects, huge or non-finite numbers), so every reading here checks a value's type before using it.
The API token is masked in the decoded body before anything else reads it (an error body can
echo the request, ``Authorization`` header included), so no model, message, detail or log line
made from an answer can carry it.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import httpx

from airflow_provider_dreamina.exceptions import (
    DreaminaAPIError,
    DreaminaAuthError,
    DreaminaInsufficientBalanceError,
    DreaminaNotFoundError,
    DreaminaRateLimitError,
    DreaminaRejectedInputError,
    DreaminaServerError,
)
from airflow_provider_dreamina.redaction import map_strings, shorten, without_queries, without_secret
from airflow_provider_dreamina.runcomfy.calls import AnswerT, Call
from airflow_provider_dreamina.runcomfy.reading import UnreadableAnswer, json_of
from airflow_provider_dreamina.runcomfy.retries import parse_retry_after
from airflow_provider_dreamina.runcomfy.settings import DreaminaSettings

if TYPE_CHECKING:
    from airflow_provider_dreamina.runcomfy.retries import Attempts

# An error's ``detail`` travels with the exception; beyond this size only its start is kept.
_DETAIL_MAX_CHARS = 4000
_MESSAGE_MAX_CHARS = 500
# The keys RunComfy's APIs put their message under.
_MESSAGE_KEYS = ("error_message", "message", "error", "detail")
# RunComfy's documented error codes have six digits; anything longer is not one.
_ERROR_CODE_MAX = 10**9


def body_of(response: httpx.Response, token: str) -> Any:
    """The JSON value of an answer with the token masked in every string (keys included).

    :raises UnreadableAnswer: the body is not JSON, or nests too deep.
    """
    return map_strings(json_of(response.content), lambda text: without_secret(text, token))


def error_for(
    call: Call[Any], response: httpx.Response, settings: DreaminaSettings
) -> DreaminaAPIError | None:
    """The error an answer stands for, or None when it is a success.

    Some RunComfy APIs answer HTTP 200 with a top-level ``error_code``: that is an error too.
    """
    try:
        body = body_of(response, settings.token)
    except UnreadableAnswer:
        body = None
    body = body if isinstance(body, dict) else {}
    raw_code = body.get("error_code")
    has_error_code = raw_code is not None and raw_code is not False and raw_code not in (0, "")
    if response.is_success and not has_error_code:
        return None
    status = response.status_code
    error_code = _error_code(raw_code)
    # RunComfy may quote what it could not fetch: a signed image URL keeps its signature in its query.
    text = _error_message(body) or response.reason_phrase or "no message"
    message = without_queries(shorten(without_secret(text, settings.token), _MESSAGE_MAX_CHARS))
    common: dict[str, Any] = {
        "status_code": status,
        "error_code": error_code,
        "request_id": call.request_id,
        "detail": _bounded_detail(body.get("detail"), settings.token),
    }
    conn = f"connection '{settings.conn_id}'"
    if status == 401 or error_code == 400004:
        return DreaminaAuthError(
            f"token rejected: check the password (API token) of {conn} ({message})", **common
        )
    if status == 403 or error_code == 403001:
        return DreaminaAuthError(
            f"permission denied: the API token of {conn} may not use this model or request ({message})",
            **common,
        )
    if status == 402 or error_code == 400002:
        return DreaminaInsufficientBalanceError(
            f"insufficient balance on the RunComfy account of {conn}: top it up, then run the task "
            f"again ({message})",
            **common,
        )
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return DreaminaRateLimitError(
            f"rate limited by RunComfy ({message})", retry_after=retry_after, **common
        )
    if status >= 500 or error_code == 500001:
        return DreaminaServerError(f"RunComfy server error on {call.name} ({message})", **common)
    if status == 404 or error_code == 404001:
        subject = f"request {call.request_id}" if call.request_id else "the model id"
        return DreaminaNotFoundError(f"{subject} is unknown to RunComfy or has expired ({message})", **common)
    if status in (400, 422) or error_code in (400001, 422001):
        return DreaminaRejectedInputError(
            f"RunComfy rejected the input: {message}", field=_detail_field(body.get("detail")), **common
        )
    return DreaminaAPIError(f"RunComfy answered {call.name} with an error ({message})", **common)


def parse(call: Call[AnswerT], attempts: Attempts, response: httpx.Response) -> AnswerT:
    """The body of a successful answer as the call's model, token masked; anything else is
    ``attempts.unreadable`` (after a paid call: uncertain), whatever the body holds."""
    try:
        return call.answer.model_validate(body_of(response, attempts.settings.token))
    except UnreadableAnswer as error:
        reason = str(error)
    except Exception as error:  # pydantic's ValidationError, or anything a hostile body provokes
        reason = f"{type(error).__name__}: {shorten(without_secret(str(error), attempts.settings.token))}"
    attempts.unreadable(reason, response.status_code)


def _error_code(value: Any) -> int | None:
    """A numeric ``error_code`` as an int; None for anything that is not a plausible code."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 9:
        value = int(value.strip())
    return value if isinstance(value, int) and 0 <= value < _ERROR_CODE_MAX else None


def _bounded_detail(detail: Any, token: str) -> Any:
    if detail is None:
        return None
    detail = map_strings(
        detail, lambda text: without_queries(shorten(without_secret(text, token), _DETAIL_MAX_CHARS))
    )
    text = json.dumps(detail, default=str)
    if len(text) <= _DETAIL_MAX_CHARS:
        return detail
    return shorten(without_secret(text, token), _DETAIL_MAX_CHARS)


def _text(value: Any, limit: int = _MESSAGE_MAX_CHARS) -> str:
    """Any JSON value as short text."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return shorten(text, limit)


def _error_message(body: dict[str, Any]) -> str | None:
    # The message field's name varies between RunComfy's APIs, and so does its shape.
    for key in _MESSAGE_KEYS:
        value = body.get(key)
        if value is None or value == "" or value == [] or value == {}:
            continue
        if isinstance(value, dict):
            inner = value.get("message") or value.get("msg")
            return _text(inner if inner is not None else value)
        if isinstance(value, list):
            return "; ".join(_problem(item) for item in value[:20])
        return _text(value)
    return None


def _problem(item: Any) -> str:
    """One entry of a validation error list: ``{loc, msg}`` as ``field: message``."""
    if not isinstance(item, dict):
        return _text(item, 200)
    where = _location(item.get("loc"))
    text = _text(item.get("msg") or item.get("message") or item, 200)
    return f"{where}: {text}" if where else text


def _location(loc: Any) -> str:
    parts = loc if isinstance(loc, (list, tuple)) else [] if loc is None else [loc]
    return ".".join(_text(part, 50) for part in parts[:10] if part != "body")


def _detail_field(detail: Any) -> str | None:
    if not isinstance(detail, list) or not detail or not isinstance(detail[0], dict):
        return None
    location = _location(detail[0].get("loc"))
    return location.rsplit(".", 1)[-1] if location else None
