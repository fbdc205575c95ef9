"""Output hosts are untrusted: a download is bounded in time and size, stores bytes as sent, never
follows a symlink it finds, cleans up after a killed try, and retries when the disk is full."""

from __future__ import annotations

import errno
import inspect
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_dreamina.defaults import DEFAULT_MAX_BYTES
from airflow_provider_dreamina.emulator import EmulatorHandle
from airflow_provider_dreamina.exceptions import (
    DreaminaDestinationFullError,
    DreaminaDownloadError,
    DreaminaDownloadInterruptedError,
)
from airflow_provider_dreamina.hooks.dreamina import DreaminaHook
from airflow_provider_dreamina.operators.download import DreaminaDownloadOperator
from airflow_provider_dreamina.outputs.destinations import LocalDestination
from tests.bounds import bounded, gzip_bomb_ready
from tests.hostile_server import HostileServer, hostile_server
from tests.operators.test_download import (
    BytesSink,
    make_operator,
    names,
    output_bytes,
    run,
    sha256,
    submit_finished,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def server(emulator: EmulatorHandle) -> Iterator[HostileServer]:
    gzip_bomb_ready()
    with hostile_server() as running:
        yield running


def test_a_dripping_output_stops_at_the_download_deadline(server: HostileServer) -> None:
    url = server.answer("/out/video.mp4", "drip", body={"pad": "x" * 100})
    sink = BytesSink()
    hook = DreaminaHook(retry_backoff=0.01, max_retry_wait=0.1)
    with (
        bounded(deadline=2),
        pytest.raises(DreaminaDownloadInterruptedError, match="deadline of 2 s") as caught,
    ):
        hook.download_output(url, sink, deadline=2)
    assert caught.value.retryable


def test_the_download_deadline_comes_from_the_connection(
    emulator: EmulatorHandle, server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DREAMINA_DEFAULT", emulator.connection_json(download_deadline=2))
    url = server.answer("/out/video.mp4", "drip")
    with bounded(deadline=2), pytest.raises(DreaminaDownloadInterruptedError, match="download_deadline"):
        DreaminaHook(retry_backoff=0.01).download_output(url, BytesSink())


def test_a_compressed_output_is_refused_not_decoded(server: HostileServer) -> None:
    url = server.answer("/out/video.mp4", "gzip", headers={"Content-Type": "video/mp4"})
    sink = BytesSink()
    with bounded(), pytest.raises(DreaminaDownloadError, match="compressed") as caught:
        DreaminaHook().download_output(url, sink, max_bytes=10 * 1024 * 1024)
    assert not caught.value.retryable
    assert len(sink.data) == 0


def test_outputs_are_capped_at_two_gib_unless_told_otherwise() -> None:
    assert DEFAULT_MAX_BYTES == 2 * 1024**3
    assert (
        DreaminaDownloadOperator(task_id="d", request_id="r", destination="/tmp").max_bytes
        == DEFAULT_MAX_BYTES
    )
    download = inspect.signature(DreaminaHook.download_output).parameters["max_bytes"]
    assert download.default == DEFAULT_MAX_BYTES
    unlimited = DreaminaDownloadOperator(task_id="d", request_id="r", destination="/tmp", max_bytes=None)
    assert unlimited.max_bytes is None


def test_a_killed_try_leaves_nothing_behind_for_good(emulator: EmulatorHandle, tmp_path: Path) -> None:
    """SIGKILL cannot clean up; the next try of the same output removes what it left."""
    request_id = submit_finished(emulator)
    stale = [f".{request_id}.mp4.partial-0123456789ab", f".{request_id}.mp4.json.partial-ba9876543210"]
    unrelated = [".other.mp4.partial-0123456789ab", f".{request_id}.mp4.partial-not-ours", "keep.txt"]
    for name in stale + unrelated:
        (tmp_path / name).write_bytes(b"half a video")
    (uri,) = run(make_operator(request_id=request_id, destination=str(tmp_path)))
    assert names(tmp_path) == sorted([f"{request_id}.mp4", f"{request_id}.mp4.json", *unrelated])
    assert Path(uri.removeprefix("file://")).read_bytes() == output_bytes(request_id)


def test_skip_never_follows_a_symlink(emulator: EmulatorHandle, tmp_path: Path) -> None:
    request_id = submit_finished(emulator)
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.bin"
    secret.write_bytes(b"not yours to hash")
    destination = tmp_path / "videos"
    destination.mkdir()
    (destination / f"{request_id}.mp4").symlink_to(secret)
    operator = make_operator(request_id=request_id, destination=str(destination), if_exists="skip")
    with pytest.raises(Exception, match="symbolic link") as caught:
        run(operator)
    assert sha256(secret.read_bytes()) not in str(caught.value)
    assert secret.read_bytes() == b"not yours to hash"


def test_skip_never_reads_a_symlinked_manifest(emulator: EmulatorHandle, tmp_path: Path) -> None:
    request_id = submit_finished(emulator)
    (tmp_path / f"{request_id}.mp4").write_bytes(b"already here")
    forged = tmp_path.parent / f"forged-{request_id}.json"
    forged.write_text(json.dumps({"sha256": "f" * 64, "bytes": 1}))
    (tmp_path / f"{request_id}.mp4.json").symlink_to(forged)
    with pytest.raises(Exception, match="cannot be read"):
        run(make_operator(request_id=request_id, destination=str(tmp_path), if_exists="skip"))


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG])
def test_a_full_disk_is_retryable_and_leaves_no_partial_file(
    emulator: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    request_id = submit_finished(emulator)
    real_open = LocalDestination._open_write

    def open_write(self: LocalDestination, name: str, *, exclusive: bool = True) -> Any:
        handle = real_open(self, name, exclusive=exclusive)
        if ".mp4.partial-" in name and not name.endswith(".json"):

            def full(chunk: bytes) -> int:
                raise OSError(code, os.strerror(code))

            handle.write = full
        return handle

    monkeypatch.setattr(LocalDestination, "_open_write", open_write)
    with pytest.raises(DreaminaDestinationFullError) as caught:
        run(make_operator(request_id=request_id, destination=str(tmp_path)))
    assert caught.value.retryable  # re-raised as is: Airflow retries the task
    assert isinstance(caught.value, DreaminaDownloadError)
    assert os.strerror(code) in str(caught.value)
    assert names(tmp_path) == []


@pytest.mark.usefixtures("memory_storage")
def test_a_killed_try_leaves_nothing_behind_on_an_object_store(emulator: EmulatorHandle) -> None:
    from airflow.sdk import ObjectStoragePath

    request_id = submit_finished(emulator)
    folder = ObjectStoragePath("memory://bucket/videos")
    folder.mkdir(parents=True, exist_ok=True)
    stale = folder / f".{request_id}.mp4.partial-0123456789ab"
    stale.write_bytes(b"half a video")
    run(make_operator(request_id=request_id, destination="memory://bucket/videos"))
    assert sorted(path.name for path in folder.iterdir()) == [f"{request_id}.mp4", f"{request_id}.mp4.json"]
