"""The manifest written beside each stored file: one model that writes it and reads it everywhere.

``DreaminaDownloadOperator`` writes ``<file name>.json`` beside each file it stores: what was asked
for (prompt, seed, frames, model, image), what RunComfy answered (request id, timings, cost), and
what was stored (URI, bytes, SHA-256, content type, the video's measured facts, its poster). The
download (``if_exists="skip"``), the gallery and the cost summary read it back through
:meth:`Manifest.read`, which never fails on a manifest written by hand or by another version: a
field that does not hold is left out (None), and a body that is not a JSON object is no manifest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from airflow_provider_dreamina.defaults import FRAMES_PER_SECOND, MANIFEST_SUFFIX

#: A manifest is a few KiB; a larger file beside a video is not one.
MANIFEST_READ_LIMIT = 1024 * 1024
MANIFEST_VERSION = 1


def manifest_name(file_name: str) -> str:
    """``clip.mp4`` → ``clip.mp4.json``."""
    return file_name + MANIFEST_SUFFIX


class _Lenient(BaseModel):
    """Strict types, unknown keys kept; read leniently by :func:`_validate_leniently`."""

    model_config = ConfigDict(frozen=True, extra="allow", strict=True, populate_by_name=True)


class ManifestVideo(_Lenient):
    """The video's facts as its index says (``outputs.video.VideoFacts``)."""

    duration_seconds: float | None = None
    frames: int | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    codec: str | None = None


class ManifestPoster(_Lenient):
    """The poster stored beside the video (``poster=True``): the gallery serves it only while its
    bytes are these."""

    file_name: str | None = None
    stored_uri: str | None = None
    size_bytes: int | None = Field(default=None, alias="bytes")
    sha256: str | None = None


class Manifest(_Lenient):
    """One stored file and the generation it came from."""

    manifest_version: int = MANIFEST_VERSION
    request_id: str | None = None
    model_id: str | None = None
    prompt: str | None = None
    seed: int | None = None
    frames: int | None = None
    #: The input image as a record names it: never inline data, never a signed query.
    image_url: str | None = None
    output_index: int | None = None
    output_count: int | None = None
    #: The output URL without its query string.
    source_url: str | None = None
    stored_uri: str | None = None
    file_name: str | None = None
    size_bytes: int | None = Field(default=None, alias="bytes")
    sha256: str | None = None
    content_type: str | None = None
    video: ManifestVideo | None = None
    poster: ManifestPoster | None = None
    created_at: str | None = None
    finished_at: str | None = None
    #: RunComfy's processing time (not the video's length: that is ``video.duration_seconds``).
    generation_seconds: float | None = None
    cost_usd: float | None = None
    downloaded_at: str | None = None

    def to_bytes(self) -> bytes:
        """The manifest as it is stored: indented JSON, the size under its key ``bytes``."""
        return json.dumps(self.model_dump(mode="json", by_alias=True), indent=2).encode() + b"\n"

    @classmethod
    def read(cls, raw: bytes | str | Mapping[str, Any] | None) -> Manifest | None:
        """The manifest in ``raw`` (its JSON text, or the object already parsed); None when there is
        none (absent, not JSON, not an object)."""
        if not raw:
            return None
        value: Any = raw
        if isinstance(raw, (bytes, str)):
            try:
                value = json.loads(raw)
            except (ValueError, RecursionError):
                return None
        if not isinstance(value, Mapping):
            return None
        return _validate_leniently(cls, dict(value))

    @property
    def video_seconds(self) -> float | None:
        """Seconds of video: measured when the manifest has it, else ``frames / 24``."""
        measured = self.video.duration_seconds if self.video else None
        if measured is not None and measured > 0:
            return measured
        if self.frames is not None and self.frames > 0:
            return self.frames / FRAMES_PER_SECOND
        return None


def _validate_leniently(model: type[Manifest], value: dict[str, Any]) -> Manifest:
    """``value`` as ``model``, leaving out each field that does not hold (nested ones included)."""
    data = dict(value)
    for _ in range(len(data) + 1):
        try:
            # JSON mode: numbers, text and nested objects as JSON has them, no coercion between them.
            return model.model_validate_json(json.dumps(data, default=str))
        except ValidationError as error:
            failed = {str(item["loc"][0]) for item in error.errors() if item["loc"]}
        except (TypeError, ValueError):
            failed = set()
        known = {name: field.alias or name for name, field in model.model_fields.items()}
        keys = {known.get(key, key) for key in failed}
        if not keys & data.keys():
            break
        for key in keys:
            data.pop(key, None)
    return model()
