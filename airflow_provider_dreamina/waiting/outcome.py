"""What the end of a request means, decided once for every path.

A terminal result becomes either a success or one typed error; a trigger event carries the
result (losslessly) or the error (by class, message and attributes) and is turned back into the
very same thing, so an ``on_failure_callback`` sees the same cause whether the task waited on a
worker, deferred to the triggerer, or was a sensor.
"""

from __future__ import annotations

import json
from typing import Any, Literal, NoReturn

from pydantic import BaseModel, ConfigDict

from airflow_provider_dreamina import exceptions
from airflow_provider_dreamina.exceptions import (
    DreaminaError,
    DreaminaRequestCancelledError,
    DreaminaRequestError,
    DreaminaRequestFailedError,
    DreaminaWaitError,
)
from airflow_provider_dreamina.models import RequestResult, RequestState

# An error's ``detail`` is bounded to a few KiB where it is read; anything larger stays behind.
_ATTRIBUTE_MAX_CHARS = 8 * 1024

EventKind = Literal["success", "failed", "cancelled", "timeout", "error"]
EVENT_SUCCESS: EventKind = "success"
EVENT_FAILED: EventKind = "failed"
EVENT_CANCELLED: EventKind = "cancelled"
EVENT_TIMEOUT: EventKind = "timeout"
EVENT_ERROR: EventKind = "error"

_KIND_BY_ERROR: dict[type[DreaminaError], EventKind] = {
    DreaminaRequestFailedError: EVENT_FAILED,
    DreaminaRequestCancelledError: EVENT_CANCELLED,
    exceptions.DreaminaTimeoutError: EVENT_TIMEOUT,
}


def error_for_result(result: RequestResult) -> DreaminaRequestError | None:
    """None for a succeeded result; the error a failed, cancelled or unfinished one stands for."""
    request_id = result.request_id
    if result.state is RequestState.SUCCEEDED:
        return None
    if result.state is RequestState.CANCELLED:
        return DreaminaRequestCancelledError(
            f"request {request_id} was cancelled", request_id=request_id, result=result
        )
    if result.state is RequestState.FAILED:
        reason = result.error_message or "RunComfy gave no reason"
        return DreaminaRequestFailedError(
            f"request {request_id} failed: {reason}", request_id=request_id, result=result
        )
    return DreaminaWaitError(
        f"request {request_id} has not finished (status {result.status!r})",
        request_id=request_id,
        result=result,
    )


def raise_for_result(result: RequestResult) -> RequestResult:
    """Return a succeeded result; raise the error of a failed, cancelled or unfinished one."""
    error = error_for_result(result)
    if error is not None:
        raise error
    return result


class RequestEvent(BaseModel):
    """The one small JSON payload a trigger yields; ``execute_complete`` needs nothing else."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    status: EventKind
    request_id: str
    message: str
    #: The whole result answer (``RequestResult.to_event``) when the request finished.
    result: dict[str, Any] | None = None
    #: The error's stable ``code``, message and attributes, for every kind but success.
    error: dict[str, Any] | None = None
    #: What RunComfy charged (the result's ``cost``), None when it did not say.
    cost_usd: float | None = None

    @classmethod
    def succeeded(cls, result: RequestResult) -> RequestEvent:
        message = f"request {result.request_id} succeeded with {len(result.output_urls)} output(s)"
        return cls(
            status=EVENT_SUCCESS,
            request_id=result.request_id,
            message=message,
            result=result.to_event(),
            cost_usd=result.cost,
        )

    @classmethod
    def failed(cls, request_id: str, error: DreaminaError) -> RequestEvent:
        result = getattr(error, "result", None)
        return cls(
            status=_KIND_BY_ERROR.get(type(error), EVENT_ERROR),
            request_id=request_id,
            message=str(error),
            result=result.to_event() if isinstance(result, RequestResult) else None,
            error=_error_payload(error),
            cost_usd=result.cost if isinstance(result, RequestResult) else None,
        )

    def finished_result(self) -> RequestResult:
        """The succeeded result this event carries; raises the error it carries otherwise."""
        if self.status == EVENT_SUCCESS and self.result is not None:
            return RequestResult.model_validate(self.result)
        raise self.to_error()

    def to_error(self) -> DreaminaError:
        """The error the event stands for, of the same class as on the path that did not defer."""
        result = RequestResult.model_validate(self.result) if self.result else None
        return _error_from_payload(self.error, self.message, self.request_id, result)


def _error_payload(error: DreaminaError) -> dict[str, Any]:
    attributes = {
        name: value for name, value in vars(error).items() if name != "result" and _small_json(value)
    }
    return {
        "code": type(error).code,
        "message": error.args[0] if error.args else str(error),
        "attributes": attributes,
    }


def _small_json(value: Any) -> bool:
    """Whether an attribute can ride in an event as it is: JSON, and small (an event is a database row)."""
    if isinstance(value, (str, int, float, bool, type(None))):
        return True
    try:
        return len(json.dumps(value, allow_nan=False)) <= _ATTRIBUTE_MAX_CHARS
    except (TypeError, ValueError):
        return False


def _error_from_payload(
    payload: dict[str, Any] | None, message: str, request_id: str, result: RequestResult | None
) -> DreaminaError:
    """Rebuild the error by its stable code, without calling its constructor (each class takes its
    own arguments); a code this provider does not know is a :class:`DreaminaWaitError`."""
    error_class = exceptions.error_class((payload or {}).get("code")) or DreaminaWaitError
    error = error_class.__new__(error_class)
    Exception.__init__(error, str((payload or {}).get("message") or message))
    attributes = (payload or {}).get("attributes") or {}
    vars(error).update({name: value for name, value in attributes.items() if isinstance(name, str)})
    if isinstance(error, DreaminaRequestError):
        error.request_id = getattr(error, "request_id", None) or request_id
        error.result = result
    return error


def fail_or_raise(error: DreaminaError) -> NoReturn:
    """Fail the task without retries when running it again cannot help; re-raise otherwise.

    Either way the typed error is what a failure callback finds: as the task's error, or as the
    ``__cause__`` of Airflow's ``AirflowFailException``.
    """
    if error.retryable:
        raise error
    from airflow_provider_dreamina.compat import AirflowFailException

    raise AirflowFailException(str(error)) from error
