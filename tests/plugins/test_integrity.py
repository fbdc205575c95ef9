"""A stored file is hashed before it is first served, and again only when it changes."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Hashable
from pathlib import Path

import pytest

from airflow_provider_dreamina.plugins import files, streaming
from airflow_provider_dreamina.plugins.files import StoredFile, StoredFileChanged, open_stored
from airflow_provider_dreamina.plugins.integrity import NotAsRecorded, VerifiedDigests
from tests.plugins.gallery_records import next_tick

DATA = bytes(range(256)) * 4096  # 1 MiB: four chunks of an answer


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files count as settled at once (they were written moments ago by the test)."""
    monkeypatch.setattr(files, "SETTLE_NS", 0)


def write(path: Path, data: bytes = DATA) -> str:
    path.write_bytes(data)
    return path.as_uri()


def verify(digests: VerifiedDigests, uri: str, data: bytes = DATA) -> None:
    with open_stored(uri) as stored:
        digests.verify(stored, sha256=hashlib.sha256(data).hexdigest(), size=len(data))


@pytest.mark.usefixtures("settled")
def test_a_file_is_hashed_once_and_again_whenever_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "a.mp4"
    uri = write(path)
    digests = VerifiedDigests()
    verify(digests, uri)
    verify(digests, uri)
    assert digests.hashed == 1
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # a new mtime
    verify(digests, uri)
    assert digests.hashed == 2
    next_tick(path)
    os.chmod(path, 0o600)  # only the ctime moves
    verify(digests, uri)
    assert digests.hashed == 3
    write(tmp_path / "b.mp4")
    os.replace(tmp_path / "b.mp4", path)  # the same bytes, another inode
    verify(digests, uri)
    verify(digests, uri)
    assert digests.hashed == 4


def test_a_file_changed_moments_ago_is_hashed_on_every_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Within a tick of the file system's clock a second write leaves every time stamp as it was.
    monkeypatch.setattr(files, "SETTLE_NS", 10**18)
    uri = write(tmp_path / "a.mp4")
    digests = VerifiedDigests()
    for _ in range(3):
        verify(digests, uri)
    assert (digests.hashed, len(digests)) == (3, 0)


@pytest.mark.usefixtures("settled")
def test_other_bytes_are_refused_and_remembered_as_such(tmp_path: Path) -> None:
    uri = write(tmp_path / "a.mp4")
    digests = VerifiedDigests()
    for _ in range(2):
        with pytest.raises(NotAsRecorded, match="SHA-256"):
            verify(digests, uri, bytes(reversed(DATA)))
    assert digests.hashed == 1  # asking again costs no second hash of a known file
    with pytest.raises(NotAsRecorded, match="bytes"):
        verify(digests, uri, DATA + b"x")
    assert digests.hashed == 1  # the size alone refuses it
    verify(digests, uri)  # and the recorded digest still holds


@pytest.mark.usefixtures("settled")
def test_the_memory_is_bounded(tmp_path: Path) -> None:
    digests = VerifiedDigests(capacity=3)
    uris = [write(tmp_path / f"{index}.mp4") for index in range(5)]
    for uri in uris:
        verify(digests, uri)
    assert (len(digests), digests.hashed) == (3, 5)
    verify(digests, uris[-1])
    assert digests.hashed == 5
    verify(digests, uris[0])  # forgotten first
    assert digests.hashed == 6


class SlowFile(StoredFile):
    """A file whose first read waits until every asker has begun to verify it."""

    def __init__(self, askers: int, arrived: list[int], everyone: threading.Event) -> None:
        super().__init__("memory://slow.mp4", len(DATA))
        self._askers, self._arrived, self._everyone = askers, arrived, everyone

    @property
    def identity(self) -> Hashable:
        self._arrived.append(1)
        if len(self._arrived) >= self._askers:
            self._everyone.set()
        return ("memory://slow.mp4", len(DATA), "etag-1")

    @property
    def settled(self) -> bool:
        return True

    def read_at(self, offset: int, length: int) -> bytes:
        assert self._everyone.wait(timeout=60)
        return DATA[offset : offset + length]

    def check_unchanged(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_players_asking_at_once_cost_one_hash() -> None:
    digests = VerifiedDigests()
    askers, arrived, everyone = 8, [], threading.Event()
    failures: list[BaseException] = []

    def ask() -> None:
        try:
            digests.verify(
                SlowFile(askers, arrived, everyone), sha256=hashlib.sha256(DATA).hexdigest(), size=len(DATA)
            )
        except BaseException as error:  # pragma: no cover - reported below
            failures.append(error)

    threads = [threading.Thread(target=ask) for _ in range(askers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert digests.hashed == 1


@pytest.mark.usefixtures("settled")
def test_a_file_rewritten_while_it_is_sent_stops_the_answer(tmp_path: Path) -> None:
    path = tmp_path / "a.mp4"
    uri = write(path)
    stored = open_stored(uri)
    VerifiedDigests().verify(stored, sha256=hashlib.sha256(DATA).hexdigest(), size=len(DATA))
    body = streaming._chunks(stored, 0, len(DATA))
    first = next(body)
    assert first == DATA[: len(first)]
    next_tick(path)
    with path.open("r+b") as rewrite:  # in place: same inode, same size
        rewrite.write(b"\xee" * len(DATA))
    rest = b"".join(body)
    assert rest == b""  # nothing read after the change was sent
    assert stored._handle.closed  # type: ignore[attr-defined]  # and the file is closed


@pytest.mark.usefixtures("settled")
def test_a_file_rewritten_while_it_is_hashed_is_not_remembered(tmp_path: Path) -> None:
    path = tmp_path / "a.mp4"
    uri = write(path)
    digests = VerifiedDigests()

    with open_stored(uri) as stored:
        original = stored.read_at
        calls = []

        def read_then_rewrite(offset: int, length: int) -> bytes:
            chunk = original(offset, length)
            if not calls:
                next_tick(path)
                with path.open("r+b") as rewrite:
                    rewrite.write(b"\xee")
            calls.append(offset)
            return chunk

        stored.read_at = read_then_rewrite  # type: ignore[method-assign]
        with pytest.raises(StoredFileChanged):
            digests.verify(stored, sha256=hashlib.sha256(DATA).hexdigest(), size=len(DATA))
    assert len(digests) == 0
