"""DreaminaDownloadOperator: save every output of a finished request, verified, into any storage.

The operator reads its arguments and the request's result and announces what was stored; saving
each output (naming, streaming, checking, the manifest) is ``outputs.saving``'s job.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_dreamina import links
from airflow_provider_dreamina.compat import AirflowFailException
from airflow_provider_dreamina.defaults import (
    DEFAULT_CONN_ID,
    DEFAULT_MAX_BYTES,
    IfExists,
    VerifyMode,
    check_mode,
)
from airflow_provider_dreamina.exceptions import DreaminaDownloadError, DreaminaError
from airflow_provider_dreamina.links import DreaminaGalleryLink, DreaminaOutputLink
from airflow_provider_dreamina.redaction import shorten

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_dreamina.hooks.dreamina import DreaminaHook
    from airflow_provider_dreamina.models import GenerationInput, GenerationRecord, RequestResult
    from airflow_provider_dreamina.outputs.saving import StoredOutput


class DreaminaDownloadOperator(BaseOperator):
    """Save every output of a finished request into a directory: local, ``file://`` or object storage.

    Each output is streamed straight into the destination (memory does not grow with its size),
    counted against ``Content-Length`` and hashed with SHA-256, and appears under its final name
    only once complete. Broken transfers resume with HTTP ranges; expired output URLs are
    refreshed from a new result. Beside each file goes a JSON manifest (``<file name>.json``), and
    every :class:`~airflow.sdk.Asset` in ``outlets`` gets an event whose extra carries the request
    id and each stored URI and SHA-256 (an ``AssetAlias`` gets one event per stored file).
    Returns the list of stored URIs (``file://`` URIs for local directories).

    :param request_id: the request whose outputs to save, such as ``generate.output["request_id"]``
        or ``"{{ ti.xcom_pull(task_ids='generate', key='request_id') }}"``; None (the default) takes
        it from ``generation_input`` when that is the submit task's generation record
        (``generate.output``): one input from the submit task instead of two.
    :param destination: a directory: local path, ``file://`` URI, or any ``ObjectStoragePath`` URI
        such as ``s3://bucket/videos/{{ ds }}/``.
    :param destination_conn_id: Airflow connection of the destination's storage (such as an
        ``aws`` connection for ``s3://``); None uses the storage's default.
    :param filename: ``str.format`` template (not Jinja) of each file's name, with the fields
        ``{request_id}``, ``{index}`` (1, 2, ... in RunComfy's order), ``{ext}`` (the suffix with
        its dot, such as ``.mp4``, from the URL or else the content type) and ``{name}`` (the
        file's own name in its URL, without suffix). Default: ``{request_id}{ext}``, or
        ``{request_id}-{index}{ext}`` when the request has several outputs. A name that is empty,
        hidden, or would leave the destination directory is refused.
    :param if_exists: when a file of that name exists: ``"overwrite"`` it (atomically),
        ``"skip"`` it (its SHA-256 is taken from its manifest or computed; a symbolic link is
        refused, never followed), or ``"fail"``.
    :param max_bytes: refuse outputs larger than this, from their headers or while streaming;
        2 GiB unless set, None for no cap (the connection's ``download_deadline`` still applies).
    :param write_manifest: write ``<file name>.json`` beside each stored file.
    :param generation_input: what was submitted, recorded in the manifest since a result does not
        repeat it: the waiting submit task's result (``generate.output``, a generation record), a
        dict of input fields (``prompt``, ``seed``, ``frames``, ``image_urls``, ``model_id``; its
        string values are templated), or the JSON text of either (``| tojson``). Inline ``data:``
        images and signed query strings are never recorded.
    :param verify: ``"container"`` (default) checks, as the bytes stream past, that an output that
        claims to be a video is an MP4/QuickTime file with an index and a video track, and records
        its facts (duration, frames, fps, size, codec) in the manifest; ``"decode"`` also decodes
        every frame (needs the ``video`` extra, PyAV). A body that fails is not stored.
    :param poster: also store ``<video name>.jpg``, a frame from the middle (``video`` extra),
        listed in the manifest and the asset event.
    """

    template_fields: Sequence[str] = (
        "request_id",
        "destination",
        "filename",
        "destination_conn_id",
        "dreamina_conn_id",
        "generation_input",
    )
    ui_color = "#d6f5e3"
    operator_extra_links = (DreaminaGalleryLink(), DreaminaOutputLink())

    def __init__(
        self,
        *,
        request_id: str | None = None,
        destination: str,
        destination_conn_id: str | None = None,
        filename: str | None = None,
        if_exists: IfExists = "overwrite",
        max_bytes: int | None = DEFAULT_MAX_BYTES,
        write_manifest: bool = True,
        generation_input: dict[str, Any] | str | None = None,
        verify: VerifyMode = "container",
        poster: bool = False,
        dreamina_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.if_exists: IfExists = check_mode("if_exists", if_exists, IfExists)
        self.verify: VerifyMode = check_mode("verify", verify, VerifyMode)
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int)):
            raise ValueError(f"max_bytes must be a whole number of bytes or None; got {max_bytes!r}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes is {max_bytes}; it must be at least 1 (or None for no limit)")
        self.request_id = request_id
        self.destination = destination
        self.destination_conn_id = destination_conn_id
        self.filename = filename
        self.max_bytes = max_bytes
        self.write_manifest = write_manifest
        self.generation_input = generation_input
        self.poster = poster
        self.dreamina_conn_id = dreamina_conn_id
        #: What this run stored (request id, files, cost), for OpenLineage.
        self._saved: tuple[str, list[StoredOutput], float | None] | None = None

    @cached_property
    def hook(self) -> DreaminaHook:
        from airflow_provider_dreamina.hooks.dreamina import DreaminaHook

        return DreaminaHook(dreamina_conn_id=self.dreamina_conn_id)

    def execute(self, context: Context) -> list[str]:
        from airflow_provider_dreamina.outputs.destinations import open_destination
        from airflow_provider_dreamina.outputs.naming import FileNames
        from airflow_provider_dreamina.outputs.saving import OutputSaver
        from airflow_provider_dreamina.waiting.outcome import fail_or_raise

        links.forget(self)
        try:
            request_id = self._checked_request_id()
            links.note(self, request_id=request_id)
            result = self.hook.get_result(request_id, include_cost=True)
            urls = self._finished_outputs(result)
            names = FileNames(self.filename, self.destination)
            planned = names.planned(request_id, urls)
            destination = open_destination(self.destination, self.destination_conn_id)
            destination.prepare()
            saver = OutputSaver(
                destination,
                names,
                download=lambda url, sink, index: self.hook.download_output(
                    url, sink, request_id=request_id, index=index, max_bytes=self.max_bytes
                ),
                if_exists=self.if_exists,
                verify=self.verify,
                poster=self.poster,
                write_manifest=self.write_manifest,
            )
            generation = self._generation_details()
            stored = [
                saver.save(result, url, index, name, generation)
                for index, (url, name) in enumerate(zip(urls, planned, strict=True), start=1)
            ]
        except DreaminaError as error:
            fail_or_raise(error)
        if urls:
            links.note(self, output_url=urls[0])  # for the "Dreamina video" link (no XCom needed)
        self._saved = (request_id, stored, result.cost)
        self._emit_asset_events(context, request_id, stored, result.cost)
        return [output.uri for output in stored]

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: each stored file as an output dataset in its destination's namespace, with
        its size and SHA-256 (see ``lineage``); nothing when nothing was stored."""
        if self._saved is None:
            return None
        try:
            from airflow_provider_dreamina.lineage import download_lineage
        except ImportError:  # the openlineage extra is not installed
            return None
        return download_lineage(*self._saved)

    def _checked_request_id(self) -> str:
        """The request to save: ``request_id``, else the one of the generation record given as
        ``generation_input``; the two must agree when both are given."""
        from airflow_provider_dreamina.models import GenerationRecord, check_request_id

        record = self._given_generation
        recorded = record.request_id if isinstance(record, GenerationRecord) else None
        request_id = str(self.request_id if self.request_id is not None else "").strip()
        if request_id in ("", "None"):
            if recorded is None:
                raise AirflowFailException(
                    f"request_id rendered to {self.request_id!r} and generation_input is no generation "
                    "record: pass generation_input=generate.output (the result of a submit task that "
                    "waits, wait_for_completion=True, or of a sensor), or the request id, such as "
                    "request_id=generate.output['request_id']"
                )
            request_id = recorded
        elif recorded is not None and recorded != request_id:
            raise AirflowFailException(
                f"request_id {shorten(request_id, 80)!r} is not the request of generation_input "
                f"({shorten(recorded, 80)!r}): the manifest would record another request's input"
            )
        return check_request_id(request_id)

    def _finished_outputs(self, result: RequestResult) -> list[str]:
        """The output URLs of a succeeded request; the typed error of any other (see ``outcome``)."""
        from airflow_provider_dreamina.waiting.outcome import raise_for_result

        if not result.state.is_terminal:
            raise DreaminaDownloadError(
                f"request {result.request_id} has not finished (status {result.status!r}); nothing was "
                "saved. Wait for it before downloading: DreaminaRequestSensor, or wait_for_completion=True "
                "on DreaminaImageToVideoOperator"
            )
        raise_for_result(result)
        if not result.output_urls:
            raise DreaminaDownloadError(
                f"request {result.request_id} succeeded but RunComfy listed no outputs; nothing was saved"
            )
        return result.output_urls

    @cached_property
    def _given_generation(self) -> GenerationRecord | GenerationInput | None:
        """``generation_input`` (as rendered) read once: a generation record, only its input, or None."""
        from airflow_provider_dreamina.models import GenerationRecord

        return GenerationRecord.coerce(self.generation_input)

    def _generation_details(self) -> GenerationInput | None:
        """The submitted input as the manifest records it (never inline image data)."""
        from airflow_provider_dreamina.models import GenerationRecord

        if self.generation_input is None or self.generation_input == "":
            return None
        record = self._given_generation
        if record is None:
            self.log.warning(
                "generation_input is neither a generation record, nor a dict of the submitted input, nor "
                "JSON text of one (pass generate.output, or render a template with '| tojson'); the "
                "manifest will not record the prompt, seed and frames"
            )
            return None
        return record.input if isinstance(record, GenerationRecord) else record

    def _emit_asset_events(
        self, context: Context, request_id: str, stored: list[StoredOutput], cost_usd: float | None
    ) -> None:
        """Tell downstream DAGs what was stored: one event per outlet asset, one per file on aliases.

        Each extra carries the request's ``cost_usd`` (null when RunComfy did not report it); a
        per-file event on an alias repeats its request's cost.
        """
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
            "cost_usd": cost_usd,
        }
        for outlet in outlets:
            if isinstance(outlet, AssetAlias):
                for output in stored:
                    events[outlet].add(
                        Asset(uri=output.uri),
                        extra={"request_id": request_id, **output.event_extra(), "cost_usd": cost_usd},
                    )
            else:
                events[outlet].extra.update(json.loads(json.dumps(extra)))
