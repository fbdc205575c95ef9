"""Every error the provider raises, in one hierarchy.

This module imports nothing from the hook, so models, operators and user code can catch these
without pulling in HTTP machinery. Messages say what went wrong and what to do about it; none
of them ever contains the API token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from airflow_provider_dreamina.models import RequestResult


_BY_CODE: dict[str, type[DreaminaError]] = {}


class DreaminaError(Exception):
    """Base class of every error raised by the Dreamina provider.

    ``retryable`` is a property of the class, never of one instance: where a failure can be either
    transient or final, there are two classes. ``code`` names the class for good: a trigger event
    stored in Airflow's database names its error by code (see :func:`error_class`), so renaming a
    class never changes what an event already stored means.
    """

    #: Whether running the same task again may succeed without the user changing anything.
    retryable: ClassVar[bool] = False
    #: The class's stable name in trigger events; every class declares its own.
    code: ClassVar[str] = "error"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        code = cls.__dict__.get("code")
        if code is None:
            return  # a user's subclass without a code of its own is revived as its nearest parent
        known = _BY_CODE.get(code)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise TypeError(f"{cls.__name__} reuses the code {code!r} of {known.__name__}")
        _BY_CODE[code] = cls


class DreaminaInvalidInputError(DreaminaError):
    """The input breaks a rule of the Dreamina schema; raised before any money is spent."""

    code = "invalid_input"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class DreaminaImageRefusedError(DreaminaInvalidInputError):
    """The image source breaks the image source policy: it was refused before anything was read.

    Local paths and object storage are read only under roots the DAG author or the deployment
    allowed; fetched URLs must be public ``https``. The message names the rule and how to allow
    the source, never what the file system or the network would have revealed.
    """

    code = "image_refused"

    def __init__(self, message: str) -> None:
        super().__init__(message, field="image_urls")


class DreaminaConfigurationError(DreaminaError):
    """The Airflow connection is incomplete or malformed (for example, it has no API token)."""

    code = "configuration"


class DreaminaAPIError(DreaminaError):
    """RunComfy answered with an error."""

    code = "api"

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        error_code: int | None = None,
        request_id: str | None = None,
        detail: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.error_code = error_code
        self.request_id = request_id
        self.detail = detail

    def __str__(self) -> str:
        code = f", error_code {self.error_code}" if self.error_code is not None else ""
        request = f" [request {self.request_id}]" if self.request_id else ""
        return f"{self.message} (HTTP {self.status_code}{code}){request}"


class DreaminaUnreadableAnswerError(DreaminaAPIError):
    """RunComfy's answer could not be read: too large, compressed, too slow, not JSON or not the
    expected shape. After a paid submit this becomes :class:`DreaminaSubmitUncertainError` instead.
    """

    code = "unreadable_answer"

    retryable = True


class DreaminaAuthError(DreaminaAPIError):
    """The API token is missing, expired, revoked, or lacks permission."""

    code = "auth"


class DreaminaInsufficientBalanceError(DreaminaAPIError):
    """The RunComfy account cannot pay for the generation."""

    code = "insufficient_balance"


class DreaminaNotFoundError(DreaminaAPIError):
    """The request id (or model id) is unknown to RunComfy, or has expired."""

    code = "not_found"


class DreaminaRejectedInputError(DreaminaAPIError, DreaminaInvalidInputError):
    """RunComfy refused the input (HTTP 400 or 422); nothing was created."""

    code = "rejected_input"

    def __init__(self, message: str, *, field: str | None = None, **kwargs: Any) -> None:
        DreaminaAPIError.__init__(self, message, **kwargs)
        self.field = field


class DreaminaRateLimitError(DreaminaAPIError):
    """RunComfy answered 429 more often than the hook was allowed to retry."""

    code = "rate_limited"

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class DreaminaServerError(DreaminaAPIError):
    """RunComfy failed with a 5xx (or error_code 500001) on every attempt."""

    code = "server"

    retryable = True


class DreaminaConnectionError(DreaminaError):
    """RunComfy could not be reached, or stopped answering, on every attempt."""

    code = "connection"

    retryable = True


class DreaminaSubmitUncertainError(DreaminaError):
    """A submit may have created a paid request, but its answer was lost.

    Resending could pay for the same video twice, so the hook never does it on its own.
    """

    code = "submit_uncertain"

    def __init__(self, message: str, *, model_id: str) -> None:
        super().__init__(message)
        self.model_id = model_id


class DreaminaRequestError(DreaminaError):
    """A request reached a state that is not success; carries what RunComfy reported."""

    code = "request"

    def __init__(self, message: str, *, request_id: str, result: RequestResult | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.result = result


class DreaminaRequestFailedError(DreaminaRequestError):
    """The generation ran and failed."""

    code = "request_failed"


class DreaminaRequestCancelledError(DreaminaRequestError):
    """The request was cancelled before it produced anything."""

    code = "request_cancelled"


class DreaminaTimeoutError(DreaminaRequestError):
    """Waiting for the request took longer than the deadline allowed."""

    code = "timeout"

    retryable = True


class DreaminaWaitError(DreaminaRequestError):
    """Waiting for a request stopped on an error that running the task again may not cure."""

    code = "wait"


class DreaminaTransientWaitError(DreaminaWaitError):
    """Waiting for a request stopped after more transient errors in a row than its budget allows."""

    code = "transient_wait"

    retryable = True


class DreaminaDownloadError(DreaminaError):
    """An output could not be saved (refused host, size limit, unwritable target)."""

    code = "download"

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class DreaminaDownloadInterruptedError(DreaminaDownloadError):
    """A transfer kept breaking off; running the task again resumes or restarts it."""

    code = "download_interrupted"

    retryable = True


class DreaminaInvalidVideoError(DreaminaDownloadError):
    """An output that claims to be a video is not one: an HTML page, a truncated file, no video track.

    Retryable: a CDN answering with an error page or cutting a body short usually does not do it twice.
    """

    code = "invalid_video"

    retryable = True


class DreaminaDestinationFullError(DreaminaDownloadError):
    """The destination ran out of space (or hit its file size limit) while an output was written.

    Nothing incomplete is left under the final name; once space is freed, running the task again
    saves the output.
    """

    code = "destination_full"

    retryable = True


class DreaminaVideoIndexTooLargeError(DreaminaInvalidVideoError):
    """A video's index (its ``moov`` box) is larger than the provider reads: the same file fails again."""

    code = "video_index_too_large"

    retryable = False


class DreaminaSpendLimitError(DreaminaError):
    """Paying would pass a limit the user set (a balance reserve, a batch budget); nothing was submitted.

    Not retryable: the balance, the price and the limit do not change by running the task again.
    """

    code = "spend_limit"

    def __init__(
        self,
        message: str,
        *,
        price_usd: float | None = None,
        balance_usd: float | None = None,
        limit_usd: float | None = None,
    ) -> None:
        super().__init__(message)
        self.price_usd = price_usd
        self.balance_usd = balance_usd
        self.limit_usd = limit_usd


class DreaminaBalanceReserveError(DreaminaSpendLimitError):
    """The balance would fall below ``min_balance_usd`` after this generation."""

    code = "balance_reserve"


class DreaminaBudgetExceededError(DreaminaSpendLimitError):
    """A batch would cost more than its budget, or more than the balance can pay."""

    code = "budget_exceeded"


class DreaminaStateError(DreaminaError):
    """The task's record of its paid request could not be read: it is never taken for "no record".

    Not retryable: whether an earlier try paid is unknown until a person looks (the message says
    where the record is and how to submit anew on purpose).
    """

    code = "state"


class DreaminaStateWriteError(DreaminaStateError):
    """The intent could not be recorded before the paid submit: nothing was paid, running again is safe."""

    code = "state_write"
    retryable = True


class DreaminaOrphanedSubmitError(DreaminaError):
    """An earlier try recorded its intent to pay but never the request id: it may have paid."""

    code = "orphaned_submit"


_BY_CODE["error"] = DreaminaError


def error_class(code: object) -> type[DreaminaError] | None:
    """The error class a stable ``code`` names; None for a code this provider does not know."""
    return _BY_CODE.get(code) if isinstance(code, str) else None
