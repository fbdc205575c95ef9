"""Whether a submit task pays for a new request or reattaches to the one it already paid for.

The decision, in order, from the task's two-phase record (``records``, kept in ``stores``):

* no record, or a record of another input (prompt, image, seed, frames, model, connection) → submit;
* a request id, and the task was not cleared by a user → reattach, unless that request failed,
  was cancelled or has expired at RunComfy (then submit anew);
* a request id, and a user cleared the task → ``on_clear``: ``"reuse"`` (default: never pay
  unexpectedly; the log names the request reused and how to get a new video) or ``"regenerate"``;
* an intent without a request id (an earlier try may have paid and lost the answer) →
  ``on_orphaned_submit``: ``"fail"`` (default, without retry, naming the intent's time window) or
  ``"resubmit"`` (accepting that RunComfy may charge twice). A user who clears the task after that
  failure has been told to look in RunComfy's dashboard first: the clear resubmits.

A submit writes the intent before the paid POST and the request id right after it; the id is
logged first, so it is never lost even when the second write fails (which fails the task without
retry, naming the request id).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_dreamina import metrics
from airflow_provider_dreamina.defaults import OnClear, OnOrphanedSubmit
from airflow_provider_dreamina.exceptions import (
    DreaminaError,
    DreaminaNotFoundError,
    DreaminaOrphanedSubmitError,
)
from airflow_provider_dreamina.models import ImageToVideoInput, RequestState
from airflow_provider_dreamina.runcomfy.retries import maybe_paid
from airflow_provider_dreamina.submission.records import SubmitRecord, fingerprint, now
from airflow_provider_dreamina.submission.stores import TaskState

if TYPE_CHECKING:
    from airflow_provider_dreamina.hooks.dreamina import DreaminaHook

log = logging.getLogger(__name__)

_warned_no_state = False


@dataclass(frozen=True)
class Attempt:
    """Who is asking: the try of the task instance, and what Airflow allows it."""

    try_number: int | None
    max_tries: int | None

    @classmethod
    def of(cls, ti: Any) -> Attempt:
        def number(name: str) -> int | None:
            value = getattr(ti, name, None)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        return cls(number("try_number"), number("max_tries"))


@dataclass(frozen=True)
class SubmitOptions:
    """How a new submit is made: the image preflight's rules and the balance reserve."""

    validate_image: bool = True
    min_balance_usd: float | None = None
    image_roots: str | Sequence[str] | None = None
    image_conn_id: str | None = None


@dataclass(frozen=True)
class Followed:
    """The request a task follows, and whether it has already succeeded."""

    request_id: str
    succeeded: bool = False


def reattach_or_submit(
    hook: DreaminaHook,
    request: ImageToVideoInput,
    model_id: str,
    state: TaskState | None,
    attempt: Attempt,
    options: SubmitOptions = SubmitOptions(),
    *,
    on_orphaned_submit: OnOrphanedSubmit = "fail",
    on_clear: OnClear = "reuse",
) -> Followed:
    """The request to follow: the one this task already paid for when worth it, else a new one."""
    global _warned_no_state
    print_ = fingerprint(request, model_id, hook.dreamina_conn_id)
    if state is None:
        if not _warned_no_state:
            _warned_no_state = True
            log.warning(
                "This Airflow has no task_state_store (it needs 3.3+) and no state_path is set: if this "
                "task is retried or cleared, it submits (and pays for) a new request"
            )
        return _submit(hook, request, model_id, None, print_, attempt, options)
    record = state.read()
    if record is not None and record.fingerprint != print_:
        if record.request_id:
            log.info(
                "The input changed since request %s was submitted; submitting a new one", record.request_id
            )
        record = None
    if record is not None and record.orphaned:
        if record.cleared_since(attempt.max_tries):
            # The error asked the user to look in the dashboard before clearing: a clear is the answer.
            log.warning(
                "The task was cleared after an orphaned submit %s: submitting anew. If that earlier submit "
                "created a request, RunComfy charges for both",
                record.intent_window(),
            )
        elif on_orphaned_submit == "fail":
            metrics.submitted("orphaned")
            raise DreaminaOrphanedSubmitError(
                f"orphaned submit: an earlier try of this task began a paid submit {record.intent_window()} "
                "but never recorded its request id, so RunComfy may have created (and charged for) a "
                "request. Look for it in RunComfy's dashboard (Generations) before clearing this task; to "
                "submit anyway, accepting that you may pay twice, set on_orphaned_submit='resubmit'."
            )
        else:
            log.warning(
                "An earlier try began a paid submit %s without recording its request id; submitting again "
                "as on_orphaned_submit='resubmit' asks: RunComfy may charge for both",
                record.intent_window(),
            )
    elif record is not None and record.request_id:
        cleared = record.cleared_since(attempt.max_tries)
        if cleared and on_clear == "regenerate":
            log.info(
                "The task was cleared: submitting a new request instead of reusing %s "
                "(on_clear='regenerate')",
                record.request_id,
            )
        else:
            followed = _reattach(hook, record.request_id, cleared=cleared)
            if followed is not None:
                if cleared:
                    # The record is rewritten so a later clear is told apart from this one.
                    state.write(record.model_copy(update={"max_tries": attempt.max_tries}))
                metrics.submitted("reattached")
                return followed
    return _submit(hook, request, model_id, state, print_, attempt, options)


def _reattach(hook: DreaminaHook, request_id: str, *, cleared: bool) -> Followed | None:
    """Follow an earlier request again; None when it must be replaced."""
    try:
        status = hook.get_status(request_id)
    except DreaminaNotFoundError:
        log.info("Earlier request %s has expired at RunComfy; submitting a new one", request_id)
        return None
    if status.state in (RequestState.FAILED, RequestState.CANCELLED):
        log.info("Earlier request %s was %s; submitting a new one", request_id, status.state.value)
        return None
    if cleared:
        log.info(
            "The task was cleared: reusing request %s (%s) instead of paying for a new one. To get a new "
            "video, set on_clear='regenerate' on the operator (or change the seed)",
            request_id,
            status.state.value,
        )
    else:
        log.info(
            "Reattaching to request %s (%s) submitted by an earlier try: nothing new is paid for",
            request_id,
            status.state.value,
        )
    return Followed(request_id, succeeded=status.state is RequestState.SUCCEEDED)


def _submit(
    hook: DreaminaHook,
    request: ImageToVideoInput,
    model_id: str,
    state: TaskState | None,
    print_: str,
    attempt: Attempt,
    options: SubmitOptions,
) -> Followed:
    from airflow_provider_dreamina.submission.spend import check_reserve

    # Before the intent: a refusal to pay leaves nothing pending.
    try:
        check_reserve(hook, request, model_id, options.min_balance_usd)
    except DreaminaError:
        metrics.submitted("refused")
        raise
    intent = SubmitRecord(
        fingerprint=print_, intent_at=now(), try_number=attempt.try_number, max_tries=attempt.max_tries
    )
    if state is not None:
        state.write(intent)  # a failure here pays nothing: DreaminaStateWriteError, retryable
    try:
        submitted = hook.submit(
            request,
            model_id,
            validate_image=options.validate_image,
            image_roots=options.image_roots,
            image_conn_id=options.image_conn_id,
        )
    except Exception as error:
        paid = maybe_paid(error)
        metrics.submitted("uncertain" if paid else "refused")
        if state is not None and not paid:
            # Refused before anything was created (an invalid image, the token, the balance, a
            # connection refused): nothing is pending any more. Otherwise the intent stays, and
            # the next try detects the orphan.
            state.write(intent.model_copy(update={"intent_at": None}))
        raise
    # Logged before anything else can fail, so the paid request can always be found.
    log.info(
        "Submitted request %s (status %s, result %s)",
        submitted.request_id,
        submitted.status_url,
        submitted.result_url,
    )
    if state is not None:
        try:
            state.write(intent.model_copy(update={"request_id": submitted.request_id, "submitted_at": now()}))
        except Exception as error:
            metrics.submitted("orphaned")
            raise DreaminaOrphanedSubmitError(
                f"request {submitted.request_id} was submitted (and will be charged) but could not be "
                f"recorded in {state.description} ({type(error).__name__}: {error}). Not retrying, so as not "
                f"to pay twice: follow request {submitted.request_id} in RunComfy's dashboard"
            ) from error
    metrics.submitted("succeeded")
    return Followed(submitted.request_id)
