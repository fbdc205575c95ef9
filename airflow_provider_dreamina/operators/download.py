"""DreaminaDownloadOperator: save every output of a finished request, verified, into any storage."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import string
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from airflow.sdk import BaseOperator

from airflow_provider_dreamina.compat import AirflowFailException
from airflow_provider_dreamina.defaults import DEFAULT_CONN_ID, DEFAULT_MODEL_ID, XCOM_OUTPUT_URL
from airflow_provider_dreamina.exceptions import DreaminaDownloadError, DreaminaError
from airflow_provider_dreamina.links import DreaminaGalleryLink, DreaminaOutputLink
from airflow_provider_dreamina.outputs.destinations import (
    DEFAULT_MAX_BYTES,
    Destination,
    check_name,
    name_from_url,
    open_destination,
    suffix_from_content_type,
    suffix_from_url,
)
from airflow_provider_dreamina.redaction import url_without_query

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_dreamina.hooks.dreamina import DreaminaHook
    from airflow_provider_dreamina.models import GenerationInput, RequestResult


#: What ``if_exists`` accepts.
IF_EXISTS_MODES = ("fail", "skip", "overwrite")
#: What ``verify`` accepts: the container and its index as the bytes stream past, or every frame.
VERIFY_MODES = ("container", "decode")
POSTER_SUFFIX = ".jpg"
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
    #: ``VideoFacts.as_manifest()`` of a video output.
    video: dict[str, Any] | None = None
    #: The poster image stored beside the video (``poster=True``).
    poster_uri: str | None = None

    def event_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "uri": self.uri,
            "sha256": self.sha256,
            "bytes": self.size_bytes,
            "content_type": self.content_type,
        }
        if self.video is not None:
            extra["video"] = self.video
        if self.poster_uri is not None:
            extra["poster"] = self.poster_uri
        return extra


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
        "conn_id",
        "dreamina_conn_id",
        "generation_input",
    )
    ui_color = "#d6f5e3"
    operator_extra_links = (DreaminaGalleryLink(), DreaminaOutputLink())

    def __init__(
        self,
        *,
        request_id: str,
        destination: str,
        conn_id: str | None = None,
        filename: str | None = None,
        if_exists: str = "overwrite",
        max_bytes: int | None = DEFAULT_MAX_BYTES,
        write_manifest: bool = True,
        generation_input: dict[str, Any] | str | None = None,
        verify: str = "container",
        poster: bool = False,
        dreamina_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if if_exists not in IF_EXISTS_MODES:
            raise ValueError(
                f"if_exists is {if_exists!r}; use one of {', '.join(map(repr, IF_EXISTS_MODES))}"
            )
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int)):
            raise ValueError(f"max_bytes must be a whole number of bytes or None; got {max_bytes!r}")
        if verify not in VERIFY_MODES:
            raise ValueError(f"verify is {verify!r}; use one of {', '.join(map(repr, VERIFY_MODES))}")
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
        self.verify = verify
        self.poster = poster
        self.dreamina_conn_id = dreamina_conn_id

    @cached_property
    def hook(self) -> DreaminaHook:
        from airflow_provider_dreamina.hooks.dreamina import DreaminaHook

        return DreaminaHook(dreamina_conn_id=self.dreamina_conn_id)

    def execute(self, context: Context) -> list[str]:
        from airflow_provider_dreamina.waiting.outcome import fail_or_raise

        try:
            request_id = self._checked_request_id()
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
        if urls:
            context["ti"].xcom_push(key=XCOM_OUTPUT_URL, value=urls[0])
        self._emit_asset_events(context, request_id, stored, result.cost)
        self._report_lineage(stored)
        return [output.uri for output in stored]

    def _checked_request_id(self) -> str:
        from airflow_provider_dreamina.runcomfy.calls import check_request_id

        request_id = str(self.request_id if self.request_id is not None else "").strip()
        if request_id in ("", "None"):
            raise AirflowFailException(
                f"request_id rendered to {self.request_id!r}: pass the submit task's request id, such "
                "as \"{{ ti.xcom_pull(task_ids='submit', key='request_id') }}\""
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
        generation: GenerationInput | None,
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
            video=downloaded.video,
        )
        if stored.video is not None:
            stored = self._checked_video(destination, stored, generation)
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

    def _checked_video(
        self, destination: Destination, stored: StoredOutput, generation: GenerationInput | None
    ) -> StoredOutput:
        """Log a frame count other than asked for; decode every frame and cut a poster when asked."""
        from airflow_provider_dreamina.outputs.video import VideoFacts

        facts = VideoFacts.from_manifest(stored.video or {})
        asked = generation.frames if generation is not None else None
        if asked is not None and facts.frames != asked:
            self.log.warning(
                "%s has %d frames where %d were asked for (the model's exact count is not documented); "
                "the manifest records both",
                stored.name,
                facts.frames,
                asked,
            )
        if self.verify != "decode" and not self.poster:
            return stored
        from airflow_provider_dreamina.outputs.decode import decode_all, write_poster

        poster = io.BytesIO() if self.poster else None
        try:
            with destination.errors("read"), destination.open_read(stored.name) as handle:
                video = cast(BinaryIO, handle)  # a seekable binary file, whatever the storage
                if self.verify == "decode":
                    decode_all(video, name=stored.name, poster=poster)
                elif poster is not None:
                    write_poster(video, poster, name=stored.name)
        except DreaminaError:
            destination.remove(stored.name)  # a video that does not play is not stored
            raise
        if poster is None:
            return stored
        poster_name = _poster_name(stored.name)
        destination.write_bytes(poster_name, poster.getvalue())
        return dataclasses.replace(stored, poster_uri=destination.uri(poster_name))

    def _existing(self, destination: Destination, name: str, url: str) -> StoredOutput | None:
        """The file already stored under ``name`` (if_exists="skip"); raises for "fail"."""
        uri = destination.uri(name)
        if self.if_exists == "fail":
            raise DreaminaDownloadError(
                f"{uri} already exists; set if_exists='overwrite' to replace it or 'skip' to keep it"
            )
        if self.if_exists != "skip":
            return None
        if destination.is_link(name):
            raise DreaminaDownloadError(
                f"{uri} is a symbolic link; if_exists='skip' never follows one (it could describe any "
                "file): remove it, or set if_exists='overwrite'"
            )
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
            source_url=url_without_query(url),
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

    def _generation_details(self) -> GenerationInput | None:
        """The submitted input as the manifest records it (never inline image data)."""
        from airflow_provider_dreamina.models import GenerationRecord

        value: Any = self.generation_input
        if value is None or value == "":
            return None
        record = GenerationRecord.coerce(value)
        if record is None:
            self.log.warning(
                "generation_input is neither a generation record, nor a dict of the submitted input, nor "
                "JSON text of one (pass generate.output, or render a template with '| tojson'); the "
                "manifest will not record the prompt, seed and frames"
            )
            return None
        return record.input if isinstance(record, GenerationRecord) else record

    def _manifest(
        self,
        result: RequestResult,
        stored: StoredOutput,
        index: int,
        count: int,
        generation: GenerationInput | None,
    ) -> bytes:
        from airflow_provider_dreamina.models import GenerationRecord

        extra = result.model_extra or {}
        record = GenerationRecord.of(result, generation)
        asked = generation.model_dump() if generation is not None else {}
        manifest = {
            "request_id": result.request_id,
            "model_id": extra.get("model_id") or asked.get("model_id") or DEFAULT_MODEL_ID,
            "prompt": asked.get("prompt"),
            "seed": asked.get("seed"),
            "frames": asked.get("frames"),
            "image_url": asked.get("image_url"),
            "output_index": index,
            "output_count": count,
            "source_url": stored.source_url,
            "stored_uri": stored.uri,
            "file_name": stored.name,
            "bytes": stored.size_bytes,
            "sha256": stored.sha256,
            "content_type": stored.content_type,
            "video": stored.video,
            "poster": (
                {"file_name": _poster_name(stored.name), "stored_uri": stored.poster_uri}
                if stored.poster_uri
                else None
            ),
            "created_at": record.created_at.isoformat() if record.created_at else None,
            "finished_at": record.finished_at.isoformat() if record.finished_at else None,
            # RunComfy's processing time (not the video's length: that is video.duration_seconds).
            "generation_seconds": record.duration_seconds,
            # The old name of generation_seconds, kept for one release.
            "duration_seconds": record.duration_seconds,
            "cost_usd": record.cost_usd,
            # The old name of cost_usd, kept for one release.
            "cost": record.cost_usd,
            "downloaded_at": datetime.now(timezone.utc).isoformat(),
        }
        return json.dumps(manifest, indent=2, default=str).encode() + b"\n"

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


def _poster_name(video_name: str) -> str:
    """``clip.mp4`` → ``clip.jpg``: the poster beside its video."""
    stem, dot, _suffix = video_name.rpartition(".")
    return (stem if dot and stem else video_name) + POSTER_SUFFIX
