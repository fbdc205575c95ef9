"""Where bytes live: a path on this machine or an object-storage URI, told apart in one place.

Every place that takes "a directory or a storage URI" (the download's destination, the ledger of
submit records, an input image, a file the gallery serves) reads it here, so a ``file://`` URI
means the same thing everywhere: a path on this machine (host empty or ``localhost``, percent
escapes decoded), never another machine's. Small files written here are atomic: a reader sees the
old content or the new, never half.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

#: URI schemes that name a path on this machine.
LOCAL_SCHEMES = frozenset({"file", "local"})


class NotOnThisMachine(ValueError):
    """A ``file://`` URI that names another host: nothing on this machine answers to it."""


@dataclass(frozen=True)
class Location:
    """A place named by the user: exactly one of ``path`` (this machine) and ``uri`` (a store)."""

    #: As the user wrote it, for messages.
    text: str
    path: Path | None = None
    uri: str | None = None

    @property
    def is_local(self) -> bool:
        return self.path is not None

    @property
    def scheme(self) -> str:
        return "file" if self.path is not None else urlsplit(self.uri or "").scheme.lower()

    def storage_path(self, conn_id: str | None = None) -> Any:
        """The ``ObjectStoragePath`` of a store location (imported only when one is used)."""
        from airflow.sdk import ObjectStoragePath

        assert self.uri is not None, "a local location has no storage path"
        return ObjectStoragePath(self.uri, conn_id=conn_id)


def scheme_of(text: str) -> str:
    """The URI scheme of ``text`` in lower case; "" for a plain path."""
    head, sep, _rest = text.partition("://")
    return head.lower() if sep and head and "/" not in head else ""


def locate(text: str) -> Location:
    """Tell a local path (plain, ``~``, ``file://``, ``local://``) from an object-storage URI.

    :raises NotOnThisMachine: a ``file://`` URI naming another host.
    """
    text = str(text).strip()
    scheme = scheme_of(text)
    if not scheme:
        return Location(text, path=Path(text).expanduser())
    if scheme == "file":
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise NotOnThisMachine(
                f"{text} names host {parts.netloc!r}; a file:// URI must be on this machine"
            )
        # url2pathname decodes the percent escapes itself: decoding twice would turn %2541 into A.
        return Location(text, path=Path(url2pathname(parts.path)))
    if scheme == "local":
        return Location(text, path=Path(text.partition("://")[2]).expanduser())
    return Location(text, uri=text)


def write_atomically(path: Path, data: bytes, *, temporary_prefix: str | None = None) -> None:
    """Write a small local file so that a crash leaves the old content or the new, never half.

    A temporary file in the same directory (``temporary_prefix`` and 12 random hex digits, so the
    caller can recognise one a killed process left) is written and flushed to disk, renamed over
    ``path``, and the directory itself is flushed so the rename survives a power loss too.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f"{temporary_prefix or f'.{path.name}.'}{uuid.uuid4().hex[:12]}"
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    sync_directory(path.parent)


def sync_directory(directory: Path) -> None:
    """Flush a directory's entries (a rename into it) to disk."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
