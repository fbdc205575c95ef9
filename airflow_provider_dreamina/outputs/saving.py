"""Saving one output of a finished request: streamed, verified, committed, described.

Each output is streamed into a temporary file in its destination (``destinations``), checked as a
video on the way (``video``; every frame too with ``verify="decode"``), given its final name only
once complete, and described by a manifest beside it (``manifest``). An existing file is kept,
replaced or refused as ``if_exists`` says; a kept file is described by its manifest, or hashed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, BinaryIO, cast

from airflow_provider_dreamina import metrics
from airflow_provider_dreamina.defaults import DEFAULT_MODEL_ID, IfExists, VerifyMode
from airflow_provider_dreamina.exceptions import (
    DreaminaDownloadError,
    DreaminaError,
    DreaminaInvalidVideoError,
)
from airflow_provider_dreamina.models import GenerationInput, GenerationRecord, RequestResult
from airflow_provider_dreamina.outputs.destinations import Destination
from airflow_provider_dreamina.outputs.manifest import (
    MANIFEST_READ_LIMIT,
    Manifest,
    ManifestPoster,
    ManifestVideo,
    manifest_name,
)
from airflow_provider_dreamina.outputs.naming import (
    FALLBACK_SUFFIX,
    FileNames,
    poster_name,
    suffix_from_content_type,
    suffix_from_url,
)
from airflow_provider_dreamina.outputs.transfer import DownloadedOutput, OutputSink
from airflow_provider_dreamina.redaction import url_without_query

log = logging.getLogger(__name__)

#: Streams one output URL into a sink: ``DreaminaHook.download_output`` with its request and index.
Download = Callable[[str, OutputSink, int], DownloadedOutput]


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
    #: The poster image stored beside the video (``poster=True``), and its size and SHA-256.
    poster_uri: str | None = None
    poster_bytes: int | None = None
    poster_sha256: str | None = None

    def event_extra(self) -> dict[str, Any]:
        """How an asset event describes the file (the gallery finds it by these)."""
        extra: dict[str, Any] = {
            "uri": self.uri,
            "sha256": self.sha256,
            "bytes": self.size_bytes,
            "content_type": self.content_type,
        }
        if self.video is not None:
            extra["video"] = self.video
        if self.poster_uri is not None:
            extra["poster"] = {
                "uri": self.poster_uri,
                "sha256": self.poster_sha256,
                "bytes": self.poster_bytes,
            }
        return extra


@dataclass(frozen=True)
class OutputSaver:
    """Saves the outputs of one request into one destination, as the download operator was told."""

    destination: Destination
    names: FileNames
    download: Download
    if_exists: IfExists = "overwrite"
    verify: VerifyMode = "container"
    poster: bool = False
    write_manifest: bool = True

    def save(
        self, result: RequestResult, url: str, index: int, name: str, generation: GenerationInput | None
    ) -> StoredOutput:
        """Store output ``index`` (1-based) of ``result`` under ``name`` (refined by its content
        type when its URL has no known suffix)."""
        try:
            return self._save(result, url, index, name, generation)
        except DreaminaInvalidVideoError:
            metrics.invalid_video()
            raise

    def _save(
        self, result: RequestResult, url: str, index: int, name: str, generation: GenerationInput | None
    ) -> StoredOutput:
        count = len(result.output_urls)
        # Without a suffix in the URL the final name waits for the content type, so an existing
        # file is noticed only when the download is committed.
        known_suffix = suffix_from_url(url) is not None
        if known_suffix and self.if_exists != "overwrite" and self.destination.exists(name):
            existing = self._existing(name, url)
            if existing is not None:
                return existing
        with self.destination.partial(name) as partial:
            downloaded = self.download(url, partial, index - 1)
            if not known_suffix:
                ext = suffix_from_content_type(downloaded.content_type) or FALLBACK_SUFFIX
                name = self.names.name(result.request_id, index, count, url, ext)
            if not partial.commit(name, overwrite=self.if_exists == "overwrite"):
                existing = self._existing(name, url)
                if existing is not None:
                    return existing
        stored = StoredOutput(
            uri=self.destination.uri(name),
            name=name,
            size_bytes=downloaded.size_bytes,
            sha256=downloaded.sha256,
            content_type=downloaded.content_type,
            source_url=downloaded.source_url,
            video=downloaded.video,
        )
        if stored.video is not None:
            stored = self._checked_video(stored, generation)
        if self.write_manifest:
            manifest = describe(result, stored, index, count, generation)
            self.destination.write_bytes(manifest_name(name), manifest.to_bytes())
        log.info(
            "Saved output %d of %d of request %s to %s (%d bytes, sha256 %s)",
            index,
            count,
            result.request_id,
            stored.uri,
            stored.size_bytes,
            stored.sha256,
        )
        return stored

    def _checked_video(self, stored: StoredOutput, generation: GenerationInput | None) -> StoredOutput:
        """Log a frame count other than asked for; decode every frame and cut a poster when asked."""
        from airflow_provider_dreamina.outputs.video import VideoFacts

        facts = VideoFacts.from_manifest(stored.video or {})
        asked = generation.frames if generation is not None else None
        if asked is not None and facts.frames != asked:
            log.warning(
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
            with self.destination.errors("read"), self.destination.open_read(stored.name) as handle:
                video = cast(BinaryIO, handle)  # a seekable binary file, whatever the storage
                if self.verify == "decode":
                    decode_all(video, name=stored.name, poster=poster)
                elif poster is not None:
                    write_poster(video, poster, name=stored.name)
        except DreaminaError:
            self.destination.remove(stored.name)  # a video that does not play is not stored
            raise
        if poster is None:
            return stored
        name, image = poster_name(stored.name), poster.getvalue()
        self.destination.write_bytes(name, image)
        return dataclasses.replace(
            stored,
            poster_uri=self.destination.uri(name),
            poster_bytes=len(image),
            poster_sha256=hashlib.sha256(image).hexdigest(),
        )

    def _existing(self, name: str, url: str) -> StoredOutput | None:
        """The file already stored under ``name`` (if_exists="skip"); raises for "fail"."""
        uri = self.destination.uri(name)
        if self.if_exists == "fail":
            raise DreaminaDownloadError(
                f"{uri} already exists; set if_exists='overwrite' to replace it or 'skip' to keep it"
            )
        if self.if_exists != "skip":
            return None
        if self.destination.is_link(name):
            raise DreaminaDownloadError(
                f"{uri} is a symbolic link; if_exists='skip' never follows one (it could describe any "
                "file): remove it, or set if_exists='overwrite'"
            )
        with self.destination.errors("read"):
            manifest = Manifest.read(self.destination.read_bytes(manifest_name(name), MANIFEST_READ_LIMIT))
        if manifest is not None and manifest.sha256 is not None and manifest.size_bytes is not None:
            sha256, size, content_type = manifest.sha256, manifest.size_bytes, manifest.content_type
        else:
            digest, size = hashlib.sha256(), 0
            with self.destination.errors("read"):
                for chunk in self.destination.iter_chunks(name):
                    digest.update(chunk)
                    size += len(chunk)
            sha256, content_type = digest.hexdigest(), None
        log.info("Kept %s, which already exists (if_exists='skip'): %d bytes, sha256 %s", uri, size, sha256)
        return StoredOutput(
            uri=uri,
            name=name,
            size_bytes=size,
            sha256=sha256,
            content_type=content_type,
            source_url=url_without_query(url),
            skipped=True,
        )


def describe(
    result: RequestResult, stored: StoredOutput, index: int, count: int, generation: GenerationInput | None
) -> Manifest:
    """The manifest of one stored output: what was asked for, what RunComfy answered, what was stored."""
    record = GenerationRecord.of(result, generation)
    model_id = (result.model_extra or {}).get("model_id")
    return Manifest(
        request_id=result.request_id,
        model_id=model_id
        if isinstance(model_id, str)
        else (generation.model_id if generation else DEFAULT_MODEL_ID),
        prompt=generation.prompt if generation else None,
        seed=generation.seed if generation else None,
        frames=generation.frames if generation else None,
        image_url=generation.image_url if generation else None,
        output_index=index,
        output_count=count,
        source_url=stored.source_url,
        stored_uri=stored.uri,
        file_name=stored.name,
        size_bytes=stored.size_bytes,
        sha256=stored.sha256,
        content_type=stored.content_type,
        video=ManifestVideo.model_validate(stored.video) if stored.video is not None else None,
        poster=(
            ManifestPoster(
                file_name=poster_name(stored.name),
                stored_uri=stored.poster_uri,
                size_bytes=stored.poster_bytes,
                sha256=stored.poster_sha256,
            )
            if stored.poster_uri
            else None
        ),
        created_at=record.created_at.isoformat() if record.created_at else None,
        finished_at=record.finished_at.isoformat() if record.finished_at else None,
        generation_seconds=record.generation_seconds,
        cost_usd=record.cost_usd,
        downloaded_at=datetime.now(timezone.utc).isoformat(),
    )
