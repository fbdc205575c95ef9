"""DreaminaImageToVideoOperator: submit a Dreamina image-to-video generation, and wait for it.

This module is imported by every DAG file that uses the provider, so it imports only Airflow's
task SDK at the top: the hook, the models and the trigger load when a task runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk import BaseOperator

from airflow_provider_dreamina import links
from airflow_provider_dreamina.compat import default_deferrable
from airflow_provider_dreamina.defaults import (
    DEFAULT_CONN_ID,
    DEFAULT_MAX_CONSECUTIVE_ERRORS,
    DEFAULT_MODEL_ID,
    DEFAULT_POLL_INTERVAL,
    DEFER_TIMEOUT_MARGIN_SECONDS,
    MANIFEST_SUFFIX,
    STATE_KEY,
    XCOM_REQUEST_ID,
    OnClear,
    OnOrphanedSubmit,
    check_mode,
)
from airflow_provider_dreamina.exceptions import DreaminaError
from airflow_provider_dreamina.links import DreaminaGalleryLink, DreaminaOutputLink
from airflow_provider_dreamina.operators.download import DreaminaDownloadOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_dreamina.hooks.dreamina import DreaminaHook
    from airflow_provider_dreamina.models import (
        GenerationInput,
        ImageToVideoInput,
        RequestResult,
    )
    from airflow_provider_dreamina.waiting.policy import WaitPolicy

__all__ = [
    "MANIFEST_SUFFIX",
    "STATE_KEY",
    "XCOM_REQUEST_ID",
    "DreaminaDownloadOperator",
    "DreaminaGalleryLink",
    "DreaminaImageToVideoOperator",
    "DreaminaOutputLink",
]


class DreaminaImageToVideoOperator(BaseOperator):
    """Turn one image and a prompt into a video with Dreamina 3.0 Pro on RunComfy.

    Pushes the request id to XCom under ``request_id`` and returns it; with
    ``wait_for_completion`` it waits (polling, or deferred to the triggerer) and returns the
    generation record as a small JSON dict instead (request id, state, output URLs, timings,
    ``cost_usd``, and the ``input`` that was asked for). The input is checked before anything is
    paid for.

    Each paid submit is recorded in two phases (an intent before the POST, the request id after
    it) in ``task_state_store`` (Airflow 3.3+) or a ledger under ``state_path``: when the task runs
    again (retry, crash) with the same input, it reattaches to that request instead of paying for a
    new one, and an intent without a request id is detected as an orphaned submit.

    :param image_url: an https URL or ``data:`` URI (sent as is), or a local path, ``file://`` URI
        or object-storage URI such as ``s3://bucket/in.png`` (read, checked and sent inline).
    :param seed: -1 for a random seed.
    :param frames: 121 (about 5 s) or 241 (about 10 s).
    :param wait_for_completion: wait for the video instead of returning once submitted.
    :param deferrable: wait in the triggerer instead of holding a worker slot
        (default: ``[operators] default_deferrable``).
    :param poll_interval: seconds between status polls while waiting.
    :param timeout: overall seconds to wait; it bounds every call made while waiting too.
    :param cancel_on_kill: cancel a still-queued request when the task is killed.
    :param cancel_on_timeout: cancel a still-queued request when ``timeout`` passes (a running one
        is paid for already and left to finish).
    :param validate_image: check the image against the schema before submitting.
    :param image_roots: directories or object-storage prefixes (``/data/frames``,
        ``s3://bucket/inputs/``) under which a local or object-storage ``image_url`` may be read;
        anything else is refused (https URLs and ``data:`` URIs need no root). Not templated: a
        template can read DAG-run params, and whoever triggers a run must not widen the roots.
    :param image_conn_id: the Airflow connection object storage is read with. Not templated, for
        the same reason: a run must not choose which connection the worker uses.
    :param max_consecutive_errors: transient failed polls in a row (each after the hook's own
        retries) to tolerate while waiting, however quickly they come.
    :param max_error_seconds: how long a run of transient failed polls (an outage of RunComfy's
        API) is tolerated while the paid generation runs on; the wait fails (and Airflow may retry
        the task, which reattaches) once both limits are passed. Default: the connection's
        ``max_error_seconds`` extra, else 15 minutes.
    :param on_orphaned_submit: when an earlier try recorded its intent to pay but never the request
        id: ``"fail"`` without retry (default; look in RunComfy's dashboard first) or ``"resubmit"``
        (accepting that RunComfy may charge twice).
    :param on_clear: when a user clears a task whose request already exists: ``"reuse"`` it
        (default: never pay unexpectedly) or ``"regenerate"`` (pay for a new video).
    :param state_path: a local directory or object-storage URI for the ledger of submit records;
        when given it is used even where ``task_state_store`` exists (Airflow 3.3+). Default: the
        connection's ``state_path`` extra, used only where ``task_state_store`` does not exist.
    :param min_balance_usd: balance reserve in USD (default: the connection's ``min_balance_usd``
        extra): fail without submitting when this generation would leave less (see ``spend``).
    """

    template_fields: Sequence[str] = ("prompt", "image_url", "seed", "frames", "model_id", "dreamina_conn_id")
    template_fields_renderers = {"prompt": "md"}
    ui_color = "#e8dcff"
    operator_extra_links = (DreaminaGalleryLink(), DreaminaOutputLink())

    def __init__(
        self,
        *,
        prompt: str,
        image_url: str,
        seed: int | str = -1,
        frames: int | str = 121,
        dreamina_conn_id: str = DEFAULT_CONN_ID,
        model_id: str = DEFAULT_MODEL_ID,
        wait_for_completion: bool = False,
        deferrable: bool | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float | timedelta | None = None,
        cancel_on_kill: bool = True,
        cancel_on_timeout: bool = True,
        validate_image: bool = True,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        max_error_seconds: float | None = None,
        on_orphaned_submit: OnOrphanedSubmit = "fail",
        on_clear: OnClear = "reuse",
        state_path: str | None = None,
        min_balance_usd: float | None = None,
        image_roots: str | Sequence[str] | None = None,
        image_conn_id: str | None = None,
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
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        if poll_interval <= 0:
            raise ValueError(f"poll_interval is {poll_interval}; it must be more than 0 seconds")
        self.poll_interval = poll_interval
        self.timeout = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        self.cancel_on_kill = cancel_on_kill
        self.cancel_on_timeout = cancel_on_timeout
        self.validate_image = validate_image
        self.max_consecutive_errors = max_consecutive_errors
        self.max_error_seconds = max_error_seconds
        self.on_orphaned_submit: OnOrphanedSubmit = check_mode(
            "on_orphaned_submit", on_orphaned_submit, OnOrphanedSubmit
        )
        self.on_clear: OnClear = check_mode("on_clear", on_clear, OnClear)
        self.state_path = state_path
        self.min_balance_usd = min_balance_usd
        self.image_roots = image_roots
        self.image_conn_id = image_conn_id
        self._request_id: str | None = None
        self._result: RequestResult | None = None

    @cached_property
    def hook(self) -> DreaminaHook:
        from airflow_provider_dreamina.hooks.dreamina import DreaminaHook

        return DreaminaHook(dreamina_conn_id=self.dreamina_conn_id)

    def _input(self) -> ImageToVideoInput:
        from airflow_provider_dreamina.models import ImageToVideoInput

        # Rendered templates arrive as strings; the model checks and converts them.
        return ImageToVideoInput(
            prompt=self.prompt, image_urls=[self.image_url], seed=self.seed, frames=self.frames
        )

    def execute(self, context: Context) -> Any:
        from airflow_provider_dreamina.waiting.outcome import fail_or_raise

        links.forget(self)
        try:
            request_id, finished = self._reattach_or_submit(self._input(), context)
        except DreaminaError as error:
            fail_or_raise(error)
        self._request_id = request_id
        context["ti"].xcom_push(key=XCOM_REQUEST_ID, value=request_id)
        links.note(self, request_id=request_id)
        if not self.wait_for_completion:
            return request_id
        if self.deferrable and not finished:
            self._defer(request_id)
        # A request that already succeeded is answered by the first poll: no need to defer for it.
        return self._wait(request_id, context)

    def _reattach_or_submit(self, request: ImageToVideoInput, context: Context) -> tuple[str, bool]:
        """The request id to follow, and whether it has already succeeded (see ``submission``)."""
        from airflow_provider_dreamina.submission.reattach import Attempt, SubmitOptions, reattach_or_submit
        from airflow_provider_dreamina.submission.stores import task_state

        state_path = self.state_path or self.hook.settings.state_path
        state = task_state(context, state_path=state_path, force_ledger=self.state_path is not None)
        followed = reattach_or_submit(
            self.hook,
            request,
            self.model_id,
            state,
            Attempt.of(context["ti"]),
            SubmitOptions(
                validate_image=self.validate_image,
                min_balance_usd=self.min_balance_usd,
                image_roots=self.image_roots,
                image_conn_id=self.image_conn_id,
            ),
            on_orphaned_submit=self.on_orphaned_submit,
            on_clear=self.on_clear,
        )
        return followed.request_id, followed.succeeded

    def _policy(self) -> WaitPolicy:
        from airflow_provider_dreamina.waiting.policy import WaitPolicy

        deadline = None if self.timeout is None else time.time() + self.timeout
        return WaitPolicy(
            poll_interval=self.poll_interval,
            deadline=deadline,
            max_consecutive_errors=self.max_consecutive_errors,
            max_error_seconds=self.hook.max_error_seconds(self.max_error_seconds),
            cancel_on_timeout=self.cancel_on_timeout,
        )

    def _defer(self, request_id: str) -> NoReturn:
        from airflow_provider_dreamina.triggers.dreamina import DreaminaRequestTrigger
        from airflow_provider_dreamina.waiting.policy import Waiting

        self.defer(
            trigger=DreaminaRequestTrigger.following(
                Waiting(request_id, self._policy()), self.dreamina_conn_id, cancel_on_kill=self.cancel_on_kill
            ),
            method_name="execute_complete",
            timeout=None
            if self.timeout is None
            else timedelta(seconds=self.timeout) + timedelta(seconds=DEFER_TIMEOUT_MARGIN_SECONDS),
        )
        raise AssertionError("defer() returned")  # pragma: no cover

    def _wait(self, request_id: str, context: Context) -> dict[str, Any]:
        from airflow_provider_dreamina.waiting.outcome import fail_or_raise

        try:
            result = self.hook.wait(request_id, policy=self._policy())
        except DreaminaError as error:
            fail_or_raise(error)
        return self._succeeded(result, context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Finish after the trigger fired: the same outcome as a wait on a worker."""
        from airflow_provider_dreamina.waiting.outcome import RequestEvent, fail_or_raise

        try:
            parsed = RequestEvent.model_validate(event)
            links.note(self, request_id=parsed.request_id)  # the gallery link, even on a failure
            result = parsed.finished_result()
        except DreaminaError as error:
            fail_or_raise(error)
        return self._succeeded(result, context)

    def _succeeded(self, result: RequestResult, context: Context) -> dict[str, Any]:
        from airflow_provider_dreamina.models import GenerationRecord

        self._result = result
        links.note(self, request_id=result.request_id)
        if result.output_urls:
            links.note(self, output_url=result.output_urls[0])
        return GenerationRecord.of(result, self._generation_input()).to_xcom()

    def _generation_input(self) -> GenerationInput:
        """What was asked for, so a download task can write it into the manifest."""
        from airflow_provider_dreamina.models import GenerationInput

        return GenerationInput.of(self._input(), self.model_id)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the image as the input dataset (none for a ``data:`` URI) and a run facet with
        the request id, model, seed, frames and cost (see ``lineage``). Also used when the task fails.
        """
        from airflow_provider_dreamina.models import GenerationInput

        try:
            from airflow_provider_dreamina.lineage import submit_lineage
        except ImportError:  # the openlineage extra is not installed
            return None
        try:
            generation = self._generation_input()
        except DreaminaError:  # an input that failed its checks: nothing was sent
            generation = GenerationInput(model_id=self.model_id)
        request_id = self._result.request_id if self._result is not None else self._request_id
        return submit_lineage(str(self.image_url), request_id, generation, self._result)

    def on_kill(self) -> None:
        from airflow_provider_dreamina.waiting.policy import try_cancel

        if self.cancel_on_kill and self._request_id and self.wait_for_completion:
            self.log.info("Cancelling request %s because the task was killed", self._request_id)
            try_cancel(self.hook, self._request_id)
