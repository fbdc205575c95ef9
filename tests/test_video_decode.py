"""Deep checks with PyAV: every frame decodes, and a poster is cut from the middle."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from PIL import Image

from airflow_provider_dreamina.emulator.media import build_video
from airflow_provider_dreamina.exceptions import DreaminaInvalidVideoError
from airflow_provider_dreamina.outputs.decode import INSTALL_HINT, decode_all, write_poster
from tests.video_samples import audio_only, box, encode


def red_of(jpeg: bytes) -> int:
    """The red level of a poster; the sample videos encode each frame's index as its red level."""
    with Image.open(io.BytesIO(jpeg)) as image:
        assert image.format == "JPEG"
        return int(image.convert("RGB").resize((1, 1)).getpixel((0, 0))[0])  # type: ignore[index]


@pytest.mark.parametrize("frames", [121, 241])
def test_every_frame_is_counted(frames: int, tmp_path: Path) -> None:
    path = tmp_path / "video.mp4"
    path.write_bytes(encode(frames, movflags=None))

    assert decode_all(path) == frames
    with path.open("rb") as file:
        file.seek(7)
        assert decode_all(file) == frames
        assert file.tell() == 7


def test_filler_frames_do_not_decode() -> None:
    # A valid index over bytes that are not H.264: the box check passes it, decoding must not.
    video = build_video(total_bytes=300_000, frames=121, width=640, height=426, created_at=0, seed=3)
    data = b"".join(video.iter_range(0, video.size))

    with pytest.raises(DreaminaInvalidVideoError, match=r"output\.mp4 does not decode") as info:
        decode_all(io.BytesIO(data), name="output.mp4")
    assert info.value.retryable


def test_damaged_frames_do_not_decode() -> None:
    data = bytearray(encode(121, size=(320, 240)))
    offset, size = box(bytes(data), "mdat")
    for position in range(offset + 64, offset + size, 97):
        data[position] ^= 0xFF

    with pytest.raises(DreaminaInvalidVideoError):
        decode_all(io.BytesIO(bytes(data)))


def test_no_video_track() -> None:
    with pytest.raises(DreaminaInvalidVideoError, match="has no video track"):
        decode_all(io.BytesIO(audio_only()))


def test_decoding_can_write_the_middle_frame_as_a_poster() -> None:
    poster = io.BytesIO()

    assert decode_all(io.BytesIO(encode(121)), poster=poster) == 121

    assert abs(red_of(poster.getvalue()) - 60) <= 4


@pytest.mark.parametrize("movflags", ["faststart", None])
def test_poster_is_a_frame_from_the_middle(movflags: str | None, tmp_path: Path) -> None:
    path = tmp_path / "video.mp4"
    path.write_bytes(encode(241, movflags=movflags))
    poster = io.BytesIO()

    seconds = write_poster(path, poster)

    assert seconds == pytest.approx(241 / 24 / 2, abs=1 / 24)
    assert abs(red_of(poster.getvalue()) - 120) <= 4
    with Image.open(io.BytesIO(poster.getvalue())) as image:
        assert image.size == (96, 64)


def test_poster_of_a_file_that_does_not_decode() -> None:
    video = build_video(total_bytes=300_000, frames=121, width=640, height=426, created_at=0, seed=3)
    data = b"".join(video.iter_range(0, video.size))

    with pytest.raises(DreaminaInvalidVideoError):
        write_poster(io.BytesIO(data), io.BytesIO())


def test_without_pyav_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)

    for call in (lambda: decode_all(io.BytesIO(b"")), lambda: write_poster(io.BytesIO(b""), io.BytesIO())):
        with pytest.raises(ImportError) as info:
            call()
        assert INSTALL_HINT in str(info.value)
        assert INSTALL_HINT == "pip install 'airflow-provider-dreamina[video]'"
