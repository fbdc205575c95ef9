"""Input images: the Dreamina image rules and the preflight that applies them before a submit.

Every rule of the schema that concerns the image lives here, and this is the only module that
uses Pillow (imported when a check runs, so parsing a DAG file never pays for it). An ``https``
URL or ``data:`` URI is sent as it is (a URL is probed only as far as the header, never past the
size limit); a local path, ``file://`` URI or object-storage URI is read and sent inline.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import os
from pathlib import Path
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict

from airflow_provider_dreamina.exceptions import DreaminaConnectionError, DreaminaInvalidInputError
from airflow_provider_dreamina.redaction import shorten
from airflow_provider_dreamina.runcomfy.clients import USER_AGENT

# The schema says "less than 4.7 MB"; RunComfy's web tooling counts decimal megabytes.
IMAGE_MAX_BYTES = 4_700_000
IMAGE_MIN_SIDE = 320  # exclusive: a side must be longer than this
IMAGE_MAX_SIDE = 4096  # inclusive
IMAGE_MAX_RATIO = 3.0  # exclusive: long side / short side must be below this
IMAGE_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png"}
# Enough to hold any JPEG or PNG header; more is read only when the header is not found in it.
_HEAD_BYTES = 256 * 1024
_FETCH_TIMEOUT = httpx.Timeout(30.0, connect=10.0)

SourceKind = Literal["url", "data", "storage"]


class ImageInfo(BaseModel):
    """What the preflight learnt about an input image."""

    model_config = ConfigDict(frozen=True)

    format: Literal["JPEG", "PNG"]
    width: int
    height: int
    size_bytes: int

    @property
    def media_type(self) -> str:
        return IMAGE_FORMATS[self.format]


def check_image(head: bytes, size_bytes: int, *, source: str) -> ImageInfo:
    """Check an image against the Dreamina schema from its first bytes and its total size.

    ``head`` needs to hold only the image header (a few KiB); the pixels are never decoded.
    Raises :class:`DreaminaInvalidInputError` naming the rule and the measured value.
    """
    from PIL import Image, UnidentifiedImageError

    def invalid(rule: str) -> DreaminaInvalidInputError:
        return DreaminaInvalidInputError(f"image_urls[0] ({source}): {rule}", field="image_urls")

    if size_bytes >= IMAGE_MAX_BYTES:
        raise invalid(
            f"image is {_megabytes(size_bytes)}; the limit is {_megabytes(IMAGE_MAX_BYTES)}"
            " (file size must be less than 4.7 MB)"
        )
    try:
        with Image.open(io.BytesIO(head)) as image:
            image_format, (width, height) = image.format, image.size
    except (UnidentifiedImageError, OSError, ValueError):
        raise invalid("is not a JPEG or PNG image (checked by content, not by name)") from None
    if image_format not in IMAGE_FORMATS:
        raise invalid(f"is a {image_format} image; only JPEG and PNG are accepted")
    short_side, long_side = sorted((width, height))
    if long_side > IMAGE_MAX_SIDE:
        raise invalid(
            f"image is {width}x{height} pixels; the maximum resolution is {IMAGE_MAX_SIDE}x{IMAGE_MAX_SIDE}"
        )
    if short_side <= IMAGE_MIN_SIDE:
        raise invalid(
            f"image is {width}x{height} pixels; the shortest side must be more than {IMAGE_MIN_SIDE} pixels"
        )
    if long_side / short_side >= IMAGE_MAX_RATIO:
        raise invalid(
            f"image is {width}x{height} pixels, a ratio of {long_side / short_side:.2f}:1;"
            " the ratio of long side to short side must be within 3:1"
        )
    return ImageInfo(format=image_format, width=width, height=height, size_bytes=size_bytes)


def _megabytes(size_bytes: int) -> str:
    return f"{size_bytes / 1_000_000:.1f} MB"


def source_kind(source: str) -> SourceKind:
    """How an image reference is handled: a URL or ``data:`` URI is sent as is, storage is inlined."""
    lowered = source[:16].lower()
    if lowered.startswith(("https://", "http://")):
        return "url"
    if lowered.startswith("data:"):
        return "data"
    return "storage"


def prepare_image(source: str, *, validate: bool = True, transport: httpx.BaseTransport | None = None) -> str:
    """The image URI to submit for ``source``, checked against the schema when ``validate``."""
    kind = source_kind(source)
    if kind == "url":
        if validate:
            try:
                with (
                    httpx.Client(
                        timeout=_FETCH_TIMEOUT, follow_redirects=True, transport=transport
                    ) as client,
                    client.stream("GET", source, headers={"User-Agent": USER_AGENT}) as response,
                ):
                    probe = _Probe(source, response)
                    for chunk in response.iter_bytes():
                        if probe.feed(chunk):
                            break
                    probe.finish()
            except httpx.HTTPError as error:
                raise _unreachable(source, error) from None
        return source
    if kind == "data":
        check_data_uri(source, validate=validate)
        return source
    return inline_image(source, validate=validate)


async def aprepare_image(
    source: str, *, validate: bool = True, transport: httpx.AsyncBaseTransport | None = None
) -> str:
    """Async :func:`prepare_image`; files are read in a worker thread."""
    kind = source_kind(source)
    if kind == "url":
        if validate:
            try:
                async with (
                    httpx.AsyncClient(
                        timeout=_FETCH_TIMEOUT, follow_redirects=True, transport=transport
                    ) as client,
                    client.stream("GET", source, headers={"User-Agent": USER_AGENT}) as response,
                ):
                    probe = _Probe(source, response)
                    async for chunk in response.aiter_bytes():
                        if probe.feed(chunk):
                            break
                    probe.finish()
            except httpx.HTTPError as error:
                raise _unreachable(source, error) from None
        return source
    if kind == "data":
        check_data_uri(source, validate=validate)
        return source
    return await asyncio.to_thread(inline_image, source, validate=validate)


def _unreachable(source: str, error: httpx.HTTPError) -> DreaminaConnectionError:
    return DreaminaConnectionError(
        f"image_urls[0] ({shorten(source)}) could not be fetched for its preflight check: "
        f"{type(error).__name__}: {error}; nothing was submitted"
    )


class _Probe:
    """Reads an image stream only as far as the checks need, never past the size limit."""

    def __init__(self, source: str, response: httpx.Response) -> None:
        self.source = source
        if response.status_code >= 400:
            raise DreaminaInvalidInputError(
                f"image_urls[0] ({source}): the image could not be fetched (HTTP {response.status_code})",
                field="image_urls",
            )
        length = response.headers.get("Content-Length")
        self.declared_size = int(length) if length and length.isdigit() else None
        self.buffer = bytearray()
        self._next_attempt = _HEAD_BYTES
        if self.declared_size is not None and self.declared_size >= IMAGE_MAX_BYTES:
            # Refuse from the header alone: no need to download an oversized image.
            check_image(b"", self.declared_size, source=source)

    def feed(self, chunk: bytes) -> bool:
        """Take the next chunk; True once nothing more needs to be read."""
        self.buffer += chunk
        if len(self.buffer) >= IMAGE_MAX_BYTES:
            check_image(b"", len(self.buffer), source=self.source)
        if self.declared_size is None or len(self.buffer) < self._next_attempt:
            return False
        self._next_attempt += _HEAD_BYTES
        return _header_readable(bytes(self.buffer))

    def finish(self) -> ImageInfo:
        size = self.declared_size if self.declared_size is not None else len(self.buffer)
        return check_image(bytes(self.buffer), size, source=self.source)


def _header_readable(head: bytes) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(head)):
            return True
    except (UnidentifiedImageError, OSError, ValueError):
        return False


def check_data_uri(uri: str, *, validate: bool) -> None:
    """Check a ``data:`` URI: base64 image data, and with ``validate`` an image the schema accepts."""
    header, sep, payload = uri.partition(",")
    if not sep or not header.lower().startswith("data:image/") or not header.lower().endswith(";base64"):
        raise DreaminaInvalidInputError(
            "image_urls[0] is a data: URI that is not base64 image data (expected data:image/png;base64,...)",
            field="image_urls",
        )
    if not validate:
        return
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise DreaminaInvalidInputError(
            "image_urls[0] is a data: URI whose base64 payload does not decode", field="image_urls"
        ) from None
    check_image(raw[:_HEAD_BYTES], len(raw), source="data: URI")


def inline_image(source: str, *, validate: bool) -> str:
    """Read a local or object-storage image and return it as a ``data:`` URI."""
    raw, size = _read_source(source)
    head = raw[:_HEAD_BYTES]
    if validate:
        media_type = check_image(head, size, source=source).media_type
    else:
        media_type = "image/jpeg" if head.startswith(b"\xff\xd8\xff") else "image/png"
    return f"data:{media_type};base64,{base64.b64encode(raw).decode('ascii')}"


def _read_source(source: str) -> tuple[bytes, int]:
    """The bytes of an image (at most one over the size limit) and its true size in bytes."""
    limit = IMAGE_MAX_BYTES + 1
    try:
        if "://" not in source or source.lower().startswith("file://"):
            path = Path(source[len("file://") :] if source.lower().startswith("file://") else source)
            with path.expanduser().open("rb") as handle:
                return handle.read(limit), os.fstat(handle.fileno()).st_size
        from airflow.sdk import ObjectStoragePath

        storage_path = ObjectStoragePath(source)
        with storage_path.open("rb") as handle:  # type: ignore[no-untyped-call]
            data: bytes = handle.read(limit)
        size = len(data) if len(data) < limit else int(storage_path.stat().st_size)
        return data, size
    except FileNotFoundError:
        raise DreaminaInvalidInputError(
            f"image_urls[0] ({source}): no such file", field="image_urls"
        ) from None
    except (OSError, ValueError) as error:
        raise DreaminaInvalidInputError(
            f"image_urls[0] ({source}): the image could not be read: {error}", field="image_urls"
        ) from None
