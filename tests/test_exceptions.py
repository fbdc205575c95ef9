"""Every error has a stable code; a trigger event revives it by that code, whatever its class is called."""

from __future__ import annotations

import inspect
import json
from typing import Any

import pytest

from airflow_provider_dreamina import exceptions
from airflow_provider_dreamina.exceptions import DreaminaError, DreaminaWaitError, error_class
from airflow_provider_dreamina.models import RequestResult
from airflow_provider_dreamina.waiting.outcome import RequestEvent

ERROR_CLASSES = sorted(
    (
        value
        for value in vars(exceptions).values()
        if inspect.isclass(value) and issubclass(value, DreaminaError)
    ),
    key=lambda cls: cls.__name__,
)

# The arguments each class is built with in the code; enough to fill every attribute it has.
ARGUMENTS: dict[str, dict[str, Any]] = {
    "DreaminaInvalidInputError": {"field": "seed"},
    "DreaminaAPIError": {"status_code": 418, "error_code": 400001, "request_id": "r-1", "detail": ["x"]},
    "DreaminaUnreadableAnswerError": {"status_code": 200, "request_id": "r-1"},
    "DreaminaAuthError": {"status_code": 401},
    "DreaminaInsufficientBalanceError": {"status_code": 402, "error_code": 400002},
    "DreaminaNotFoundError": {"status_code": 404, "request_id": "r-1"},
    "DreaminaRejectedInputError": {"status_code": 422, "field": "prompt"},
    "DreaminaRateLimitError": {"status_code": 429, "retry_after": 2.5},
    "DreaminaServerError": {"status_code": 503},
    "DreaminaSubmitUncertainError": {"model_id": "bytedance/dreamina-3-0/pro/image-to-video"},
    "DreaminaRequestError": {"request_id": "r-1"},
    "DreaminaRequestFailedError": {"request_id": "r-1"},
    "DreaminaRequestCancelledError": {"request_id": "r-1"},
    "DreaminaTimeoutError": {"request_id": "r-1"},
    "DreaminaWaitError": {"request_id": "r-1"},
    "DreaminaTransientWaitError": {"request_id": "r-1"},
    "DreaminaDownloadError": {"url": "https://x.runcomfy.net/v.mp4"},
    "DreaminaDownloadInterruptedError": {"url": "https://x.runcomfy.net/v.mp4"},
    "DreaminaInvalidVideoError": {"url": "https://x.runcomfy.net/v.mp4"},
    "DreaminaDestinationFullError": {},
    "DreaminaVideoIndexTooLargeError": {"url": "https://x.runcomfy.net/v.mp4"},
    "DreaminaSpendLimitError": {"price_usd": 0.5, "balance_usd": 3.0, "limit_usd": 5.0},
    "DreaminaBalanceReserveError": {"price_usd": 0.5, "balance_usd": 3.0, "limit_usd": 5.0},
    "DreaminaBudgetExceededError": {"price_usd": 50.0, "limit_usd": 20.0},
}


def build(cls: type[DreaminaError]) -> DreaminaError:
    if cls.__name__ == "DreaminaImageRefusedError":
        return cls("refused")  # type: ignore[call-arg]
    return cls(f"{cls.__name__} happened", **ARGUMENTS.get(cls.__name__, {}))  # type: ignore[call-arg]


def test_every_class_declares_its_own_unique_code() -> None:
    codes = [cls.__dict__.get("code") for cls in ERROR_CLASSES]
    assert None not in codes, [cls.__name__ for cls in ERROR_CLASSES if "code" not in cls.__dict__]
    assert len(set(codes)) == len(codes)
    assert all(error_class(cls.code) is cls for cls in ERROR_CLASSES)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_is_revived_from_its_event_as_it_was(cls: type[DreaminaError]) -> None:
    error = build(cls)
    result = RequestResult(request_id="r-1", status="failed", error="it broke")
    if isinstance(error, exceptions.DreaminaRequestError):
        error.result = result
    event = json.loads(json.dumps(RequestEvent.failed("r-1", error).model_dump(mode="json")))

    revived = RequestEvent.model_validate(event).to_error()

    assert type(revived) is cls
    assert str(revived) == str(error)
    assert revived.retryable is error.retryable
    for name, value in vars(error).items():
        if name == "result":
            assert getattr(revived, "result", None) == result
        else:
            assert getattr(revived, name) == value, name


def test_an_event_names_its_error_by_code_so_a_renamed_class_still_revives() -> None:
    event = RequestEvent.failed("r-1", exceptions.DreaminaTimeoutError("late", request_id="r-1"))
    stored = event.model_dump(mode="json")
    assert stored["error"]["code"] == "timeout"
    assert "DreaminaTimeoutError" not in json.dumps(stored["error"])


def test_an_unknown_code_revives_as_a_wait_error_with_its_message() -> None:
    event = {"status": "error", "request_id": "r-1", "message": "m", "error": {"code": "from-the-future"}}
    revived = RequestEvent.model_validate(event).to_error()
    assert type(revived) is DreaminaWaitError
    assert str(revived) == "m"


def test_a_code_cannot_be_taken_twice() -> None:
    with pytest.raises(TypeError, match="reuses the code"):

        class Copycat(DreaminaError):
            code = "timeout"
