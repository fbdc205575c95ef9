"""Whether a stored file still holds the bytes its record names: checked before it is served.

The asset event names each video's size and SHA-256. Before a video is first served, its size is
compared and its SHA-256 computed, from the very file object that is then served, and compared
with the record; a file that differs is never served. The digest is remembered under the file's
identity (:attr:`files.StoredFile.identity`: path, device, inode, size, mtime and ctime of a local
file; URI, size and the store's ETag, version or time stamps of an object), so a file is hashed
once, and again as soon as any of those change. Rewriting a file changes its ctime, which nobody
can set back; a file changed within the last seconds is hashed on every serve until it settles,
since a second write within the same tick of the file system's clock would leave its time stamps
as they were. An object whose store offers no identity is hashed on every serve.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Hashable

from airflow_provider_dreamina.plugins.files import StoredFile

#: Digests remembered; each entry is a few hundred bytes.
CAPACITY = 4096
_READ_BYTES = 1024 * 1024


class NotAsRecorded(Exception):
    """The stored file's size or SHA-256 is not the one its record names."""


class VerifiedDigests:
    """The SHA-256 of stored files as last computed, keyed on each file's identity (bounded, LRU)."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        #: How many files were hashed (for tests and benchmarks: a remembered digest costs none).
        self.hashed = 0
        self._digests: OrderedDict[Hashable, str] = OrderedDict()
        self._lock = threading.Lock()
        self._hashing: dict[Hashable, threading.Lock] = {}

    def __len__(self) -> int:
        return len(self._digests)

    def clear(self) -> None:
        with self._lock:
            self._digests.clear()

    def verify(self, stored: StoredFile, *, sha256: str, size: int) -> None:
        """Return when ``stored`` holds exactly the recorded bytes; raise otherwise.

        :raises NotAsRecorded: another size or another SHA-256.
        :raises files.StoredFileChanged: the file changed while it was being hashed.
        """
        if stored.size != size:
            raise NotAsRecorded(f"it has {stored.size} bytes where the record says {size}")
        if self._digest_of(stored) != sha256.lower():
            raise NotAsRecorded("its SHA-256 is not the one recorded")

    def _remembered(self, identity: Hashable) -> str | None:
        with self._lock:
            digest = self._digests.get(identity)
            if digest is not None:
                self._digests.move_to_end(identity)
            return digest

    def _digest_of(self, stored: StoredFile) -> str:
        identity = stored.identity
        if identity is None:
            return self._hash(stored)
        remembered = self._remembered(identity)
        if remembered is not None:
            return remembered
        # One hash per file however many players ask for it at once: the others wait for it.
        with self._lock:
            hashing = self._hashing.setdefault(identity, threading.Lock())
        try:
            with hashing:
                remembered = self._remembered(identity)
                if remembered is not None:
                    return remembered
                digest = self._hash(stored)
                if stored.settled:
                    with self._lock:
                        self._digests[identity] = digest
                        while len(self._digests) > self.capacity:
                            self._digests.popitem(last=False)
                return digest
        finally:
            with self._lock:
                self._hashing.pop(identity, None)

    def _hash(self, stored: StoredFile) -> str:
        with self._lock:
            self.hashed += 1
        digest = hashlib.sha256()
        offset = 0
        while offset < stored.size:
            chunk = stored.read_at(offset, min(_READ_BYTES, stored.size - offset))
            if not chunk:
                break
            digest.update(chunk)
            offset += len(chunk)
        # Read whole and unchanged meanwhile: the digest is the file's, not a mix of two files.
        stored.check_unchanged()
        if offset != stored.size or stored.read_at(offset, 1):
            raise NotAsRecorded("it is not as long as it was when it was opened")
        return digest.hexdigest()


#: The gallery's one memory of verified files, shared by every request of the API server process.
verified = VerifiedDigests()
