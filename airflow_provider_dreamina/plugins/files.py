"""Reading what the provider stored, wherever it is: a local disk or any ``ObjectStoragePath``.

Every URI handled here comes from a record the provider wrote (an asset event or a manifest),
never from a request: this module opens what it is given, so callers decide what may be opened.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from airflow_provider_dreamina.locations import NotOnThisMachine, locate


class StoredFileMissing(Exception):
    """The recorded file is no longer where the record says it is."""


def _local_path(uri: str) -> Path | None:
    """The path of a local URI on this machine, None for an object-storage URI."""
    try:
        return locate(uri).path
    except NotOnThisMachine as error:
        raise StoredFileMissing(str(error)) from None


def _object_path(uri: str, conn_id: str | None) -> Any:
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(uri, conn_id=conn_id)


def open_stored(uri: str, conn_id: str | None = None) -> IO[bytes]:
    """Open a stored file for reading (seekable); raises StoredFileMissing when it is gone."""
    try:
        local = _local_path(uri)
        if local is not None:
            return local.open("rb")
        handle: IO[bytes] = _object_path(uri, conn_id).open("rb")
        return handle
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
        raise StoredFileMissing(f"{uri} is not there any more") from error


def stored_size(uri: str, conn_id: str | None = None) -> int | None:
    """The size of a stored file in bytes, None when it does not exist."""
    try:
        local = _local_path(uri)
        if local is not None:
            return local.stat().st_size if local.is_file() else None
        return int(_object_path(uri, conn_id).size())
    except (FileNotFoundError, IsADirectoryError, StoredFileMissing):
        return None


def read_small(uri: str, limit: int, conn_id: str | None = None) -> bytes | None:
    """At most ``limit`` bytes of a small stored file (a manifest), None when it does not exist."""
    try:
        with open_stored(uri, conn_id) as handle:
            return handle.read(limit)
    except StoredFileMissing:
        return None


def is_plain_name(name: str) -> bool:
    """True when ``name`` is one visible file name: no directory part, no parent, not hidden."""
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")


def sibling(uri: str, name: str) -> str:
    """The URI of the file called ``name`` in the same directory as ``uri``."""
    if not is_plain_name(name):
        raise ValueError(f"{name!r} is not a plain file name")
    parent = uri.rsplit("/", 1)[0]
    return f"{parent}/{name}"


def same_directory(uri: str, other: str) -> bool:
    """True when both URIs name files in one directory of one store."""
    return uri.rsplit("/", 1)[0] == other.rsplit("/", 1)[0]


def file_name(uri: str) -> str:
    return PurePosixPath(unquote(urlsplit(uri).path)).name
