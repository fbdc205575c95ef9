"""Reading what the provider stored, wherever it is: a local disk or any ``ObjectStoragePath``.

Every URI handled here comes from a record the provider wrote (an asset event or a manifest),
never from a request: this module opens what it is given, so callers decide what may be opened.

A local file is opened only as the regular file at its recorded path: each directory on the way is
opened from the one before without following a symbolic link, the file itself is checked with
``lstat`` before it is opened (a FIFO or a device is never opened) and opened with ``O_NOFOLLOW``,
and what was opened must be what was checked. A symlink anywhere on the path is refused, even one
leading back to the same file: the record names a real path, and a link is how a path is made to
lead elsewhere. The caller then reads, hashes and serves that one descriptor, so a file swapped in
after the check is never what is sent.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from abc import ABC, abstractmethod
from collections.abc import Hashable
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from airflow_provider_dreamina.locations import NotOnThisMachine, locate

#: A file changed this recently may change again within the same tick of the file system's clock
#: without its time stamps moving (as git's "racy" index entries), so its digest is not remembered.
SETTLE_NS = 2_000_000_000

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# O_PATH (Linux) walks a directory the server may search but not list; elsewhere, read access.
_DIRECTORY_FLAGS = os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC | getattr(os, "O_PATH", os.O_RDONLY)
# O_NONBLOCK: should a FIFO replace the file between the check and the open, opening cannot block.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | _CLOEXEC


class StoredFileMissing(Exception):
    """The recorded file is no longer where the record says it is."""


class StoredFileRefused(Exception):
    """Something is at the recorded path, but not a regular file reached without a symlink."""


class StoredFileChanged(Exception):
    """The file changed while it was being read: what was read is not what was checked."""


class StoredFile(ABC):
    """One opened stored file: its size when opened, read by position, checked for change."""

    def __init__(self, uri: str, size: int) -> None:
        self.uri = uri
        self.size = size

    @property
    @abstractmethod
    def identity(self) -> Hashable | None:
        """What stays the same as long as the content does; None when the store cannot tell."""

    @property
    def settled(self) -> bool:
        """Whether a digest computed now may be remembered under :attr:`identity`."""
        return self.identity is not None

    @abstractmethod
    def read_at(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset`` (fewer only at the end of the file)."""

    @abstractmethod
    def check_unchanged(self) -> None:
        """Raise :class:`StoredFileChanged` when the file is no longer what was opened."""

    def check_between_reads(self) -> None:  # noqa: B027 - most stores cannot check cheaply
        """:meth:`check_unchanged` where it costs nothing (a local ``fstat``); else nothing."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> StoredFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class LocalFile(StoredFile):
    """A regular file on this machine, held open by its descriptor."""

    def __init__(self, uri: str, handle: IO[bytes], opened: os.stat_result) -> None:
        super().__init__(uri, opened.st_size)
        # A file object, not a bare descriptor: garbage collection closes it if a caller cannot.
        self._handle = handle
        self._opened = opened

    @staticmethod
    def _identity_of(found: os.stat_result) -> tuple[int, ...]:
        # ctime too: mtime can be set back by whoever can write the file, ctime cannot.
        return (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns)

    @property
    def identity(self) -> Hashable:
        return (self.uri, *self._identity_of(self._opened))

    @property
    def settled(self) -> bool:
        changed = max(self._opened.st_mtime_ns, self._opened.st_ctime_ns)
        return time.time_ns() - changed >= SETTLE_NS

    def read_at(self, offset: int, length: int) -> bytes:
        return os.pread(self._handle.fileno(), length, offset)

    def check_unchanged(self) -> None:
        now = os.fstat(self._handle.fileno())
        if self._identity_of(now) != self._identity_of(self._opened):
            raise StoredFileChanged(f"{file_name(self.uri)} changed while it was being read")

    def check_between_reads(self) -> None:
        # A write updates ctime before it copies its bytes: a read followed by an unchanged
        # fstat read bytes that were there when the file was checked.
        self.check_unchanged()

    def close(self) -> None:
        self._handle.close()


class ObjectFile(StoredFile):
    """An object in a store, read through fsspec; its identity is what the store says about it."""

    #: Keys of fsspec's ``info()`` that change whenever an object is written (ETag, version,
    #: generation, hashes, modification times), as the stores that fsspec supports name them.
    IDENTITY_KEYS = (
        "ETag",
        "etag",
        "VersionId",
        "version_id",
        "generation",
        "md5Hash",
        "crc32c",
        "content_md5",
        "LastModified",
        "last_modified",
        "mtime",
        "updated",
        "created",
    )

    def __init__(
        self, uri: str, conn_id: str | None, path: Any, handle: IO[bytes], info: dict[str, Any]
    ) -> None:
        super().__init__(uri, int(info["size"]))
        self._conn_id = conn_id
        self._path = path
        self._handle = handle
        self._token = self._token_of(info)

    @classmethod
    def _token_of(cls, info: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        return tuple((key, str(info[key])) for key in cls.IDENTITY_KEYS if info.get(key) is not None)

    @property
    def identity(self) -> Hashable | None:
        return (self.uri, self._conn_id, self.size, self._token) if self._token else None

    def read_at(self, offset: int, length: int) -> bytes:
        self._handle.seek(offset)
        return self._handle.read(length)

    def check_unchanged(self) -> None:
        info = _object_info(self._path)
        if int(info["size"]) != self.size or self._token_of(info) != self._token:
            raise StoredFileChanged(f"{file_name(self.uri)} changed while it was being read")

    def close(self) -> None:
        self._handle.close()


def _local_path(uri: str) -> Path | None:
    """The path of a local URI on this machine, None for an object-storage URI."""
    try:
        return locate(uri).path
    except NotOnThisMachine as error:
        raise StoredFileMissing(str(error)) from None


def _object_path(uri: str, conn_id: str | None) -> Any:
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(uri, conn_id=conn_id)


def _object_info(path: Any) -> dict[str, Any]:
    info: dict[str, Any] = path.fs.info(path.path)
    if info.get("type", "file") != "file" or not isinstance(info.get("size"), int):
        raise StoredFileRefused(f"{path} is not a file")
    return info


def _refusal(uri: str, directory: int, part: str, error: OSError) -> Exception:
    """What an ``open`` that failed on ``part`` means: a link, something missing, or an error."""
    try:
        found = os.stat(part, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return StoredFileMissing(f"{file_name(uri)} is not there any more")
    except OSError:
        return error
    if stat.S_ISLNK(found.st_mode):
        return StoredFileRefused(
            f"the path of {file_name(uri)} passes through a symbolic link ({part}): "
            "the gallery reads a file only at its real path"
        )
    if error.errno in (errno.ENOENT, errno.ENOTDIR):
        return StoredFileMissing(f"{file_name(uri)} is not there any more")
    return error


def _open_directory(uri: str, path: Path) -> int:
    """The directory holding ``path``, reached from ``/`` without following any link."""
    parts = path.parts[1:]
    if not path.is_absolute() or not parts or any(part in ("", ".", "..") for part in parts):
        raise StoredFileRefused(f"{uri} is not an absolute, normalised path")
    directory = os.open(path.anchor, _DIRECTORY_FLAGS)
    try:
        for part in parts[:-1]:
            try:
                inner = os.open(part, _DIRECTORY_FLAGS, dir_fd=directory)
            except OSError as error:
                raise _refusal(uri, directory, part, error) from error
            os.close(directory)
            directory = inner
    except BaseException:
        os.close(directory)
        raise
    return directory


def _open_local(uri: str, path: Path) -> LocalFile:
    directory = _open_directory(uri, path)
    try:
        name = path.name
        try:
            checked = os.stat(name, dir_fd=directory, follow_symlinks=False)
        except FileNotFoundError:
            raise StoredFileMissing(f"{file_name(uri)} is not there any more") from None
        if stat.S_ISLNK(checked.st_mode):
            raise StoredFileRefused(
                f"{file_name(uri)} is a symbolic link: the gallery reads a file only at its real path"
            )
        if not stat.S_ISREG(checked.st_mode):
            raise StoredFileRefused(f"{file_name(uri)} is not a regular file")
        try:
            descriptor = os.open(name, _FILE_FLAGS, dir_fd=directory)
        except OSError as error:
            raise _refusal(uri, directory, name, error) from error
    finally:
        os.close(directory)
    handle = os.fdopen(descriptor, "rb", buffering=0)
    try:
        opened = os.fstat(descriptor)
        if (opened.st_dev, opened.st_ino) != (checked.st_dev, checked.st_ino) or not stat.S_ISREG(
            opened.st_mode
        ):
            raise StoredFileRefused(f"{file_name(uri)} was replaced while it was being opened")
    except BaseException:
        handle.close()
        raise
    return LocalFile(uri, handle, opened)


def open_stored(uri: str, conn_id: str | None = None) -> StoredFile:
    """Open a stored file for reading.

    :raises StoredFileMissing: it is not there any more.
    :raises StoredFileRefused: what is there is not a regular file at its real path.
    """
    local = _local_path(uri)
    if local is not None:
        try:
            return _open_local(uri, local)
        except OSError as error:  # permissions, I/O: nothing to serve, and nothing to explain
            raise StoredFileRefused(f"{file_name(uri)} cannot be read ({error.strerror or error})") from error
    path = _object_path(uri, conn_id)
    try:
        # Asked before opening: a store that hands out a snapshot on open (fsspec's memory store)
        # may then hold newer bytes than the identity says, which only makes a check fail.
        info = _object_info(path)
        handle: IO[bytes] = path.open("rb")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
        raise StoredFileMissing(f"{file_name(uri)} is not there any more") from error
    return ObjectFile(uri, conn_id, path, handle, info)


def stored_size(uri: str, conn_id: str | None = None) -> int | None:
    """The size of a stored file in bytes, None when there is no regular file to serve there."""
    try:
        with open_stored(uri, conn_id) as found:
            return found.size
    except (StoredFileMissing, StoredFileRefused):
        return None


def read_small(uri: str, limit: int, conn_id: str | None = None) -> bytes | None:
    """At most ``limit`` bytes of a small stored file (a manifest), None when it does not exist.

    :raises StoredFileRefused: what is there is not a regular file at its real path.
    """
    try:
        with open_stored(uri, conn_id) as found:
            return found.read_at(0, limit)
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
