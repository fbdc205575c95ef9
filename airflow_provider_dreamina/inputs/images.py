"""Input images: where they may come from, the Dreamina image rules, and the preflight.

``image_url`` is often a DAG-run param, and whoever may trigger a DAG is not its author, so the
image source policy is secure by default:

- an ``https`` URL or a ``data:`` URI is always accepted; a URL is sent as it is, and probed for
  its check only when it is public (``image_fetch``: plain ``http`` and private hosts are refused);
- a local path, ``file://`` or ``local://`` URI, or an object-storage URI is read (and sent
  inline) only under a root that the DAG author (operator argument ``image_roots``) or the
  deployment (connection extra ``allowed_image_roots``) allowed. Paths are judged after symlinks
  and ``..`` are resolved, and only a regular file is ever opened (never a FIFO or a device);
- object storage is opened with the operator's ``image_conn_id``; a connection named inside the
  URI (``s3://conn@bucket/...``) is refused.

A refused source fails before anything is read, with an error that names the rule and how to
allow the source, and says nothing of what lies outside the roots (whether a file exists, its
size, its dimensions). Every rule of the schema that concerns the image lives here too, and this
is the only module that uses Pillow (imported when a check runs, so parsing a DAG file never pays).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict

from airflow_provider_dreamina.exceptions import (
    DreaminaConfigurationError,
    DreaminaConnectionError,
    DreaminaError,
    DreaminaImageRefusedError,
    DreaminaInvalidInputError,
)
from airflow_provider_dreamina.inputs import fetch as image_fetch
from airflow_provider_dreamina.models import recorded_image
from airflow_provider_dreamina.redaction import shorten
from airflow_provider_dreamina.runcomfy.reading import araw_chunks, raw_chunks
from airflow_provider_dreamina.runcomfy.settings import DEFAULT_PREFLIGHT_DEADLINE, DreaminaSettings

# The schema says "less than 4.7 MB"; RunComfy's web tooling counts decimal megabytes.
IMAGE_MAX_BYTES = 4_700_000
IMAGE_MIN_SIDE = 320  # exclusive: a side must be longer than this
IMAGE_MAX_SIDE = 4096  # inclusive
IMAGE_MAX_RATIO = 3.0  # exclusive: long side / short side must be below this
IMAGE_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png"}
# Enough to hold any JPEG or PNG header; more is read only when the header is not found in it.
_HEAD_BYTES = 256 * 1024
# A base64 payload longer than this decodes to more than the size limit.
_DATA_URI_MAX_CHARS = (IMAGE_MAX_BYTES + 2) // 3 * 4 + 4
_LOCAL_SCHEMES = ("file", "local")
# Opening a FIFO for reading blocks until a writer comes; a symlink swapped in after the check
# must not be followed.
_OPEN_FLAGS = (
    os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
)

SourceKind = Literal["url", "data", "local", "storage"]


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


@dataclass(frozen=True)
class ImagePolicy:
    """Where images may be read from, as the DAG author and the deployment allowed.

    :param roots: path or URI prefixes (``/data/frames``, ``s3://bucket/inputs/``) under which
        local and object-storage images may be read.
    :param conn_id: the Airflow connection object storage is opened with.
    :param allowed_hosts: hosts the preflight may fetch from although they are not public https
        hosts (a local emulator).
    :param deadline: seconds the whole preflight of a URL may take.
    """

    roots: tuple[str, ...] = ()
    conn_id: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    deadline: float = DEFAULT_PREFLIGHT_DEADLINE

    @classmethod
    def of(
        cls, settings: DreaminaSettings, roots: str | Sequence[str] | None = None, conn_id: str | None = None
    ) -> ImagePolicy:
        """The operator's ``image_roots`` and ``image_conn_id`` with the connection's extras."""
        own = (roots,) if isinstance(roots, str) else tuple(roots or ())
        return cls(
            roots=(*own, *settings.allowed_image_roots),
            conn_id=conn_id or None,
            allowed_hosts=settings.allowed_image_hosts,
            deadline=settings.preflight_deadline,
        )


def image_label(source: str) -> str:
    """How a message names an image: never inline data, never a URL's query (its signature)."""
    return shorten(recorded_image(source), 120)


def check_image(head: bytes, size_bytes: int, *, source: str) -> ImageInfo:
    """Check an image against the Dreamina schema from its first bytes and its total size.

    ``head`` needs to hold only the image header (a few KiB); the pixels are never decoded.
    ``source`` is how the message names the image (see :func:`image_label`). Raises
    :class:`DreaminaInvalidInputError` naming the rule and the measured value.
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
    """How an image reference is handled: a URL or ``data:`` URI is sent as is, anything else is
    read (under the allowed roots) and inlined."""
    lowered = source[:16].lower()
    if lowered.startswith(("https://", "http://")):
        return "url"
    if lowered.startswith("data:"):
        return "data"
    if "://" not in source or lowered.split("://", 1)[0] in _LOCAL_SCHEMES:
        return "local"
    return "storage"


def prepare_image(
    source: str,
    *,
    validate: bool = True,
    policy: ImagePolicy | None = None,
    transport: httpx.BaseTransport | None = None,
) -> str:
    """The image URI to submit for ``source``, allowed by ``policy`` and, with ``validate``,
    checked against the schema."""
    policy = policy or ImagePolicy()
    kind = source_kind(source)
    if kind == "url":
        _check_url(source, policy)
        if validate:
            _preflight_url(source, policy, transport)
        return source
    if kind == "data":
        check_data_uri(source, validate=validate)
        return source
    raw, size = read_allowed(source, policy)
    return _inline(raw, size, image_label(source), validate=validate)


async def aprepare_image(
    source: str,
    *,
    validate: bool = True,
    policy: ImagePolicy | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> str:
    """Async :func:`prepare_image`; files are read in a worker thread."""
    policy = policy or ImagePolicy()
    kind = source_kind(source)
    if kind == "url":
        _check_url(source, policy)
        if validate:
            await _apreflight_url(source, policy, transport)
        return source
    if kind == "data":
        check_data_uri(source, validate=validate)
        return source
    raw, size = await asyncio.to_thread(read_allowed, source, policy)
    return _inline(raw, size, image_label(source), validate=validate)


def _check_url(source: str, policy: ImagePolicy) -> None:
    # Even unchecked, a URL RunComfy cannot fetch (plain http) is refused before anything is paid.
    try:
        image_fetch.parsed(source, policy.allowed_hosts)
    except image_fetch.RefusedURL as refusal:
        raise image_fetch.refused(image_label(source), str(refusal)) from None


def _preflight_url(source: str, policy: ImagePolicy, transport: httpx.BaseTransport | None) -> None:
    label = image_label(source)
    failure: DreaminaError | None = None
    try:
        with image_fetch.open_url(
            source, allowed_hosts=policy.allowed_hosts, seconds=policy.deadline, transport=transport
        ) as (response, deadline):
            probe = _Probe(label, response)
            for chunk in raw_chunks(response):
                if probe.feed(chunk):
                    break
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("preflight deadline")
            probe.finish()
    except image_fetch.RefusedURL as refusal:
        failure = image_fetch.refused(label, str(refusal))
    except httpx.TimeoutException:
        failure = _too_slow(label, policy.deadline)
    except httpx.HTTPError:
        failure = _unreachable(label)
    if failure is not None:  # raised here, so no httpx error (and its URL) rides along
        raise failure


async def _apreflight_url(
    source: str, policy: ImagePolicy, transport: httpx.AsyncBaseTransport | None
) -> None:
    label = image_label(source)

    async def probe_url() -> None:
        async with image_fetch.aopen_url(
            source, allowed_hosts=policy.allowed_hosts, seconds=policy.deadline, transport=transport
        ) as response:
            probe = _Probe(label, response)
            async for chunk in araw_chunks(response):
                if probe.feed(chunk):
                    break
            probe.finish()

    failure: DreaminaError | None = None
    try:
        await asyncio.wait_for(probe_url(), timeout=policy.deadline)
    except image_fetch.RefusedURL as refusal:
        failure = image_fetch.refused(label, str(refusal))
    except (asyncio.TimeoutError, httpx.TimeoutException):
        failure = _too_slow(label, policy.deadline)
    except httpx.HTTPError:
        failure = _unreachable(label)
    if failure is not None:
        raise failure


def _unreachable(label: str) -> DreaminaConnectionError:
    # No status, no "connection refused": the text must not map what answers where.
    return DreaminaConnectionError(
        f"image_urls[0] ({label}) could not be fetched for its preflight check; nothing was submitted. "
        "Check that the URL is public and reachable (or set validate_image=False)"
    )


def _too_slow(label: str, seconds: float) -> DreaminaConnectionError:
    return DreaminaConnectionError(
        f"image_urls[0] ({label}) did not arrive within the preflight deadline of {seconds:g} s; nothing "
        "was submitted (the connection's 'preflight_deadline' extra sets it)"
    )


class _Probe:
    """Reads an image stream only as far as the checks need, never past the size limit."""

    def __init__(self, label: str, response: httpx.Response) -> None:
        self.label = label
        if response.status_code >= 400:
            raise DreaminaInvalidInputError(
                f"image_urls[0] ({label}): the image could not be fetched (the server answered with an "
                "error); RunComfy must be able to fetch it: check that the URL is public and not expired",
                field="image_urls",
            )
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise DreaminaInvalidInputError(
                f"image_urls[0] ({label}): the server sent the image compressed; it is not decoded",
                field="image_urls",
            )
        length = response.headers.get("Content-Length")
        self.declared_size = int(length) if length and length.isdigit() else None
        self.buffer = bytearray()
        self._next_attempt = _HEAD_BYTES
        if self.declared_size is not None and self.declared_size >= IMAGE_MAX_BYTES:
            # Refuse from the header alone: no need to download an oversized image.
            check_image(b"", self.declared_size, source=label)

    def feed(self, chunk: bytes) -> bool:
        """Take the next chunk; True once nothing more needs to be read."""
        self.buffer += chunk
        if len(self.buffer) >= IMAGE_MAX_BYTES:
            check_image(b"", len(self.buffer), source=self.label)
        if self.declared_size is None or len(self.buffer) < self._next_attempt:
            return False
        self._next_attempt += _HEAD_BYTES
        return _header_readable(bytes(self.buffer))

    def finish(self) -> ImageInfo:
        size = self.declared_size if self.declared_size is not None else len(self.buffer)
        return check_image(bytes(self.buffer), size, source=self.label)


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
    if len(payload) > _DATA_URI_MAX_CHARS:
        check_image(b"", len(payload) * 3 // 4, source="data: URI")
    if not validate:
        return
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise DreaminaInvalidInputError(
            "image_urls[0] is a data: URI whose base64 payload does not decode", field="image_urls"
        ) from None
    check_image(raw[:_HEAD_BYTES], len(raw), source="data: URI")


def _inline(raw: bytes, size: int, label: str, *, validate: bool) -> str:
    head = raw[:_HEAD_BYTES]
    if validate:
        media_type = check_image(head, size, source=label).media_type
    else:
        if size >= IMAGE_MAX_BYTES:  # never inline more than the schema allows, checked or not
            check_image(b"", size, source=label)
        media_type = "image/jpeg" if head.startswith(b"\xff\xd8\xff") else "image/png"
    return f"data:{media_type};base64,{base64.b64encode(raw).decode('ascii')}"


# The source policy for what is read: local paths and object storage under the allowed roots.


def read_allowed(source: str, policy: ImagePolicy) -> tuple[bytes, int]:
    """The bytes (at most one over the size limit) and true size of a local or object-storage
    image that ``policy`` allows; refuses anything else before reading it."""
    local_roots, storage_roots = _roots(policy.roots)
    label = image_label(source)
    if source_kind(source) == "local":
        resolved = _resolved_path(source, label)
        root = next((root for root in local_roots if _path_under(resolved, root)), None)
        if root is None:
            raise _outside_roots(label, "a local path", bool(policy.roots))
        return _read_local(resolved, root, label)
    uri = _storage_uri(source, label)
    if not any(uri == root or uri.startswith(root + "/") for root in storage_roots):
        raise _outside_roots(label, "an object-storage URI", bool(policy.roots))
    return _read_storage(uri, label, policy.conn_id)


def _roots(roots: Sequence[str]) -> tuple[list[str], list[str]]:
    """The allowed roots as resolved local paths and normalised storage URI prefixes."""
    local: list[str] = []
    storage: list[str] = []
    for root in roots:
        text = str(root).strip()
        if not text:
            continue
        kind = source_kind(text)
        if kind == "local":
            local.append(os.path.realpath(os.path.expanduser(_local_text(text) or "/")))
            continue
        if kind != "storage" or "@" in urlsplit(text).netloc or "?" in text:
            raise DreaminaConfigurationError(
                f"image root {shorten(text, 80)!r} is not a directory path or an object-storage URI "
                "prefix without a connection (such as /data/frames or s3://bucket/inputs/)"
            )
        parts = urlsplit(text)
        storage.append(f"{parts.scheme.lower()}://{parts.netloc}{parts.path}".rstrip("/"))
    return local, storage


def _local_text(source: str) -> str | None:
    """The path a local source names; None when a ``file://`` URI names another machine."""
    scheme, sep, rest = source.partition("://")
    if not sep:
        return source
    if scheme.lower() == "file":
        parts = urlsplit(source)
        return unquote(parts.path) if parts.netloc in ("", "localhost") else None
    return rest


def _resolved_path(source: str, label: str) -> str:
    text = _local_text(source)
    if not text:
        raise DreaminaImageRefusedError(
            f"image_urls[0] ({label}) names another machine; a file:// URI must name a path on the worker"
        )
    try:
        # Symlinks and '..' are resolved before the check, so neither can lead out of a root.
        return os.path.realpath(os.path.expanduser(text))
    except (OSError, ValueError):
        raise DreaminaImageRefusedError(f"image_urls[0] ({label}) is not a valid path") from None


def _path_under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _outside_roots(label: str, what: str, roots_set: bool) -> DreaminaImageRefusedError:
    where = "outside the allowed image roots" if roots_set else "not allowed: no image roots are set"
    return DreaminaImageRefusedError(
        f"image_urls[0] ({label}) is {what}, and it is {where} (judged after resolving symlinks and "
        "'..'); nothing was read. Local and object-storage images are read only under roots the DAG "
        "author or the deployment allowed: add its directory or prefix to the operator's image_roots, "
        "or to the connection's 'allowed_image_roots' extra, or give an https URL or a data: URI"
    )


def _read_local(resolved: str, root: str, label: str) -> tuple[bytes, int]:
    def unreadable(reason: str) -> DreaminaInvalidInputError:
        return DreaminaInvalidInputError(f"image_urls[0] ({label}) {reason}", field="image_urls")

    try:
        # Checked before opening: opening a device can have effects, opening a FIFO can block.
        if not stat.S_ISREG(os.stat(resolved).st_mode):
            raise unreadable("is not a regular file (a directory, FIFO or device is never read)")
        descriptor = os.open(resolved, _OPEN_FLAGS)
    except FileNotFoundError:
        raise unreadable("does not exist") from None
    except PermissionError:
        raise unreadable("cannot be read (permission denied)") from None
    except OSError:
        raise unreadable("could not be opened") from None
    with os.fdopen(descriptor, "rb") as handle:
        size = os.fstat(descriptor).st_size
        opened = _opened_path(descriptor)
        if opened is not None and not _path_under(opened, root):
            # A directory on the way was swapped for a symlink after the check.
            raise _outside_roots(label, "a local path", True)
        try:
            return handle.read(IMAGE_MAX_BYTES + 1), size
        except OSError:
            raise unreadable("could not be read") from None


def _opened_path(descriptor: int) -> str | None:
    try:
        return os.path.realpath(os.readlink(f"/proc/self/fd/{descriptor}"))
    except OSError:
        return None  # no /proc here: the check before opening stands alone


def _storage_uri(source: str, label: str) -> str:
    parts = urlsplit(source)
    if "@" in parts.netloc:
        raise DreaminaImageRefusedError(
            f"image_urls[0] ({label}) names an Airflow connection inside the URI ('...@'); an image "
            "source cannot choose a connection. Remove it, and set image_conn_id on the operator to the "
            "storage's connection"
        )
    segments = unquote(parts.path).split("/")
    if parts.query or parts.fragment or any(segment in (".", "..") for segment in segments):
        raise DreaminaImageRefusedError(
            f"image_urls[0] ({label}) is not a plain object-storage URI (no '.' or '..' segments, no "
            "query string)"
        )
    return f"{parts.scheme.lower()}://{parts.netloc}{parts.path}"


def _read_storage(uri: str, label: str, conn_id: str | None) -> tuple[bytes, int]:
    from airflow.sdk import ObjectStoragePath

    limit = IMAGE_MAX_BYTES + 1
    failure: Exception | None = None
    try:
        path = ObjectStoragePath(uri, conn_id=conn_id)
        with path.open("rb") as handle:  # type: ignore[no-untyped-call]
            data: bytes = handle.read(limit)
        size = len(data) if len(data) < limit else int(path.stat().st_size)
        return data, size
    except Exception as error:  # classified below, outside this block
        failure = error
    kind = type(failure).__name__
    if any(cls.__name__ == "AirflowNotFoundException" for cls in type(failure).__mro__):
        raise DreaminaConfigurationError(
            f"image_conn_id {conn_id!r} is not an Airflow connection this worker can see"
        )
    if isinstance(failure, FileNotFoundError):
        raise DreaminaInvalidInputError(f"image_urls[0] ({label}) does not exist", field="image_urls")
    if isinstance(failure, (PermissionError, IsADirectoryError, NotADirectoryError, ValueError)):
        raise DreaminaInvalidInputError(
            f"image_urls[0] ({label}) could not be read ({kind}); check image_conn_id and the URI",
            field="image_urls",
        )
    raise DreaminaConnectionError(f"image_urls[0] ({label}) could not be read from storage ({kind})")
