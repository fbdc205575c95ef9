"""What an HTTP answer from RunComfy means: a model of its body, or the typed error it stands for."""

from __future__ import annotations

import json
from typing import Any

import httpx

from airflow_provider_dreamina.exceptions import (
    DreaminaAPIError,
    DreaminaAuthError,
    DreaminaInsufficientBalanceError,
    DreaminaNotFoundError,
    DreaminaRateLimitError,
    DreaminaRejectedInputError,
    DreaminaServerError,
    DreaminaUnreadableAnswerError,
)
from airflow_provider_dreamina.redaction import map_strings, shorten, without_queries, without_secret
from airflow_provider_dreamina.runcomfy.calls import AnswerT, Call
from airflow_provider_dreamina.runcomfy.reading import UnreadableAnswer, json_of
from airflow_provider_dreamina.runcomfy.retries import parse_retry_after
from airflow_provider_dreamina.runcomfy.settings import DreaminaSettings

# An error's ``detail`` travels with the exception; beyond this size only its start is kept.
_DETAIL_MAX_CHARS = 4000


def error_for(
    call: Call[Any], response: httpx.Response, settings: DreaminaSettings
) -> DreaminaAPIError | None:
    """The error an answer stands for, or None when it is a success.

    Some RunComfy APIs answer HTTP 200 with a top-level ``error_code``: that is an error too.
    """
    try:
        body = json_of(response.content)
    except UnreadableAnswer:
        body = None
    has_error_code = isinstance(body, dict) and body.get("error_code") not in (None, 0, "")
    if response.is_success and not has_error_code:
        return None
    status = response.status_code
    body = body if isinstance(body, dict) else {}
    try:
        error_code: int | None = int(body["error_code"]) if has_error_code else None
    except (TypeError, ValueError):
        error_code = None
    # RunComfy may quote what it could not fetch: a signed image URL keeps its signature in its query.
    message = without_queries(
        shorten(
            without_secret(_error_message(body) or response.reason_phrase or "no message", settings.token),
            500,
        )
    )
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


def parse(call: Call[AnswerT], response: httpx.Response) -> AnswerT:
    """The body of a successful answer as the call's model; :class:`DreaminaUnreadableAnswerError`
    for anything else, whatever the body holds (no other exception escapes)."""
    try:
        return call.answer.model_validate(json_of(response.content))
    except UnreadableAnswer as error:
        reason = str(error)
    except Exception as error:  # pydantic's ValidationError, or anything a hostile body provokes
        reason = f"{type(error).__name__}: {shorten(str(error))}"
    raise unreadable(call, response.status_code, reason)


def unreadable(call: Call[Any], status_code: int, reason: str) -> DreaminaUnreadableAnswerError:
    """The error of an answer that could not be read (see ``reading``)."""
    return DreaminaUnreadableAnswerError(
        f"RunComfy answered {call.name} with a body this provider cannot read: {reason}",
        status_code=status_code,
        request_id=call.request_id,
    )


def _bounded_detail(detail: Any, token: str) -> Any:
    if detail is None:
        return None
    detail = map_strings(detail, lambda text: without_queries(shorten(text, _DETAIL_MAX_CHARS)))
    text = json.dumps(detail, default=str)
    if len(text) <= _DETAIL_MAX_CHARS:
        return detail
    return shorten(without_secret(text, token), _DETAIL_MAX_CHARS)


def _error_message(body: dict[str, Any]) -> str | None:
    # The message field's name varies between RunComfy's APIs.
    for key in ("error_message", "message", "error", "detail"):
        value = body.get(key)
        if not value:
            continue
        if isinstance(value, str):
            return value
        if isinstance(value, dict):
            return str(value.get("message") or value.get("msg") or value)
        if isinstance(value, list):
            parts = []
            for item in value:
                if isinstance(item, dict):
                    where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                    text = str(item.get("msg") or item.get("message") or item)
                    parts.append(f"{where}: {text}" if where else text)
                else:
                    parts.append(str(item))
            return "; ".join(parts)
        return str(value)
    return None


def _detail_field(detail: Any) -> str | None:
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        location = [str(part) for part in detail[0].get("loc", ()) if part != "body"]
        return location[-1] if location else None
    return None
