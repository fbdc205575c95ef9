"""Every saved output is checked as what it claims to be: a body that is not a video is never stored."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_dreamina.emulator import EmulatorHandle
from airflow_provider_dreamina.exceptions import DreaminaInvalidVideoError
from tests.operators.download_server import OutputHost, output_host
from tests.operators.test_download import download_error, make_operator, names, run, submit_finished
from tests.video_samples import audio_only, encode


@pytest.fixture
def host(emulator: EmulatorHandle) -> Iterator[OutputHost]:
    with output_host() as running:
        yield running


def _refused(
    emulator: EmulatorHandle, host: OutputHost, tmp_path: Path, body: bytes, **behaviour: object
) -> str:
    host.behaviour.body = body
    for name, value in behaviour.items():
        setattr(host.behaviour, name, value)
    request_id = submit_finished(emulator, output_urls=[host.url()])
    error = download_error(make_operator(request_id=request_id, destination=str(tmp_path)))
    assert isinstance(error, DreaminaInvalidVideoError)
    assert error.retryable, "a CDN error page or a cut-short body is worth another try"
    assert names(tmp_path) == [], "nothing is stored, not even a temporary file"
    assert "s3cr3t-signature" not in str(error)
    return str(error)


def test_an_html_page_served_with_200_is_refused(
    emulator: EmulatorHandle, host: OutputHost, tmp_path: Path
) -> None:
    page = b"<!DOCTYPE html><html><body>Access denied</body></html>" * 20
    assert "HTML" in _refused(emulator, host, tmp_path, page, content_type="text/html")


def test_a_truncated_mp4_without_its_index_is_refused(
    emulator: EmulatorHandle, host: OutputHost, tmp_path: Path
) -> None:
    video = encode(24, movflags=None)  # the index at the end, then cut before it
    cut = video[: len(video) // 2]
    assert "cut short" in _refused(emulator, host, tmp_path, cut)


def test_an_mp4_without_a_video_track_is_refused(
    emulator: EmulatorHandle, host: OutputHost, tmp_path: Path
) -> None:
    assert "no video track" in _refused(emulator, host, tmp_path, audio_only())


@pytest.mark.parametrize("movflags", ["faststart", None], ids=["index-first", "index-last"])
def test_the_manifest_records_the_video_facts(
    emulator: EmulatorHandle, host: OutputHost, tmp_path: Path, movflags: str | None
) -> None:
    host.behaviour.body = encode(48, movflags=movflags)
    request_id = submit_finished(emulator, output_urls=[host.url()])
    asked = {"prompt": "p", "frames": 121}
    run(make_operator(request_id=request_id, destination=str(tmp_path), generation_input=asked))
    manifest = json.loads((tmp_path / f"{request_id}.mp4.json").read_text())
    assert manifest["video"] == {
        "duration_seconds": 2.0,
        "frames": 48,
        "fps": 24.0,
        "width": 96,
        "height": 64,
        "codec": "h264",
    }
    assert manifest["frames"] == 121  # what was asked for is kept beside what was made
    assert manifest["generation_seconds"] is not None and "duration_seconds" not in manifest


def test_decode_and_poster_from_an_emulator_render(emulator: EmulatorHandle, tmp_path: Path) -> None:
    pytest.importorskip("av", reason="needs the video extra (PyAV)")
    request_id = submit_finished(emulator)
    stored = run(
        make_operator(
            request_id=request_id,
            destination=str(tmp_path),
            generation_input={"prompt": "p", "frames": 121},
            verify="decode",
            poster=True,
        )
    )
    manifest = json.loads((tmp_path / f"{request_id}.mp4.json").read_text())
    assert manifest["video"]["frames"] == 121
    poster = tmp_path / f"{request_id}.jpg"
    assert poster.read_bytes()[:3] == b"\xff\xd8\xff"
    image = poster.read_bytes()
    assert manifest["poster"] == {
        "file_name": poster.name,
        "stored_uri": poster.as_uri(),
        "bytes": len(image),
        "sha256": hashlib.sha256(image).hexdigest(),
    }
    assert stored == [(tmp_path / f"{request_id}.mp4").as_uri()]


def test_a_video_that_does_not_decode_is_removed(
    emulator: EmulatorHandle, host: OutputHost, tmp_path: Path
) -> None:
    pytest.importorskip("av", reason="needs the video extra (PyAV)")
    from tests.helpers import mp4_body

    host.behaviour.body = mp4_body(20_000)  # a valid index over frames that are noise
    request_id = submit_finished(emulator, output_urls=[host.url()])
    error = download_error(make_operator(request_id=request_id, destination=str(tmp_path), verify="decode"))
    assert isinstance(error, DreaminaInvalidVideoError)
    assert [name for name in names(tmp_path) if name.endswith(".mp4")] == []


def test_verify_is_checked_when_the_dag_is_parsed() -> None:
    with pytest.raises(ValueError, match="verify"):
        make_operator(request_id="r", destination="/tmp/x", verify="pixels")
