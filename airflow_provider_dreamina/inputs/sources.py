"""The image source policy: which local paths and object-storage URIs a task may read, and how.

``image_url`` is often a DAG-run param, and whoever may trigger a DAG is not its author, so the
policy is secure by default. A local path, ``file://`` or ``local://`` URI, or an object-storage URI
is read (and sent inline) only under a root that the DAG author (operator argument
``image_roots``) or the deployment (connection extra ``allowed_image_roots``) allowed. Paths are
judged after symlinks are resolved (a ``..`` segment is refused as written, before any lookup),
and only a regular file is ever opened (never a FIFO or a device). Object storage is opened with
the operator's ``image_conn_id``; a connection named inside the URI (``s3://conn@bucket/...``) is
refused.

A refused source fails before anything is read, with an error that names the rule and how to
allow the source, and says nothing of what lies outside the roots (whether a file exists, its
size, its dimensions).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

from airflow_provider_dreamina.exceptions import (
    DreaminaConfigurationError,
    DreaminaConnectionError,
    DreaminaImageRefusedError,
    DreaminaInvalidInputError,
)
from airflow_provider_dreamina.inputs.rules import IMAGE_MAX_BYTES
from airflow_provider_dreamina.locations import LOCAL_SCHEMES, NotOnThisMachine, locate, scheme_of
from airflow_provider_dreamina.models import recorded_image
from airflow_provider_dreamina.redaction import shorten
from airflow_provider_dreamina.runcomfy.settings import DEFAULT_PREFLIGHT_DEADLINE, DreaminaSettings

# Opening a FIFO for reading blocks until a writer comes; a symlink swapped in after the check
# must not be followed.
_OPEN_FLAGS = (
    os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
)

SourceKind = Literal["url", "data", "local", "storage"]


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


def source_kind(source: str) -> SourceKind:
    """How an image reference is handled: a URL or ``data:`` URI is sent as is, anything else is
    read (under the allowed roots) and inlined."""
    lowered = source[:16].lower()
    if lowered.startswith(("https://", "http://")):
        return "url"
    if lowered.startswith("data:"):
        return "data"
    scheme = scheme_of(source)
    return "local" if not scheme or scheme in LOCAL_SCHEMES else "storage"


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
            path = _real_local_path(text)
            if path is None:
                raise DreaminaConfigurationError(
                    f"image root {shorten(text, 80)!r} names another machine; a file:// root must be a "
                    "directory on the worker"
                )
            local.append(path)
            continue
        if kind != "storage" or "@" in urlsplit(text).netloc or "?" in text:
            raise DreaminaConfigurationError(
                f"image root {shorten(text, 80)!r} is not a directory path or an object-storage URI "
                "prefix without a connection (such as /data/frames or s3://bucket/inputs/)"
            )
        parts = urlsplit(text)
        storage.append(f"{parts.scheme.lower()}://{parts.netloc}{parts.path}".rstrip("/"))
    return local, storage


def _real_local_path(text: str) -> str | None:
    """The real path (symlinks and '..' resolved) a local source or root names; None when a
    ``file://`` URI names another machine."""
    path = _local_path(text)
    return None if path is None else os.path.realpath(path)


def _local_path(text: str) -> str | None:
    try:
        path = locate(text).path
    except NotOnThisMachine:
        return None
    return None if path is None else str(path)


def _resolved_path(source: str, label: str) -> str:
    try:
        path = _local_path(source)
    except (OSError, ValueError):
        raise DreaminaImageRefusedError(f"image_urls[0] ({label}) is not a valid path") from None
    if path is None:
        raise DreaminaImageRefusedError(
            f"image_urls[0] ({label}) names another machine; a file:// URI must name a path on the worker"
        )
    if ".." in path.split(os.sep):
        # Refused as written, before any lookup: resolving it would follow a symlink met on the way
        # and step over anything else, which tells a param which names outside the roots are links.
        raise DreaminaImageRefusedError(
            f"image_urls[0] ({label}) holds a '..' segment; name the image by its path under an image root"
        )
    try:
        # Symlinks are resolved before the check, so none can lead out of a root.
        return os.path.realpath(path)
    except (OSError, ValueError):
        raise DreaminaImageRefusedError(f"image_urls[0] ({label}) is not a valid path") from None


def _path_under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _outside_roots(label: str, what: str, roots_set: bool) -> DreaminaImageRefusedError:
    where = "outside the allowed image roots" if roots_set else "not allowed: no image roots are set"
    return DreaminaImageRefusedError(
        f"image_urls[0] ({label}) is {what}, and it is {where} (judged after resolving symlinks); "
        "nothing was read. Local and object-storage images are read only under roots the DAG "
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
