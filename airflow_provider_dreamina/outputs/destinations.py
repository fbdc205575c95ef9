"""Where DreaminaDownloadOperator puts outputs: a local directory or any Airflow object store.

Nothing appears under a final name before it is complete. Every file is written under a hidden
temporary name in the destination directory, then renamed: ``os.replace`` on a local disk; on an
object store a move, because fsspec files commit whatever they hold when closed, even after an
error (s3fs completes the multipart upload), so a failed write must never go to the final key.
A try killed outright (SIGKILL, a lost worker) cannot clean up: the next try of the same output
removes the temporary files it left. Existing files are read without following a symlink, and a
full disk is an error worth retrying.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING

from airflow_provider_dreamina.exceptions import (
    DreaminaDestinationFullError,
    DreaminaDownloadError,
    DreaminaError,
)
from airflow_provider_dreamina.locations import NotOnThisMachine, locate, write_atomically

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath
    from fsspec import AbstractFileSystem

log = logging.getLogger(__name__)

READ_CHUNK_SIZE = 1024 * 1024
_PARTIAL_MARK = ".partial-"
_PARTIAL_ID = re.compile(r"[0-9a-f]{12}")
# Out of space, or over the file system's (or the user's) size limit: freeing space cures it.
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)})
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


def partial_prefix(name: str) -> str:
    """How the temporary files of the output ``name`` start; a random 12-hex-digit id follows."""
    return f".{name}{_PARTIAL_MARK}"


class PartialFile:
    """A file being written under a temporary name; :meth:`commit` gives it its final name.

    Used as a context manager: leaving the block without a commit deletes the temporary file.
    """

    def __init__(self, destination: Destination, name: str) -> None:
        self.destination = destination
        self.temp_name = f"{partial_prefix(name)}{uuid.uuid4().hex[:12]}"
        self.committed = False
        self._file: IO[bytes] | None = None
        destination.remove_stale_partials(name)
        with destination.errors("create a file in"):
            self._file = destination._open_write(self.temp_name)

    def write(self, chunk: bytes) -> None:
        with self.destination.errors("write to"):
            assert self._file is not None
            self._file.write(chunk)

    def restart(self) -> None:
        """Forget everything written so far."""
        with self.destination.errors("write to"):
            self._close()
            self._file = self.destination._open_write(self.temp_name, exclusive=False)

    def commit(self, name: str, *, overwrite: bool) -> bool:
        """Give the complete file its final name; False when ``name`` exists and may not be replaced."""
        with self.destination.errors("write to"):
            self._close(sync=True)
            stored = self.destination._rename(self.temp_name, name, overwrite=overwrite)
        self.committed = stored
        return stored

    def discard(self) -> None:
        try:
            self._close()
        except Exception as error:
            # The file is incomplete and deleted below anyway.
            log.debug("Closing the temporary file %s failed: %s", self.temp_name, error)
        self.destination._remove_quietly(self.temp_name)

    def _close(self, *, sync: bool = False) -> None:
        handle, self._file = self._file, None
        if handle is not None:
            self.destination._close(handle, sync=sync)

    def __enter__(self) -> PartialFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if not self.committed:
            self.discard()


class Destination:
    """A directory that outputs are stored in."""

    #: How messages name the destination, as the user wrote it (no secrets in storage URIs).
    display: str

    def prepare(self) -> None:
        """Make sure the directory exists and can be written; raises naming it otherwise."""
        raise NotImplementedError

    def uri(self, name: str) -> str:
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        """Whether ``name`` exists (a symbolic link counts, whatever it points to)."""
        raise NotImplementedError

    def is_link(self, name: str) -> bool:
        """Whether ``name`` is a symbolic link, which is never followed."""
        return False

    def remove_stale_partials(self, name: str) -> None:
        """Remove the temporary files of ``name`` that an earlier, killed try left behind."""
        prefix = partial_prefix(name)
        try:
            stale = [
                entry
                for entry in self._names_starting(prefix)
                if _PARTIAL_ID.fullmatch(entry.removeprefix(prefix))
            ]
        except Exception as error:  # cleaning up must never fail a download
            log.debug("Could not list %s for leftover temporary files: %s", self.display, error)
            return
        for entry in stale:
            self._remove_quietly(entry)
        if stale:
            log.info("Removed %d temporary file(s) an interrupted try left in %s", len(stale), self.display)

    def _names_starting(self, prefix: str) -> list[str]:
        raise NotImplementedError

    def read_bytes(self, name: str, limit: int) -> bytes | None:
        """At most ``limit`` bytes of a file, None when it does not exist."""
        try:
            with self._open_read(name) as handle:
                return handle.read(limit)
        except FileNotFoundError:
            return None

    def iter_chunks(self, name: str) -> Iterator[bytes]:
        with self._open_read(name) as handle:
            while chunk := handle.read(READ_CHUNK_SIZE):
                yield chunk

    def open_read(self, name: str) -> IO[bytes]:
        """A stored file, opened for reading (seekable)."""
        return self._open_read(name)

    def remove(self, name: str) -> None:
        """Remove a stored file if it exists; a failure to do so is logged, not raised."""
        self._remove_quietly(name)

    def partial(self, name: str) -> PartialFile:
        """A new temporary file, to be committed under ``name`` (or another name) once complete."""
        return PartialFile(self, name)

    def write_bytes(self, name: str, data: bytes) -> None:
        """Store a small file atomically, replacing any file of that name."""
        with self.partial(name) as partial:
            partial.write(data)
            partial.commit(name, overwrite=True)

    def errors(self, action: str) -> _StorageErrors:
        return _StorageErrors(self.display, action)

    def _open_read(self, name: str) -> IO[bytes]:
        raise NotImplementedError

    def _open_write(self, name: str, *, exclusive: bool = True) -> IO[bytes]:
        """Open ``name`` for writing; ``exclusive`` when it must not exist yet."""
        raise NotImplementedError

    def _close(self, handle: IO[bytes], *, sync: bool) -> None:
        handle.close()

    def _rename(self, source: str, target: str, *, overwrite: bool) -> bool:
        raise NotImplementedError

    def _remove_quietly(self, name: str) -> None:
        raise NotImplementedError


class _StorageErrors:
    """Turns storage failures into a DreaminaDownloadError that names the destination."""

    def __init__(self, display: str, action: str) -> None:
        self.display = display
        self.action = action

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if error is None or isinstance(error, DreaminaError) or not isinstance(error, Exception):
            return
        if isinstance(error, OSError) and error.errno in _FULL_ERRNOS:
            raise DreaminaDestinationFullError(
                f"destination {self.display} is full (or the file is too large for it): could not "
                f"{self.action} it ({error.strerror or type(error).__name__}); nothing incomplete was kept. "
                "Free some space, then run the task again"
            ) from error
        detail = str(error) or type(error).__name__
        verb = "read" if self.action == "read" else "written"
        raise DreaminaDownloadError(
            f"destination {self.display} cannot be {verb}: could not {self.action} it ({detail})",
        ) from error


class LocalDestination(Destination):
    """A directory on this machine: temporary file in the same directory, then ``os.replace``."""

    def __init__(self, directory: Path, display: str) -> None:
        self.directory = directory
        self.display = display

    def prepare(self) -> None:
        with self.errors("create"):
            self.directory.mkdir(parents=True, exist_ok=True)
            if not self.directory.is_dir():
                raise NotADirectoryError(f"{self.directory} is not a directory")

    def uri(self, name: str) -> str:
        return (self.directory / name).as_uri()

    def exists(self, name: str) -> bool:
        return os.path.lexists(self.directory / name)

    def is_link(self, name: str) -> bool:
        return os.path.islink(self.directory / name)

    def _names_starting(self, prefix: str) -> list[str]:
        with os.scandir(self.directory) as entries:
            return [entry.name for entry in entries if entry.name.startswith(prefix)]

    def _open_read(self, name: str) -> IO[bytes]:
        # Never through a symlink, never a FIFO or a device: only the regular file of that name.
        descriptor = os.open(self.directory / name, _READ_FLAGS)
        try:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                raise OSError(errno.EINVAL, "not a regular file", name)
            return os.fdopen(descriptor, "rb")
        except BaseException:
            os.close(descriptor)
            raise

    def _open_write(self, name: str, *, exclusive: bool = True) -> IO[bytes]:
        return (self.directory / name).open("xb" if exclusive else "wb")

    def write_bytes(self, name: str, data: bytes) -> None:
        self.remove_stale_partials(name)
        with self.errors("write to"):
            write_atomically(self.directory / name, data, temporary_prefix=partial_prefix(name))

    def _close(self, handle: IO[bytes], *, sync: bool) -> None:
        if sync:
            # On disk before the rename, so a crash cannot leave a complete name with missing bytes.
            handle.flush()
            os.fsync(handle.fileno())
        handle.close()

    def _rename(self, source: str, target: str, *, overwrite: bool) -> bool:
        source_path, target_path = self.directory / source, self.directory / target
        if overwrite:
            os.replace(source_path, target_path)
            return True
        try:
            # A hard link never replaces an existing file: no window between the check and the write.
            os.link(source_path, target_path)
        except FileExistsError:
            return False
        except OSError:
            if target_path.exists():
                return False
            os.replace(source_path, target_path)
            return True
        source_path.unlink()
        return True

    def _remove_quietly(self, name: str) -> None:
        try:
            (self.directory / name).unlink(missing_ok=True)
        except OSError as error:
            log.warning("Could not remove the temporary file %s from %s: %s", name, self.display, error)


class StoreDestination(Destination):
    """A directory on an object store or remote filesystem, reached through ``ObjectStoragePath``."""

    # Object stores have no directories; creating one could even create a bucket.
    _OBJECT_STORES = frozenset(
        {"s3", "s3a", "s3n", "gs", "gcs", "abfs", "abfss", "az", "adl", "oss", "memory"}
    )

    def __init__(self, path: ObjectStoragePath, display: str) -> None:
        self.path = path
        self.display = display
        self.fs: AbstractFileSystem = path.fs

    def prepare(self) -> None:
        if self.path.protocol not in self._OBJECT_STORES:
            with self.errors("create"):
                self.fs.makedirs(self.path.path, exist_ok=True)
        # Writing a tiny probe now fails early, instead of after a long download.
        probe = f".dreamina-write-probe-{uuid.uuid4().hex[:12]}"
        with self.errors("create a file in"), self._open_write(probe) as handle:
            handle.write(b"")
        self._remove_quietly(probe)

    def _key(self, name: str) -> str:
        return f"{self.path.path.rstrip('/')}/{name}"

    def uri(self, name: str) -> str:
        # Without the connection id that str(ObjectStoragePath) puts in the authority.
        return f"{self.path.protocol}://{self._key(name).lstrip('/')}"

    def exists(self, name: str) -> bool:
        with self.errors("read"):
            return bool(self.fs.exists(self._key(name)))

    def _names_starting(self, prefix: str) -> list[str]:
        listing = self.fs.ls(self.path.path.rstrip("/") or "/", detail=False)
        names = (str(entry).rstrip("/").rsplit("/", 1)[-1] for entry in listing)
        return [name for name in names if name.startswith(prefix)]

    def _open_read(self, name: str) -> IO[bytes]:
        handle: IO[bytes] = self.fs.open(self._key(name), "rb")
        return handle

    def _open_write(self, name: str, *, exclusive: bool = True) -> IO[bytes]:
        # Temporary names are unique; object stores offer no portable "create only" anyway.
        handle: IO[bytes] = self.fs.open(self._key(name), "wb")
        return handle

    def _rename(self, source: str, target: str, *, overwrite: bool) -> bool:
        if not overwrite and self.fs.exists(self._key(target)):
            self._remove_quietly(source)
            return False
        self.fs.mv(self._key(source), self._key(target))
        return True

    def _remove_quietly(self, name: str) -> None:
        try:
            self.fs.rm_file(self._key(name))
        except FileNotFoundError:
            pass
        except Exception as error:  # the error that led here matters more
            log.warning("Could not remove the temporary file %s from %s: %s", name, self.display, error)


def open_destination(destination: str, conn_id: str | None = None) -> Destination:
    """The destination for a local path, ``file://`` URI or any ``ObjectStoragePath`` URI."""
    text = str(destination).strip()
    if not text:
        raise DreaminaDownloadError("destination is empty: give a directory path or a storage URI")
    try:
        location = locate(text)
    except NotOnThisMachine as error:
        raise DreaminaDownloadError(f"destination {error}") from None
    if location.path is not None and conn_id is None:
        # The real directory (a symlinked /data or macOS's /tmp resolved): what is recorded is
        # where the files are, and the gallery never follows a symbolic link to serve one.
        return LocalDestination(location.path.resolve(), text)
    from airflow.sdk import ObjectStoragePath

    try:
        path = ObjectStoragePath(text, conn_id=conn_id)
        path.fs  # noqa: B018 - resolves the filesystem now, to fail with a clear message
    except ValueError as error:
        raise DreaminaDownloadError(
            f"destination {text} cannot be written: {error}; install the Airflow provider for "
            f"'{location.scheme}://' (for example apache-airflow-providers-amazon[s3fs] for s3://) or attach "
            "a filesystem with airflow.sdk.io.attach"
        ) from None
    except Exception as error:
        raise DreaminaDownloadError(f"destination {text} cannot be opened: {error}") from error
    return StoreDestination(path, text)
