"""Operators: submit a Dreamina image-to-video generation, and save its outputs."""

from __future__ import annotations

import ast
import hashlib
import json
import string
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk import BaseOperator, BaseOperatorLink
from pydantic import BaseModel

from airflow_provider_dreamina._compat import AirflowFailException, default_deferrable
from airflow_provider_dreamina._storage import (
    Destination,
    check_name,
    name_from_url,
    open_destination,
    suffix_from_content_type,
    suffix_from_url,
)
from airflow_provider_dreamina.exceptions import (
    DreaminaDownloadError,
    DreaminaError,
    DreaminaNotFoundError,
    DreaminaRequestError,
    DreaminaTimeoutError,
)
from airflow_provider_dreamina.hooks.dreamina import DreaminaHook, output_url_without_query, raise_for_result
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
    as a small JSON dict instead (request id, state, output URLs, timings, cost, and the ``input``
    that was asked for). The input is checked before anything is paid for.

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
        self.deferrable = default_deferrable() if deferrable is None else deferrable
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
            request_id, finished = self._reattach_or_submit(request, context)
        except DreaminaError as error:
            fail_or_raise(error)
        self._request_id = request_id
        context["ti"].xcom_push(key=XCOM_REQUEST_ID, value=request_id)
        if not self.wait_for_completion:
            return request_id
        if self.deferrable and not finished:
            self._defer(request_id)
        # A request that already succeeded is answered by the first poll: no need to defer for it.
        return self._wait(request_id, context)

    def _reattach_or_submit(self, request: ImageToVideoInput, context: Context) -> tuple[str, bool]:
        """The request id to follow, and whether it has already succeeded.

        Reuses the request this task already paid for, when there is one worth reusing.
        """
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
                elif (state := self._reusable_state(str(saved["request_id"]))) is not None:
                    return str(saved["request_id"]), state is RequestState.SUCCEEDED
        submitted = self.hook.submit(request, self.model_id, validate_image=self.validate_image)
        if store is not None:
            store.set(STATE_KEY, {"request_id": submitted.request_id, "fingerprint": fingerprint})
        self.log.info(
            "Submitted request %s (status %s, result %s)",
            submitted.request_id,
            submitted.status_url,
            submitted.result_url,
        )
        return submitted.request_id, False

    def _reusable_state(self, request_id: str) -> RequestState | None:
        """The state of an earlier request worth reattaching to; None when it needs replacing."""
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
        return status.state

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
        return {**result.summary(), "input": self._generation_input()}

    def _generation_input(self) -> dict[str, Any]:
        """What was asked for, so a download task can write it into the manifest."""
        request = ImageToVideoInput(
            prompt=self.prompt, image_urls=[self.image_url], seed=self.seed, frames=self.frames
        )
        return {
            "model_id": self.model_id,
            "prompt": request.prompt,
            "seed": request.seed,
            "frames": request.frames,
            "image_url": _recorded_image(request.image_source),
        }

    def _cancel(self, request_id: str, *, reason: str) -> None:
        self.log.info("Cancelling request %s because %s", request_id, reason)
        try:
            self.hook.cancel(request_id)
        except DreaminaError as error:
            self.log.warning("Could not cancel request %s: %s", request_id, error)

    def on_kill(self) -> None:
        if self.cancel_on_kill and self._request_id and self.wait_for_completion:
            self._cancel(self._request_id, reason="the task was killed")


def _recorded_image(image: str, *, strip_query: bool = False) -> str:
    """How a record of the input names its image: inline image data is never copied into it."""
    if image.lower().startswith("data:"):
        return "(inline data: URI)"
    return output_url_without_query(image) if strip_query else image


def _fingerprint(request: ImageToVideoInput, model_id: str) -> str:
    """Identifies the input, so a changed prompt or image is never answered with an old video."""
    body = {"model_id": model_id, **request.to_request_body()}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


# -- download ---------------------------------------------------------------------------------

#: What ``if_exists`` accepts.
IF_EXISTS_MODES = ("fail", "skip", "overwrite")
#: The manifest beside each stored file is named after it with this suffix added.
MANIFEST_SUFFIX = ".json"
_FILENAME_FIELDS = frozenset({"request_id", "index", "ext", "name"})
# Dreamina image-to-video returns MP4: the suffix when neither the URL nor the content type tells.
_FALLBACK_SUFFIX = ".mp4"
_MANIFEST_READ_LIMIT = 1024 * 1024


@dataclass(frozen=True)
class StoredOutput:
    """One output as it was stored: where, how big, its SHA-256, and whether it was already there."""

    uri: str
    name: str
    size_bytes: int
    sha256: str
    content_type: str | None
    source_url: str
    skipped: bool = False

    def event_extra(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "sha256": self.sha256,
            "bytes": self.size_bytes,
            "content_type": self.content_type,
        }


class DreaminaDownloadOperator(BaseOperator):
    """Save every output of a finished request into a directory: local, ``file://`` or object storage.

    Each output is streamed straight into the destination (memory does not grow with its size),
    counted against ``Content-Length`` and hashed with SHA-256, and appears under its final name
    only once complete. Broken transfers resume with HTTP ranges; expired output URLs are
    refreshed from a new result. Beside each file goes a JSON manifest (``<file name>.json``), and
    every :class:`~airflow.sdk.Asset` in ``outlets`` gets an event whose extra carries the request
    id and each stored URI and SHA-256 (an ``AssetAlias`` gets one event per stored file).
    Returns the list of stored URIs (``file://`` URIs for local directories).

    :param request_id: the request whose outputs to save, typically
        ``"{{ ti.xcom_pull(task_ids='submit', key='request_id') }}"``.
    :param destination: a directory: local path, ``file://`` URI, or any ``ObjectStoragePath`` URI
        such as ``s3://bucket/videos/{{ ds }}/``.
    :param conn_id: Airflow connection of the storage (such as an ``aws`` connection for
        ``s3://``); None uses the storage's default.
    :param filename: ``str.format`` template (not Jinja) of each file's name, with the fields
        ``{request_id}``, ``{index}`` (1, 2, ... in RunComfy's order), ``{ext}`` (the suffix with
        its dot, such as ``.mp4``, from the URL or else the content type) and ``{name}`` (the
        file's own name in its URL, without suffix). Default: ``{request_id}{ext}``, or
        ``{request_id}-{index}{ext}`` when the request has several outputs. A name that is empty,
        hidden, or would leave the destination directory is refused.
    :param if_exists: when a file of that name exists: ``"overwrite"`` it (atomically),
        ``"skip"`` it (its SHA-256 is taken from its manifest or computed), or ``"fail"``.
    :param max_bytes: refuse outputs larger than this, from their headers or while streaming.
    :param write_manifest: write ``<file name>.json`` beside each stored file.
    :param generation_input: what was submitted (``prompt``, ``seed``, ``frames``, ``image_urls``,
        ``model_id``), recorded in the manifest, since a result does not repeat it: a dict (its
        string values are templated), the JSON or Python-literal text a template renders a dict
        to, or the waiting submit task's returned result (``generate.output``), whose ``input``
        is used. Inline ``data:`` images are not recorded.
    """

    template_fields: Sequence[str] = (
        "request_id",
        "destination",
        "filename",
        "conn_id",
        "dreamina_conn_id",
        "generation_input",
    )
    ui_color = "#d6f5e3"

    def __init__(
        self,
        *,
        request_id: str,
        destination: str,
        conn_id: str | None = None,
        filename: str | None = None,
        if_exists: str = "overwrite",
        max_bytes: int | None = None,
        write_manifest: bool = True,
        generation_input: dict[str, Any] | str | None = None,
        dreamina_conn_id: str = DreaminaHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if if_exists not in IF_EXISTS_MODES:
            raise ValueError(
                f"if_exists is {if_exists!r}; use one of {', '.join(map(repr, IF_EXISTS_MODES))}"
            )
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int)):
            raise ValueError(f"max_bytes must be a whole number of bytes or None; got {max_bytes!r}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes is {max_bytes}; it must be at least 1 (or None for no limit)")
        self.request_id = request_id
        self.destination = destination
        self.conn_id = conn_id
        self.filename = filename
        self.if_exists = if_exists
        self.max_bytes = max_bytes
        self.write_manifest = write_manifest
        self.generation_input = generation_input
        self.dreamina_conn_id = dreamina_conn_id

    @cached_property
    def hook(self) -> DreaminaHook:
        return DreaminaHook(dreamina_conn_id=self.dreamina_conn_id)

    def execute(self, context: Context) -> list[str]:
        request_id = self._checked_request_id()
        try:
            result = self.hook.get_result(request_id, include_cost=True)
            urls = self._finished_outputs(result)
            names = self._planned_names(request_id, urls)
            destination = open_destination(self.destination, self.conn_id)
            destination.prepare()
            generation = self._generation_details()
            stored = [
                self._save(destination, request_id, result, url, index, name, generation)
                for index, (url, name) in enumerate(zip(urls, names, strict=True), start=1)
            ]
        except DreaminaError as error:
            fail_or_raise(error)
        self._emit_asset_events(context, request_id, stored)
        self._report_lineage(stored)
        return [output.uri for output in stored]

    def _checked_request_id(self) -> str:
        request_id = str(self.request_id if self.request_id is not None else "").strip()
        if request_id in ("", "None"):
            raise AirflowFailException(
                f"request_id rendered to {self.request_id!r}: pass the submit task's request id, such "
                "as \"{{ ti.xcom_pull(task_ids='submit', key='request_id') }}\""
            )
        return request_id

    def _finished_outputs(self, result: RequestResult) -> list[str]:
        request_id = result.request_id
        if result.state is RequestState.SUCCEEDED:
            if not result.output_urls:
                raise AirflowFailException(
                    f"request {request_id} succeeded but RunComfy listed no outputs; nothing was saved"
                )
            return result.output_urls
        if result.state is RequestState.FAILED:
            reason = result.error_message or "RunComfy gave no reason"
            raise AirflowFailException(f"request {request_id} failed ({reason}); it has no outputs to save")
        if result.state is RequestState.CANCELLED:
            raise AirflowFailException(f"request {request_id} was cancelled; it has no outputs to save")
        raise AirflowFailException(
            f"request {request_id} has not finished (status {result.status!r}); nothing was saved. "
            "Wait for it before downloading: DreaminaRequestSensor, or wait_for_completion=True on "
            "DreaminaImageToVideoOperator"
        )

    def _file_name(self, request_id: str, index: int, count: int, url: str, ext: str) -> str:
        template = self.filename or ("{request_id}{ext}" if count == 1 else "{request_id}-{index}{ext}")
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
            unknown = sorted(fields - _FILENAME_FIELDS)
            if unknown:
                raise KeyError(", ".join(unknown))
            name = template.format(request_id=request_id, index=index, ext=ext, name=name_from_url(url))
        except (KeyError, ValueError, IndexError, AttributeError) as error:
            raise DreaminaDownloadError(
                f"filename template {template!r} cannot be used ({type(error).__name__}: {error}); its "
                f"fields are {', '.join('{' + field + '}' for field in sorted(_FILENAME_FIELDS))}"
            ) from None
        return check_name(name, self.destination)

    def _planned_names(self, request_id: str, urls: list[str]) -> list[str]:
        names = [
            self._file_name(request_id, index, len(urls), url, suffix_from_url(url) or _FALLBACK_SUFFIX)
            for index, url in enumerate(urls, start=1)
        ]
        if len(set(names)) < len(names):
            raise DreaminaDownloadError(
                f"filename template {self.filename!r} gives the same name to several of the "
                f"{len(urls)} outputs of request {request_id}; include {{index}} in it"
            )
        return names

    def _save(
        self,
        destination: Destination,
        request_id: str,
        result: RequestResult,
        url: str,
        index: int,
        name: str,
        generation: dict[str, Any],
    ) -> StoredOutput:
        count = len(result.output_urls)
        # Without a suffix in the URL the final name waits for the content type, so an existing
        # file is noticed only when the download is committed.
        known_suffix = suffix_from_url(url) is not None
        if known_suffix and self.if_exists != "overwrite" and destination.exists(name):
            existing = self._existing(destination, name, url)
            if existing is not None:
                return existing
        with destination.partial(name) as partial:
            downloaded = self.hook.download_output(
                url, partial, request_id=request_id, index=index - 1, max_bytes=self.max_bytes
            )
            if not known_suffix:
                ext = suffix_from_content_type(downloaded.content_type) or _FALLBACK_SUFFIX
                name = self._file_name(request_id, index, count, url, ext)
            if not partial.commit(name, overwrite=self.if_exists == "overwrite"):
                existing = self._existing(destination, name, url)
                if existing is not None:
                    return existing
        stored = StoredOutput(
            uri=destination.uri(name),
            name=name,
            size_bytes=downloaded.size_bytes,
            sha256=downloaded.sha256,
            content_type=downloaded.content_type,
            source_url=downloaded.source_url,
        )
        if self.write_manifest:
            manifest = self._manifest(result, stored, index, count, generation)
            destination.write_bytes(name + MANIFEST_SUFFIX, manifest)
        self.log.info(
            "Saved output %d of %d of request %s to %s (%d bytes, sha256 %s)",
            index,
            count,
            request_id,
            stored.uri,
            stored.size_bytes,
            stored.sha256,
        )
        return stored

    def _existing(self, destination: Destination, name: str, url: str) -> StoredOutput | None:
        """The file already stored under ``name`` (if_exists="skip"); raises for "fail"."""
        uri = destination.uri(name)
        if self.if_exists == "fail":
            raise DreaminaDownloadError(
                f"{uri} already exists; set if_exists='overwrite' to replace it or 'skip' to keep it"
            )
        if self.if_exists != "skip":
            return None
        with destination.errors("read"):
            described = self._described_by_manifest(destination, name)
        if described is None:
            digest, size = hashlib.sha256(), 0
            with destination.errors("read"):
                for chunk in destination.iter_chunks(name):
                    digest.update(chunk)
                    size += len(chunk)
            described = (digest.hexdigest(), size, None)
        sha256, size, content_type = described
        self.log.info(
            "Kept %s, which already exists (if_exists='skip'): %d bytes, sha256 %s", uri, size, sha256
        )
        return StoredOutput(
            uri=uri,
            name=name,
            size_bytes=size,
            sha256=sha256,
            content_type=content_type,
            source_url=output_url_without_query(url),
            skipped=True,
        )

    @staticmethod
    def _described_by_manifest(destination: Destination, name: str) -> tuple[str, int, str | None] | None:
        raw = destination.read_bytes(name + MANIFEST_SUFFIX, _MANIFEST_READ_LIMIT)
        try:
            manifest = json.loads(raw) if raw else None
        except ValueError:
            return None
        if not isinstance(manifest, dict):
            return None
        sha256, size = manifest.get("sha256"), manifest.get("bytes")
        if not isinstance(sha256, str) or not isinstance(size, int):
            return None
        content_type = manifest.get("content_type")
        return sha256, size, content_type if isinstance(content_type, str) else None

    def _generation_details(self) -> dict[str, Any]:
        """The submitted input as the manifest records it (never inline image data)."""
        value: Any = self.generation_input
        if value is None or value == "":
            return {}
        if isinstance(value, BaseModel):
            value = value.model_dump()
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                try:
                    value = ast.literal_eval(value)
                except (ValueError, SyntaxError, MemoryError, RecursionError):
                    value = None
        if not isinstance(value, Mapping):
            self.log.warning(
                "generation_input is not a dict; the manifest will not record the prompt, seed and frames"
            )
            return {}
        # The submit operator's returned result carries what it submitted under "input".
        if isinstance(value.get("input"), Mapping) and "request_id" in value:
            value = value["input"]
        details = {key: value[key] for key in ("model_id", "prompt", "seed", "frames") if key in value}
        images = value.get("image_urls") or ([value["image_url"]] if value.get("image_url") else [])
        if isinstance(images, list) and images and isinstance(images[0], str):
            details["image_url"] = _recorded_image(images[0], strip_query=True)
        return details

    def _manifest(
        self,
        result: RequestResult,
        stored: StoredOutput,
        index: int,
        count: int,
        generation: dict[str, Any],
    ) -> bytes:
        extra = result.model_extra or {}
        timings = result.summary()
        manifest = {
            "request_id": result.request_id,
            "model_id": extra.get("model_id") or generation.get("model_id") or DEFAULT_MODEL_ID,
            "prompt": generation.get("prompt"),
            "seed": generation.get("seed"),
            "frames": generation.get("frames"),
            "image_url": generation.get("image_url"),
            "output_index": index,
            "output_count": count,
            "source_url": stored.source_url,
            "stored_uri": stored.uri,
            "file_name": stored.name,
            "bytes": stored.size_bytes,
            "sha256": stored.sha256,
            "content_type": stored.content_type,
            **{key: timings[key] for key in ("created_at", "finished_at", "duration_seconds", "cost")},
            "downloaded_at": datetime.now(timezone.utc).isoformat(),
        }
        return json.dumps(manifest, indent=2, default=str).encode() + b"\n"

    def _emit_asset_events(self, context: Context, request_id: str, stored: list[StoredOutput]) -> None:
        """Tell downstream DAGs what was stored: one event per outlet asset, one per file on aliases."""
        from airflow.sdk import Asset, AssetAlias

        outlets = [outlet for outlet in self.outlets or () if isinstance(outlet, (Asset, AssetAlias))]
        if not outlets:
            return
        events = context.get("outlet_events")
        if events is None:
            self.log.warning("This context has no outlet_events; no asset event carries the stored files")
            return
        extra: dict[str, Any] = {
            "request_id": request_id,
            "uris": [output.uri for output in stored],
            "outputs": [output.event_extra() for output in stored],
        }
        for outlet in outlets:
            if isinstance(outlet, AssetAlias):
                for output in stored:
                    events[outlet].add(
                        Asset(uri=output.uri), extra={"request_id": request_id, **output.event_extra()}
                    )
            else:
                events[outlet].extra.update(json.loads(json.dumps(extra)))

    def _report_lineage(self, stored: list[StoredOutput]) -> None:
        try:
            from airflow.sdk.lineage import get_hook_lineage_collector
        except ImportError:  # Airflow 3.1 keeps it in core
            try:
                from airflow.lineage.hook import get_hook_lineage_collector  # type: ignore[no-redef]
            except ImportError:
                return
        try:
            collector = get_hook_lineage_collector()
            for output in stored:
                collector.add_output_asset(context=self.hook, uri=output.uri)
        except Exception as error:  # lineage is informative: it must never fail a finished download
            self.log.debug("Could not report lineage: %s", error)
