"""Checking that a body that claims to be a video is one, as it streams and from a stored file."""

from __future__ import annotations

import io
import random
import struct
import tracemalloc
from collections.abc import Iterable, Iterator

import pytest

from airflow_provider_dreamina.emulator.media import build_video
from airflow_provider_dreamina.exceptions import DreaminaDownloadError, DreaminaInvalidVideoError
from airflow_provider_dreamina.outputs.video import (
    VideoFacts,
    VideoInspector,
    claims_video,
    inspect_file,
    inspect_read_at,
)
from tests.video_samples import audio_only, box, encode, top_level_boxes

HTML = b"<!DOCTYPE html>\n<html><head><title>Access denied</title></head><body>403</body></html>\n"


def stream(data: bytes, chunk_size: int, **options: object) -> VideoFacts:
    inspector = VideoInspector(**options)  # type: ignore[arg-type]
    for start in range(0, len(data), chunk_size):
        inspector.feed(data[start : start + chunk_size])
    return inspector.finish()


def stored(data: bytes, **options: object) -> VideoFacts:
    return inspect_file(io.BytesIO(data), **options)  # type: ignore[arg-type]


def refused(data: bytes) -> list[DreaminaInvalidVideoError]:
    """The errors both ways of checking raise for a body; each must refuse it."""
    errors = []
    for check in (lambda: stream(data, 4096, source="output.mp4"), lambda: stored(data, source="output.mp4")):
        with pytest.raises(DreaminaInvalidVideoError) as info:
            check()
        errors.append(info.value)
    return errors


@pytest.mark.parametrize(("frames", "duration"), [(121, 121 / 24), (241, 241 / 24)])
@pytest.mark.parametrize(
    "layout",
    [
        pytest.param({"movflags": "faststart"}, id="moov-first"),
        pytest.param({"movflags": None}, id="moov-at-end"),
        pytest.param({"container": "mov"}, id="quicktime"),
        pytest.param({"movflags": "frag_keyframe+empty_moov"}, id="fragmented"),
    ],
)
def test_facts_are_exact(frames: int, duration: float, layout: dict[str, str | None]) -> None:
    data = encode(frames, **layout)  # type: ignore[arg-type]
    expected = VideoFacts(
        duration_seconds=round(duration, 6), frames=frames, fps=24.0, width=96, height=64, codec="h264"
    )

    assert stream(data, 65536) == expected
    assert stored(data) == expected


def test_the_layouts_really_differ() -> None:
    assert [kind for kind, _, _ in top_level_boxes(encode(121))][:2] == ["ftyp", "moov"]
    assert [kind for kind, _, _ in top_level_boxes(encode(121, movflags=None))][-1] == "moov"
    assert encode(121, container="mov")[8:12] == b"qt  "


def test_hevc_is_named() -> None:
    assert stream(encode(121, codec="libx265"), 4096).codec == "hevc"


def test_old_quicktime_without_ftyp() -> None:
    data = bytearray(encode(121, container="mov"))
    # Pre-2001 QuickTime files start with any top-level box; keep the offsets, change the type.
    data[4:8] = b"wide"

    assert stream(bytes(data), 4096).frames == 121
    assert stored(bytes(data)).frames == 121


@pytest.mark.parametrize("movflags", ["faststart", None])
def test_every_chunk_size_gives_the_same_facts(movflags: str | None) -> None:
    data = encode(121, movflags=movflags)
    expected = stored(data)

    for chunk_size in [*range(1, 34), 63, 64, 65, 127, 4095, 4096, 4097, len(data)]:
        assert stream(data, chunk_size) == expected, chunk_size


def test_any_split_into_random_chunks_gives_the_same_facts() -> None:
    data = encode(241, movflags=None)
    expected = stored(data)
    chooser = random.Random(13)

    for _ in range(50):
        inspector, position = VideoInspector(), 0
        while position < len(data):
            size = chooser.choice([0, 1, 2, 7, 8, 9, 16, 100, 3000])
            inspector.feed(memoryview(data)[position : position + size])
            position += size
        assert inspector.finish() == expected


def test_an_html_page_is_refused_at_once() -> None:
    inspector = VideoInspector(source="output.mp4", url="https://cdn.example/output.mp4")

    with pytest.raises(DreaminaInvalidVideoError) as info:
        inspector.feed(HTML)

    error = info.value
    assert isinstance(error, DreaminaDownloadError)
    assert error.retryable
    assert error.url == "https://cdn.example/output.mp4"
    assert "output.mp4 is not an MP4 or QuickTime video" in str(error)
    assert "<!DOCTYPE html>" in str(error)
    assert "HTML page" in str(error)
    assert all("HTML page" in str(error) for error in refused(HTML))


@pytest.mark.parametrize("body", [HTML[:20], b'{"error": "expired"}', b"\x00" * 100, b"x"])
def test_short_and_other_non_videos_are_refused(body: bytes) -> None:
    for error in refused(body):
        assert error.retryable


def test_a_json_error_body_says_so() -> None:
    assert all("JSON document" in str(error) for error in refused(b'{"error": "signature expired"}'))


def test_an_empty_body_is_refused() -> None:
    assert all("is empty" in str(error) for error in refused(b""))


@pytest.mark.parametrize("movflags", ["faststart", None])
def test_a_body_cut_inside_a_box_is_refused(movflags: str | None) -> None:
    data = encode(121, movflags=movflags)

    for cut in (9, len(data) // 2, len(data) - 1):
        errors = refused(data[:cut])
        assert all("cut short" in str(error) and error.retryable for error in errors), cut


def test_a_body_cut_before_its_moov_is_refused() -> None:
    data = encode(121, movflags=None)
    moov_offset, _ = box(data, "moov")

    assert all("no 'moov' box" in str(error) for error in refused(data[:moov_offset]))


def test_a_body_cut_right_after_its_moov_is_refused() -> None:
    data = encode(121)
    mdat_offset, _ = box(data, "mdat")

    errors = refused(data[:mdat_offset])

    assert all("cut short: its index places frames up to byte" in str(error) for error in errors)


def test_an_mp4_without_a_video_track_is_refused() -> None:
    errors = refused(audio_only())

    assert all("has no video track (tracks: soun)" in str(error) and error.retryable for error in errors)


def test_trailing_garbage_is_refused() -> None:
    not_a_box = struct.pack(">I", 16) + b"\xff\xfe\x00\x01" + bytes(8)

    assert all("is corrupt" in str(error) for error in refused(encode(121) + not_a_box))
    assert all("cut short" in str(error) for error in refused(encode(121) + b"\x00\x01garbage!"))


def test_a_huge_index_is_refused_without_reading_it() -> None:
    data = encode(121)
    _, moov_size = box(data, "moov")

    with pytest.raises(DreaminaInvalidVideoError) as streamed:
        stream(data, 4096, max_index_bytes=moov_size - 100)
    with pytest.raises(DreaminaInvalidVideoError) as read:
        stored(data, max_index_bytes=moov_size - 100)

    for error in (streamed.value, read.value):
        assert "more than the" in str(error)
        # The same file would be refused again: retrying cannot help.
        assert not error.retryable


def test_a_stored_file_by_path_and_by_file_object(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "video.mp4"  # type: ignore[operator]
    path.write_bytes(encode(241, movflags=None))

    assert inspect_file(path).frames == 241
    with open(path, "rb") as file:
        file.seek(100)
        assert inspect_file(file).frames == 241
        assert file.tell() == 100


def test_a_stored_file_is_read_by_its_index_only() -> None:
    data = encode(241, movflags=None)
    reads: list[tuple[int, int]] = []

    def read_at(offset: int, length: int) -> bytes:
        reads.append((offset, length))
        return data[offset : offset + length]

    assert inspect_read_at(read_at, len(data)).frames == 241
    _, moov_size = box(data, "moov")
    assert sum(length for _, length in reads) < moov_size + 200
    mdat_offset, mdat_size = box(data, "mdat")
    assert not any(mdat_offset + 16 <= offset < mdat_offset + mdat_size for offset, _ in reads)


def test_a_64_bit_mdat_of_5_gib_is_read_from_its_headers() -> None:
    video = build_video(total_bytes=5 * 1024**3, frames=121, width=640, height=426, created_at=0, seed=1)

    def read_at(offset: int, length: int) -> bytes:
        return b"".join(video.iter_range(offset, offset + length))

    facts = inspect_read_at(read_at, video.size)

    assert (facts.frames, facts.fps, facts.width, facts.height, facts.codec) == (121, 24.0, 640, 426, "h264")


def _one_gib_stream(moov_first: bool) -> Iterator[memoryview]:
    """A 1 GiB MP4 as a download delivers it, in 1 MiB chunks that are never kept."""
    video = build_video(total_bytes=2**30, frames=241, width=640, height=426, created_at=0, seed=1)
    head = video.head
    (ftyp_size,) = struct.unpack_from(">I", head)
    (moov_size,) = struct.unpack_from(">I", head, ftyp_size)
    ftyp, moov, mdat_header = head[:ftyp_size], head[ftyp_size : ftyp_size + moov_size], head[-8:]
    assert moov[4:8] == b"moov"
    chunk = memoryview(bytes(2**20))
    yield from map(memoryview, (ftyp, moov, mdat_header) if moov_first else (ftyp, mdat_header))
    remaining = video.payload_bytes
    while remaining:
        yield chunk[: min(remaining, len(chunk))]
        remaining -= min(remaining, len(chunk))
    if not moov_first:
        yield memoryview(moov)


def _peak_bytes_while(chunks: Iterable[memoryview]) -> tuple[int, VideoFacts]:
    tracemalloc.start()
    try:
        inspector = VideoInspector()
        for piece in chunks:
            inspector.feed(piece)
        facts = inspector.finish()
        return tracemalloc.get_traced_memory()[1], facts
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("moov_first", [True, False], ids=["moov-first", "moov-at-end"])
def test_memory_stays_flat_for_a_1_gib_stream(moov_first: bool) -> None:
    chunks = _one_gib_stream(moov_first)
    # Built outside the measurement: only what the inspector allocates counts.
    first = [next(chunks) for _ in range(3 if moov_first else 2)]

    peak, facts = _peak_bytes_while([*first, *chunks])

    assert facts.frames == 241
    assert facts.duration_seconds == pytest.approx(241 / 24)
    # The index is a few kilobytes; the 1 GiB of frames must leave no trace.
    assert peak < 256 * 1024, peak


@pytest.mark.parametrize(
    ("content_type", "name", "expected"),
    [
        ("video/mp4", None, True),
        ("Video/QuickTime; charset=binary", None, True),
        ("application/octet-stream", "output.MP4", True),
        (None, "https://cdn.example/a/output.mov?sig=abc&expires=1", True),
        (None, "clip.m4v", True),
        ("image/png", "output.png", False),
        ("video/webm", "https://cdn.example/blob", False),  # not a container this module reads
        ("text/html", "https://cdn.example/output.mp4", True),  # an error page where a video belongs
        ("text/html", "https://cdn.example/output?format=mp4", False),
        (None, None, False),
    ],
)
def test_claims_video(content_type: str | None, name: str | None, expected: bool) -> None:
    assert claims_video(content_type=content_type, name=name) is expected


def test_facts_round_trip_through_a_manifest() -> None:
    facts = stored(encode(121))

    entry = facts.as_manifest()

    assert entry == {
        "duration_seconds": 5.041667,
        "frames": 121,
        "fps": 24.0,
        "width": 96,
        "height": 64,
        "codec": "h264",
    }
    assert VideoFacts.from_manifest({**entry, "unknown": 1}) == facts
    assert facts.summary() == "5.04 s, 121 frames, 96\N{MULTIPLICATION SIGN}64 H.264"
