"""Each RunComfy API call described once, as data that either the sync or the async loop sends."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

from pydantic import BaseModel

from airflow_provider_dreamina.exceptions import DreaminaInvalidInputError
from airflow_provider_dreamina.models import (
    DEFAULT_MODEL_ID,
    AccountBalance,
    CancelOutcome,
    ModelInfo,
    RequestResult,
    RequestStatus,
    SubmittedRequest,
    check_request_id,
)
from airflow_provider_dreamina.redaction import shorten
from airflow_provider_dreamina.runcomfy.settings import DreaminaSettings

AnswerT = TypeVar("AnswerT", bound=BaseModel)

# Path segments of letters, digits, '.', '_' and '-', none of dots alone: "." or ".." would walk the
# paid POST to another endpoint of the API host. Matched whole (fullmatch: "$" would allow a
# trailing newline).
_MODEL_ID_SEGMENT = r"(?!\.+(?:/|\Z))[A-Za-z0-9._-]+"
_MODEL_ID_PATTERN = re.compile(rf"{_MODEL_ID_SEGMENT}(?:/{_MODEL_ID_SEGMENT})*", re.ASCII)
_MODEL_ID_MAX_CHARS = 200
# The undocumented endpoints are asked once more at most: nothing waits on them.
_OPTIONAL_CALL_RETRIES = 1
BALANCE_PATH = "/prod/v2/balance"


@dataclass(frozen=True)
class Call(Generic[AnswerT]):
    """One API call: what to send, what the answer is, and how it may be retried."""

    name: str
    method: str
    path: str
    answer: type[AnswerT]
    json: dict[str, Any] | None = None
    params: dict[str, str] | None = None
    request_id: str | None = None
    # A paid submit: resent only when the server certainly did not see it.
    paid: bool = False
    max_retries: int | None = None
    #: Which configured host answers: the Model API (the client's base URL) or the account API.
    host: Literal["api", "account"] = "api"

    @property
    def model_id(self) -> str:
        return self.path.removeprefix("/v1/models/")

    def url(self, settings: DreaminaSettings) -> str:
        """Where to send the call: a path under the base URL, or under the connection's ``account_url``.

        A call names a host by role, never by URL, so the token only ever goes to the two hosts
        the connection configures.
        """
        return settings.account_url + self.path if self.host == "account" else self.path


def check_model_id(model_id: str) -> str:
    if (
        not isinstance(model_id, str)
        or len(model_id) > _MODEL_ID_MAX_CHARS
        or not _MODEL_ID_PATTERN.fullmatch(model_id)
    ):
        raise DreaminaInvalidInputError(
            f"model_id {shorten(repr(model_id))} is not a RunComfy model id such as {DEFAULT_MODEL_ID!r}"
            f" (segments of letters, digits, '.', '_', '-' joined by '/', none of dots alone; at most"
            f" {_MODEL_ID_MAX_CHARS} characters)",
            field="model_id",
        )
    return model_id


def _request_path(request_id: str, action: str) -> str:
    return f"/v1/requests/{quote(check_request_id(request_id), safe='')}/{action}"


def submit_call(model_id: str, body: dict[str, Any]) -> Call[SubmittedRequest]:
    return Call(
        "submit", "POST", f"/v1/models/{check_model_id(model_id)}", SubmittedRequest, json=body, paid=True
    )


def status_call(request_id: str) -> Call[RequestStatus]:
    return Call("status", "GET", _request_path(request_id, "status"), RequestStatus, request_id=request_id)


def result_call(request_id: str, *, include_cost: bool) -> Call[RequestResult]:
    return Call(
        "result",
        "GET",
        _request_path(request_id, "result"),
        RequestResult,
        params={"include_cost": "true"} if include_cost else None,
        request_id=request_id,
    )


def cancel_call(request_id: str) -> Call[CancelOutcome]:
    return Call("cancel", "POST", _request_path(request_id, "cancel"), CancelOutcome, request_id=request_id)


def model_info_call(model_id: str) -> Call[ModelInfo]:
    return Call(
        "model info",
        "GET",
        f"/v1/models/{check_model_id(model_id)}",
        ModelInfo,
        max_retries=_OPTIONAL_CALL_RETRIES,
    )


def balance_call() -> Call[AccountBalance]:
    return Call(
        "balance", "GET", BALANCE_PATH, AccountBalance, max_retries=_OPTIONAL_CALL_RETRIES, host="account"
    )
