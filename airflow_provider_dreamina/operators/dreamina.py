"""Operators: submit a Dreamina image-to-video generation, and save its outputs."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.exceptions import AirflowFailException
from airflow.sdk import BaseOperator, BaseOperatorLink

from airflow_provider_dreamina.exceptions import (
    DreaminaError,
    DreaminaNotFoundError,
    DreaminaRequestError,
    DreaminaTimeoutError,
)
from airflow_provider_dreamina.hooks.dreamina import DreaminaHook, raise_for_result
from airflow_provider_dreamina.models import DEFAULT_MODEL_ID, ImageToVideoInput, RequestResult, RequestState
from airflow_provider_dreamina.triggers.dreamina import (
    EVENT_CANCELLED,
    EVENT_FAILED,
    EVENT_SUCCESS,
    EVENT_TIMEOUT,
    DreaminaRequestTrigger,
)

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.types import TaskInstanceKey

XCOM_REQUEST_ID = "request_id"
XCOM_OUTPUT_URL = "output_url"
#: Key under which the submit operator keeps its request in ``task_state_store`` (Airflow 3.3+).
STATE_KEY = "dreamina_request"
# How much longer than the trigger's own deadline Airflow waits before it times the deferral out.
_DEFER_TIMEOUT_MARGIN = timedelta(minutes=2)

_warned_no_state_store = False


def _default_deferrable() -> bool:
    try:
        from airflow.sdk.configuration import conf
    except ImportError:  # Airflow 3.1 keeps the configuration in core only
        from airflow.configuration import conf
    return bool(conf.getboolean("operators", "default_deferrable", fallback=False))


def fail_or_raise(error: DreaminaError) -> NoReturn:
    """Fail the task without retries when running it again cannot help; re-raise otherwise."""
    if error.retryable:
        raise error
    raise AirflowFailException(str(error)) from error


class DreaminaOutputLink(BaseOperatorLink):
    """Link to the first output video of the request, once it exists."""

    name = "Dreamina video"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        url = XCom.get_value(ti_key=ti_key, key=XCOM_OUTPUT_URL)
        return str(url) if url else ""


class DreaminaImageToVideoOperator(BaseOperator):
    """Turn one image and a prompt into a video with Dreamina 3.0 Pro on RunComfy.

    Pushes the request id to XCom under ``request_id`` and returns it; with
    ``wait_for_completion`` it waits (polling, or deferred to the triggerer) and returns the result
    as a small JSON dict instead. The input is checked before anything is paid for.

    On Airflow 3.3+ the request is remembered in ``task_state_store``: when the task runs again
    (retry, crash, clear) with the same input, it reattaches to that request instead of paying
    for a new one, unless that request failed or was cancelled.

    :param image_url: an https URL or ``data:`` URI (sent as is), or a local path, ``file://`` URI
        or object-storage URI such as ``s3://bucket/in.png`` (read, checked and sent inline).
    :param seed: -1 for a random seed.
    :param frames: 121 (about 5 s) or 241 (about 10 s).
    :param wait_for_completion: wait for the video instead of returning once submitted.
    :param deferrable: wait in the triggerer instead of holding a worker slot
        (default: ``[operators] default_deferrable``).
    :param poll_interval: seconds between status polls while waiting.
    :param timeout: overall seconds to wait; a request still queued then is cancelled.
    :param cancel_on_kill: cancel a still-queued request when the task is killed.
    :param validate_image: check the image against the schema before submitting.
    """

    template_fields: Sequence[str] = ("prompt", "image_url", "seed", "frames", "model_id", "dreamina_conn_id")
    template_fields_renderers = {"prompt": "md"}
    ui_color = "#e8dcff"
    operator_extra_links = (DreaminaOutputLink(),)

    def __init__(
        self,
        *,
        prompt: str,
        image_url: str,
        seed: int | str = -1,
        frames: int | str = 121,
        dreamina_conn_id: str = DreaminaHook.default_conn_name,
        model_id: str = DEFAULT_MODEL_ID,
        wait_for_completion: bool = False,
        deferrable: bool | None = None,
        poll_interval: float = 10.0,
        timeout: float | timedelta | None = None,
        cancel_on_kill: bool = True,
        validate_image: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.prompt = prompt
        self.image_url = image_url
        self.seed = seed
        self.frames = frames
        self.dreamina_conn_id = dreamina_conn_id
        self.model_id = model_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = _default_deferrable() if deferrable is None else deferrable
        if poll_interval <= 0:
            raise ValueError(f"poll_interval is {poll_interval}; it must be more than 0 seconds")
        self.poll_interval = poll_interval
        self.timeout = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        self.cancel_on_kill = cancel_on_kill
        self.validate_image = validate_image
        self._request_id: str | None = None

    @cached_property
    def hook(self) -> DreaminaHook:
        return DreaminaHook(dreamina_conn_id=self.dreamina_conn_id)

    def execute(self, context: Context) -> Any:
        try:
            # Rendered templates arrive as strings; the model checks and converts them.
            request = ImageToVideoInput(
                prompt=self.prompt, image_urls=[self.image_url], seed=self.seed, frames=self.frames
            )
            request_id = self._reattach_or_submit(request, context)
        except DreaminaError as error:
            fail_or_raise(error)
        self._request_id = request_id
        context["ti"].xcom_push(key=XCOM_REQUEST_ID, value=request_id)
        if not self.wait_for_completion:
            return request_id
        if self.deferrable:
            self._defer(request_id)
        return self._wait(request_id, context)

    def _reattach_or_submit(self, request: ImageToVideoInput, context: Context) -> str:
        """Reuse the request this task already paid for, when there is one worth reusing."""
        global _warned_no_state_store
        store = context.get("task_state_store")
        fingerprint = _fingerprint(request, self.model_id)
        if store is None:
            if not _warned_no_state_store:
                _warned_no_state_store = True
                self.log.warning(
                    "This Airflow has no task_state_store (it needs 3.3+): if this task is retried or "
                    "cleared, it submits (and pays for) a new request"
                )
        else:
            saved = store.get(STATE_KEY)
            if isinstance(saved, dict) and saved.get("request_id"):
                if saved.get("fingerprint") != fingerprint:
                    self.log.info(
                        "The input changed since request %s was submitted; submitting a new one",
                        saved["request_id"],
                    )
                elif (reusable := self._reusable(str(saved["request_id"]))) is not None:
                    return reusable
        submitted = self.hook.submit(request, self.model_id, validate_image=self.validate_image)
        if store is not None:
            store.set(STATE_KEY, {"request_id": submitted.request_id, "fingerprint": fingerprint})
        self.log.info(
            "Submitted request %s (status %s, result %s)",
            submitted.request_id,
            submitted.status_url,
            submitted.result_url,
        )
        return submitted.request_id

    def _reusable(self, request_id: str) -> str | None:
        try:
            status = self.hook.get_status(request_id)
        except DreaminaNotFoundError:
            self.log.info("Earlier request %s has expired at RunComfy; submitting a new one", request_id)
            return None
        if status.state in (RequestState.FAILED, RequestState.CANCELLED):
            self.log.info("Earlier request %s was %s; submitting a new one", request_id, status.state.value)
            return None
        self.log.info(
            "Reattaching to request %s (%s) submitted by an earlier try: nothing new is paid for",
            request_id,
            status.state.value,
        )
        return request_id

    def _defer(self, request_id: str) -> NoReturn:
        deadline = None if self.timeout is None else time.time() + self.timeout
        self.defer(
            trigger=DreaminaRequestTrigger(
                request_id=request_id,
                dreamina_conn_id=self.dreamina_conn_id,
                poll_interval=self.poll_interval,
                deadline=deadline,
                cancel_on_kill=self.cancel_on_kill,
            ),
            method_name="execute_complete",
            timeout=None if self.timeout is None else timedelta(seconds=self.timeout) + _DEFER_TIMEOUT_MARGIN,
        )
        raise AssertionError("defer() returned")  # pragma: no cover

    def _wait(self, request_id: str, context: Context) -> dict[str, Any]:
        try:
            result = self.hook.wait(request_id, poll_interval=self.poll_interval, timeout=self.timeout)
        except DreaminaTimeoutError as error:
            self._cancel(request_id, reason="the wait timed out")
            fail_or_raise(error)
        except DreaminaError as error:
            fail_or_raise(error)
        return self._succeeded(result, context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Finish after the trigger fired; the event carries everything needed."""
        kind = event.get("status")
        request_id = str(event.get("request_id"))
        message = str(event.get("message") or f"request {request_id} ended with {kind!r}")
        summary = event.get("result")
        result = RequestResult.from_summary(summary) if summary else None
        if kind == EVENT_SUCCESS and result is not None:
            return self._succeeded(result, context)
        if kind in (EVENT_FAILED, EVENT_CANCELLED):
            raise AirflowFailException(message)
        if kind == EVENT_TIMEOUT:
            raise DreaminaTimeoutError(message, request_id=request_id, result=result)
        error = DreaminaRequestError(message, request_id=request_id, result=result)
        error.retryable = bool(event.get("retryable"))
        fail_or_raise(error)

    def _succeeded(self, result: RequestResult, context: Context) -> dict[str, Any]:
        raise_for_result(result)
        urls = result.output_urls
        self.log.info("Request %s succeeded: %d output(s)", result.request_id, len(urls))
        if urls:
            context["ti"].xcom_push(key=XCOM_OUTPUT_URL, value=urls[0])
        return result.summary()

    def _cancel(self, request_id: str, *, reason: str) -> None:
        self.log.info("Cancelling request %s because %s", request_id, reason)
        try:
            self.hook.cancel(request_id)
        except DreaminaError as error:
            self.log.warning("Could not cancel request %s: %s", request_id, error)

    def on_kill(self) -> None:
        if self.cancel_on_kill and self._request_id and self.wait_for_completion:
            self._cancel(self._request_id, reason="the task was killed")


def _fingerprint(request: ImageToVideoInput, model_id: str) -> str:
    """Identifies the input, so a changed prompt or image is never answered with an old video."""
    body = {"model_id": model_id, **request.to_request_body()}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
