"""The gallery serves only what was recorded: the bytes whose SHA-256 and size the event names.

Replayed from an outside review, with files the tests did not write (``/etc/passwd``, the test
module itself): a recorded video swapped for a symlink, a symlinked directory, a same-size
replacement, an event without ``bytes``/``sha256``, a FIFO, a symlinked manifest or poster.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from airflow_provider_dreamina.plugins import files, integrity, records
from tests.plugins.conftest import FakeCatalog
from tests.plugins.gallery_records import VIDEO, event, next_tick, store_video

PASSWD = Path("/etc/passwd")
SOME_CONFIG = Path(__file__)  # a file nobody wrote for these tests


def same_size_copy_of(source: Path, size: int, target: Path) -> Path:
    """A file of exactly ``size`` bytes made of ``source``'s bytes (repeated), not the video's."""
    data = source.read_bytes()
    target.write_bytes((data * (size // len(data) + 1))[:size])
    return target


def assert_not_served(answer: Any, *forbidden: bytes) -> None:
    assert answer.status_code in (404, 409, 410), (answer.status_code, answer.content[:200])
    for body in forbidden:
        assert body[:64] not in answer.content


def test_a_video_replaced_by_a_symlink_to_a_same_size_file_is_not_served(
    served: TestClient, fake: FakeCatalog, tmp_path: Path
) -> None:
    videos = tmp_path / "videos"
    fake.events.append(event(1, "req-1", [store_video(videos, "req-1")]))
    assert served.get("/media/1/0/video").status_code == 200
    elsewhere = same_size_copy_of(SOME_CONFIG, len(VIDEO), tmp_path / "config.py")
    stored = videos / "req-1.mp4"
    stored.unlink()
    stored.symlink_to(elsewhere)
    records.details_cache.clear()
    for headers in ({}, {"Range": "bytes=0-"}, {"Range": "bytes=100-199"}):
        assert_not_served(served.get("/media/1/0/video", headers=headers), elsewhere.read_bytes())
    assert_not_served(served.head("/media/1/0/video"))


@pytest.mark.parametrize("settled", [False, True], ids=["just written", "digest remembered"])
def test_a_recorded_video_replaced_by_other_bytes_of_the_same_size_is_never_served(
    served: TestClient, fake: FakeCatalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settled: bool
) -> None:
    if settled:  # the first serve's digest is remembered, as it is for any video older than 2 s
        monkeypatch.setattr(files, "SETTLE_NS", 0)
    fake.events.append(event(1, "req-1", [store_video(tmp_path, "req-1")]))
    hashed = integrity.verified.hashed
    assert served.get("/media/1/0/video").content == VIDEO  # served (and verified) once
    assert served.get("/media/1/0/video").content == VIDEO
    assert integrity.verified.hashed - hashed == (1 if settled else 2)
    os.link(tmp_path / "req-1.mp4", tmp_path / "kept")
    replacement = same_size_copy_of(SOME_CONFIG, len(VIDEO), tmp_path / "replacement")
    os.replace(replacement, tmp_path / "req-1.mp4")  # a new file (new inode) under the old name
    for headers in ({}, {"Range": "bytes=0-99"}, {"Range": "bytes=-100"}):
        answer = served.get("/media/1/0/video", headers=headers)
        assert answer.status_code == 409, answer.status_code
        assert_not_served(answer, SOME_CONFIG.read_bytes())
    # Rewritten in place (same inode), its time stamp put back: still refused.
    os.replace(tmp_path / "kept", tmp_path / "req-1.mp4")
    assert served.get("/media/1/0/video").content == VIDEO
    stat = (tmp_path / "req-1.mp4").stat()
    next_tick(tmp_path / "req-1.mp4")
    (tmp_path / "req-1.mp4").write_bytes(bytes(reversed(VIDEO)))
    os.utime(tmp_path / "req-1.mp4", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert served.get("/media/1/0/video").status_code == 409


def test_a_symlinked_directory_does_not_lead_elsewhere(
    served: TestClient, fake: FakeCatalog, tmp_path: Path
) -> None:
    recorded = tmp_path / "videos" / "day"
    fake.events.append(event(1, "req-1", [store_video(recorded, "req-1")]))
    assert served.get("/media/1/0/video").status_code == 200
    # The recorded directory moves away and a symlink to a look-alike takes its place: every byte
    # of the record (manifest, name) is there, only the video is someone else's.
    original = tmp_path / "moved"
    recorded.rename(original)
    look_alike = tmp_path / "look-alike"
    shutil.copytree(original, look_alike)
    same_size_copy_of(SOME_CONFIG, len(VIDEO), look_alike / "req-1.mp4")
    recorded.symlink_to(look_alike, target_is_directory=True)
    records.details_cache.clear()
    assert_not_served(served.get("/media/1/0/video"), SOME_CONFIG.read_bytes())
    # Even the recorded bytes are not read through a symlinked directory.
    recorded.unlink()
    recorded.symlink_to(original, target_is_directory=True)
    records.details_cache.clear()
    assert_not_served(served.get("/media/1/0/video"), VIDEO)
    listed = served.get("/api/generations").json()["generations"]
    assert [(card["playable"], card["video_url"]) for card in listed] == [(False, None)]
    assert "symbolic link" in listed[0]["problem"]


def test_an_event_without_bytes_and_sha256_is_not_playable(
    served: TestClient, fake: FakeCatalog, tmp_path: Path
) -> None:
    # The review's case: the event names a symlink to /etc/passwd, the manifest beside it vouches
    # for /etc/passwd's own size and digest, and the event itself records neither.
    passwd = PASSWD.read_bytes()
    link = tmp_path / "req-1.mp4"
    link.symlink_to(PASSWD)
    (tmp_path / "req-1.mp4.json").write_text(
        json.dumps(
            {
                "request_id": "req-1",
                "stored_uri": link.as_uri(),
                "bytes": len(passwd),
                "sha256": hashlib.sha256(passwd).hexdigest(),
            }
        )
    )
    fake.events.append(event(1, "req-1", [{"uri": link.as_uri(), "content_type": "video/mp4"}]))
    for path in ("/media/1/0/video", "/media/1/0/poster", "/requests/req-1/video"):
        answer = served.get(path)
        assert answer.status_code in (404, 409), (path, answer.status_code)
        assert b"root:" not in answer.content
    (card,) = served.get("/api/generations").json()["generations"]
    assert (card["playable"], card["video_url"]) == (False, None)
    assert "records no size and SHA-256" in card["problem"]
    assert "records no size and SHA-256" in served.get("/").text  # the reason is on the card


@pytest.mark.parametrize(
    "output",
    [
        {"bytes": None},
        {"sha256": None},
        {"sha256": "not-a-digest"},
        {"sha256": "A" * 63},
        {"bytes": -1},
        {"bytes": "1024"},
        {"bytes": True},
    ],
)
def test_an_event_whose_bytes_or_sha256_do_not_hold_is_not_playable(
    served: TestClient, fake: FakeCatalog, tmp_path: Path, output: dict[str, Any]
) -> None:
    recorded = {**store_video(tmp_path, "req-1"), **output}
    fake.events.append(event(1, "req-1", [recorded]))
    (card,) = served.get("/api/generations").json()["generations"]
    assert not card["playable"] and card["problem"]
    assert_not_served(served.get("/media/1/0/video"), VIDEO)


def test_an_uppercase_digest_is_the_same_digest(
    served: TestClient, fake: FakeCatalog, tmp_path: Path
) -> None:
    recorded = store_video(tmp_path, "req-1")
    fake.events.append(event(1, "req-1", [{**recorded, "sha256": recorded["sha256"].upper()}]))
    assert served.get("/media/1/0/video").content == VIDEO


@pytest.mark.timeout(60)
def test_a_fifo_or_a_directory_in_place_of_the_video_is_never_opened(
    served: TestClient, fake: FakeCatalog, tmp_path: Path
) -> None:
    fake.events.append(event(1, "req-1", [store_video(tmp_path, "req-1")]))
    stored = tmp_path / "req-1.mp4"
    stored.unlink()
    os.mkfifo(stored)  # opening it for reading would block until a writer came
    assert_not_served(served.get("/media/1/0/video"))
    stored.unlink()
    stored.mkdir()
    assert_not_served(served.get("/media/1/0/video"))


def test_a_symlinked_manifest_vouches_for_nothing(
    served: TestClient, fake: FakeCatalog, tmp_path: Path
) -> None:
    fake.events.append(event(1, "req-1", [store_video(tmp_path / "a", "req-1")]))
    manifest = tmp_path / "a" / "req-1.mp4.json"
    kept = tmp_path / "kept.json"
    manifest.rename(kept)
    manifest.symlink_to(kept)
    (card,) = served.get("/api/generations").json()["generations"]
    assert not card["playable"] and "symbolic link" in card["problem"]
    assert_not_served(served.get("/media/1/0/video"), VIDEO)


def test_a_symlinked_poster_is_not_served(served: TestClient, fake: FakeCatalog, tmp_path: Path) -> None:
    picture = b"\xff\xd8\xff\xe0 a private picture"
    fake.events.append(event(1, "req-1", [store_video(tmp_path / "v", "req-1", poster=picture)]))
    private = tmp_path / "private.jpg"
    private.write_bytes(picture)  # even the very bytes recorded are not served through a link
    (tmp_path / "v" / "req-1.jpg").unlink()
    (tmp_path / "v" / "req-1.jpg").symlink_to(private)
    answer = served.get("/media/1/0/poster")
    assert answer.status_code in (404, 409) and b"private picture" not in answer.content
    (tmp_path / "v" / "req-1.jpg").unlink()
    (tmp_path / "v" / "req-1.jpg").write_bytes(picture)
    records.details_cache.clear()
    assert served.get("/media/1/0/poster").content == picture


def test_a_poster_is_served_only_while_its_bytes_are_the_recorded_ones(
    served: TestClient, fake: FakeCatalog, tmp_path: Path
) -> None:
    poster = b"\xff\xd8\xff\xe0 the poster"
    fake.events.append(event(1, "req-1", [store_video(tmp_path, "req-1", poster=poster)]))
    assert served.get("/media/1/0/poster").status_code == 200
    next_tick(tmp_path / "req-1.jpg")
    (tmp_path / "req-1.jpg").write_bytes(b"\xff\xd8\xff\xe0 the paster")  # same size, other bytes
    answer = served.get("/media/1/0/poster")
    assert answer.status_code == 409 and b"paster" not in answer.content


def store_object(fake: FakeCatalog) -> Any:
    """``req-1.mp4`` and its manifest in fsspec's memory store, announced by event 1."""
    import fsspec

    store = fsspec.filesystem("memory")
    uri = "memory://gallery/videos/req-1.mp4"
    store.pipe_file("/gallery/videos/req-1.mp4", VIDEO)
    digest = hashlib.sha256(VIDEO).hexdigest()
    manifest = {"request_id": "req-1", "stored_uri": uri, "bytes": len(VIDEO), "sha256": digest}
    store.pipe_file("/gallery/videos/req-1.mp4.json", json.dumps(manifest).encode())
    recorded = {"uri": uri, "bytes": len(VIDEO), "sha256": digest, "content_type": "video/mp4"}
    fake.events.append(event(1, "req-1", [recorded]))
    return store


@pytest.mark.usefixtures("memory_storage")
def test_object_storage_serves_only_the_recorded_bytes(served: TestClient, fake: FakeCatalog) -> None:
    store = store_object(fake)
    hashed = integrity.verified.hashed
    assert served.get("/media/1/0/video").content == VIDEO
    part = served.get("/media/1/0/video", headers={"Range": "bytes=100-199"})
    assert (part.status_code, part.content) == (206, VIDEO[100:200])
    assert integrity.verified.hashed - hashed == 1  # remembered under the object's identity
    other = SOME_CONFIG.read_bytes()
    store.pipe_file("/gallery/videos/req-1.mp4", (other * (len(VIDEO) // len(other) + 1))[: len(VIDEO)])
    for headers in ({}, {"Range": "bytes=100-199"}):
        answer = served.get("/media/1/0/video", headers=headers)
        assert answer.status_code == 409
        assert_not_served(answer, other)
    store.pipe_file("/gallery/videos/req-1.mp4", VIDEO + b"longer")
    assert served.get("/media/1/0/video").status_code == 409


@pytest.mark.usefixtures("memory_storage")
def test_an_object_whose_store_reports_no_identity_is_hashed_on_every_serve(
    served: TestClient, fake: FakeCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files.ObjectFile, "IDENTITY_KEYS", ())
    store_object(fake)
    hashed = integrity.verified.hashed
    for _ in range(3):
        assert served.get("/media/1/0/video", headers={"Range": "bytes=0-9"}).content == VIDEO[:10]
    assert integrity.verified.hashed - hashed == 3
