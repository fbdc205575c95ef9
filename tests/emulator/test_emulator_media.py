"""The emulator's generated media and image rules, without a server."""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image

from airflow_provider_dreamina.emulator.media import (
    BAD_RATIO,
    CHUNK_BYTES,
    MAX_IMAGE_BYTES,
    TOO_SMALL,
    TOO_WIDE,
    UNREADABLE,
    RangeNotSatisfiable,
    RenderedFile,
    build_video,
    check_image,
    output_dimensions,
    parse_range,
    sample_png,
)
from airflow_provider_dreamina.emulator.settings import MAX_OUTPUT_BYTES


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def boxes(data: bytes, start: int = 0, end: int | None = None) -> dict[str, tuple[int, int]]:
    """Box type -> (offset, size) for the boxes between `start` and `end`."""
    found = {}
    position, end = start, len(data) if end is None else end
    while position < end:
        size, kind = struct.unpack(">I4s", data[position : position + 8])
        found[kind.decode()] = (position, size)
        position += size
    return found


@pytest.mark.parametrize(
    ("width", "height", "messages"),
    [
        (321, 321, []),
        (320, 640, [TOO_SMALL]),
        (4096, 4096, []),
        (4096, 1366, []),
        (4096, 1365, [BAD_RATIO]),
        (4097, 4000, [TOO_WIDE]),
        (1920, 1080, []),
    ],
)
def test_image_rules_at_their_boundaries(width: int, height: int, messages: list[str]) -> None:
    check = check_image(png(width, height))

    assert [problem.message for problem in check.problems] == messages
    assert (check.width, check.height) == (width, height)


def test_image_size_limit_is_decimal_megabytes() -> None:
    image = png(640, 480)

    assert check_image(image + bytes(MAX_IMAGE_BYTES - 1 - len(image))).problems == []
    assert check_image(image + bytes(MAX_IMAGE_BYTES - len(image))).problems != []
    assert MAX_IMAGE_BYTES == 4_700_000


def test_corrupt_png_is_unreadable_not_a_crash() -> None:
    check = check_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)

    assert [problem.message for problem in check.problems] == [UNREADABLE]


def test_sample_png_passes_every_rule() -> None:
    check = check_image(sample_png())

    assert check.problems == []
    assert (check.width, check.height) == (640, 480)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", (0, 100)),
        ("bytes=900-", (900, 1000)),
        ("bytes=-100", (900, 1000)),
        ("bytes=-5000", (0, 1000)),
        ("bytes=990-5000", (990, 1000)),
        ("bytes=999-999", (999, 1000)),
        ("bytes=0-1,4-5", None),
        ("items=0-5", None),
        ("bytes=5-2", None),
        ("bytes=abc", None),
        ("bytes=-", None),
    ],
)
def test_parse_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=2000-3000", "bytes=-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 1000)


@pytest.mark.parametrize("frames", [121, 241])
def test_video_layout(frames: int) -> None:
    video = build_video(total_bytes=500_000, frames=frames, width=1920, height=1440, created_at=0, seed=42)
    data = b"".join(video.iter_range(0, video.size))

    assert video.size == len(data) == 500_000
    top = boxes(data)
    assert list(top) == ["ftyp", "moov", "mdat"]
    moov_offset, moov_size = top["moov"]
    assert list(boxes(data, moov_offset + 8, moov_offset + moov_size)) == ["mvhd", "trak"]
    stco = data.index(b"stco")
    assert struct.unpack(">I", data[stco + 12 : stco + 16])[0] == top["mdat"][0] + 8
    stsz = data.index(b"stsz")
    sample_count = struct.unpack(">I", data[stsz + 12 : stsz + 16])[0]
    sizes = struct.unpack(f">{sample_count}I", data[stsz + 16 : stsz + 16 + 4 * sample_count])
    assert sample_count == frames
    assert sum(sizes) == top["mdat"][1] - 8
    tkhd = data.index(b"tkhd")
    assert struct.unpack(">II", data[tkhd + 80 : tkhd + 88]) == (1920 << 16, 1440 << 16)


def test_tiny_requested_size_still_gives_a_valid_file() -> None:
    video = build_video(total_bytes=10, frames=121, width=640, height=480, created_at=0, seed=1)
    data = b"".join(video.iter_range(0, video.size))

    assert list(boxes(data)) == ["ftyp", "moov", "mdat"]
    assert video.payload_bytes == 121


def test_any_range_matches_the_whole_file() -> None:
    video = build_video(total_bytes=3_000_000, frames=121, width=640, height=480, created_at=0, seed=7)
    whole = b"".join(video.iter_range(0, video.size))

    for start, end in [(0, 10), (5, 2_000_000), (1_048_570, 1_048_600), (2_999_990, 3_000_000)]:
        assert b"".join(video.iter_range(start, end)) == whole[start:end]


def test_chunks_stay_bounded_for_huge_files() -> None:
    video = build_video(total_bytes=MAX_OUTPUT_BYTES, frames=121, width=640, height=480, created_at=0, seed=7)
    chunks = video.iter_range(video.size - 3_000_000, video.size)

    assert max(len(chunk) for chunk in chunks) <= 256 * 1024


@pytest.mark.parametrize(
    ("size", "long_side", "expected"),
    [
        ((640, 480), 1920, (1920, 1440)),
        ((480, 640), 1920, (1440, 1920)),
        ((1000, 999), 1920, (1920, 1918)),
        ((768, 512), 640, (640, 426)),
        ((4096, 1366), 640, (640, 214)),
    ],
)
def test_output_keeps_the_input_aspect_ratio(
    size: tuple[int, int], long_side: int, expected: tuple[int, int]
) -> None:
    assert output_dimensions(*size, long_side) == expected


def test_a_rendered_file_serves_any_range_in_bounded_chunks() -> None:
    data = bytes(range(256)) * 5000
    rendered = RenderedFile(data)

    for start, end in [(0, len(data)), (1, 2), (CHUNK_BYTES - 1, CHUNK_BYTES + 1), (1000, 1000)]:
        chunks = list(rendered.iter_range(start, end))
        assert b"".join(chunks) == data[start:end]
        assert all(0 < len(chunk) <= CHUNK_BYTES for chunk in chunks)
    assert rendered.size == len(data)
