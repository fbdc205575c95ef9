"""Bytes the emulator serves or inspects: outputs (rendered or synthetic MP4s) and input images."""

from __future__ import annotations

import functools
import io
import random
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from airflow_provider_dreamina.defaults import FRAMES_PER_SECOND

# The Dreamina schema says "less than 4.7 MB"; decimal megabytes.
MAX_IMAGE_BYTES = 4_700_000
MAX_IMAGE_SIDE = 4096
MIN_IMAGE_SIDE = 320
MAX_SIDE_RATIO = 3.0

TOO_LARGE = "File size must be less than 4.7 MB."
TOO_WIDE = "Maximum resolution is 4096x4096."
TOO_SMALL = "The shortest side must be at least 320 pixels."
BAD_RATIO = "The ratio of long side to short side must be within 3:1."
NOT_JPEG_OR_PNG = "The image must be a JPEG or PNG file."
UNREADABLE = "The image could not be decoded."

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"

CHUNK_BYTES = 256 * 1024
_TILE_BYTES = 1024 * 1024
# Seconds between 1904-01-01 (the MP4 epoch) and 1970-01-01.
_MP4_EPOCH_OFFSET = 2_082_844_800
_UNITY_MATRIX = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
# Placeholder parameter sets: the payload is a pattern, not H.264, so only the box layout matters.
_SPS = bytes.fromhex("6764002aacd940780227e5c0")
_PPS = bytes.fromhex("68ebecb22c")


@dataclass(frozen=True)
class ImageProblem:
    """One schema rule an input image breaks."""

    kind: str
    message: str


@dataclass(frozen=True)
class ImageCheck:
    """Outcome of inspecting an input image: its size when readable, and the rules it breaks."""

    problems: list[ImageProblem]
    width: int | None = None
    height: int | None = None


def check_image(data: bytes) -> ImageCheck:
    """Apply the Dreamina image rules; the type is judged by content, never by name or declared type."""
    problems: list[ImageProblem] = []
    if len(data) >= MAX_IMAGE_BYTES:
        problems.append(ImageProblem("image_too_large", TOO_LARGE))
    if not data.startswith((PNG_MAGIC, JPEG_MAGIC)):
        problems.append(ImageProblem("image_type", NOT_JPEG_OR_PNG))
        return ImageCheck(problems)
    try:
        # Opening reads the header only; dimensions past Pillow's bomb limit are too large anyway.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except Image.DecompressionBombError:
        problems.append(ImageProblem("image_resolution", TOO_WIDE))
        return ImageCheck(problems)
    except (OSError, ValueError, SyntaxError):
        problems.append(ImageProblem("image_unreadable", UNREADABLE))
        return ImageCheck(problems)
    if max(width, height) > MAX_IMAGE_SIDE:
        problems.append(ImageProblem("image_resolution", TOO_WIDE))
    if min(width, height) <= MIN_IMAGE_SIDE:
        problems.append(ImageProblem("image_resolution", TOO_SMALL))
    if min(width, height) > 0 and max(width, height) / min(width, height) >= MAX_SIDE_RATIO:
        problems.append(ImageProblem("image_ratio", BAD_RATIO))
    return ImageCheck(problems, width, height)


@functools.cache
def sample_png() -> bytes:
    """A 640x480 colour gradient that passes every input rule."""
    size = (640, 480)
    vertical = Image.linear_gradient("L").resize(size)
    horizontal = Image.linear_gradient("L").rotate(90).resize(size)
    radial = Image.radial_gradient("L").resize(size)
    image = Image.merge("RGB", (horizontal, radial, vertical))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def generated_image(width: int, height: int, image_format: str, pad_bytes: int = 0) -> bytes:
    """A flat grey image of any size and format, padded after its end to reach a file size."""
    image = Image.new("L", (width, height), 128)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    # Decoders stop at the image's end marker, so trailing padding changes only the file size.
    buffer.write(bytes(pad_bytes))
    return buffer.getvalue()


def output_dimensions(width: int, height: int, long_side: int) -> tuple[int, int]:
    """Output size for an input: the input's aspect ratio with the given long side, both sides even.

    Even, because H.264 in 4:2:0 stores colour at half resolution in both directions.
    """
    scale = long_side / max(width, height)
    return (max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2))


@functools.cache
def _tile() -> bytes:
    """Seeded filler for every mdat, with its start repeated so a chunk never wraps around."""
    tile = random.Random(0x445245414D494E41).randbytes(_TILE_BYTES)
    return tile + tile[:CHUNK_BYTES]


class ServedVideo(Protocol):
    """An output as the download endpoint serves it: a size and any byte range of it."""

    @property
    def size(self) -> int: ...

    def iter_range(self, start: int, end: int) -> Iterator[bytes]: ...


@dataclass(frozen=True)
class RenderedFile:
    """A rendered output, held in memory (renders are small) and served in bounded chunks."""

    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def iter_range(self, start: int, end: int) -> Iterator[bytes]:
        """Yield the bytes from `start` up to, not including, `end`, in chunks of at most CHUNK_BYTES."""
        view = memoryview(self.data)
        for position in range(start, end, CHUNK_BYTES):
            yield bytes(view[position : min(position + CHUNK_BYTES, end)])


@dataclass(frozen=True)
class VideoFile:
    """A synthetic MP4 (ftyp, moov, mdat) produced on demand, so its size costs no memory."""

    head: bytes
    payload_bytes: int
    pattern_shift: int

    @property
    def size(self) -> int:
        return len(self.head) + self.payload_bytes

    def iter_range(self, start: int, end: int) -> Iterator[bytes]:
        """Yield the bytes from `start` up to, not including, `end`, in chunks of at most CHUNK_BYTES."""
        position = start
        if position < len(self.head):
            head_end = min(end, len(self.head))
            yield self.head[position:head_end]
            position = head_end
        tile = _tile()
        while position < end:
            offset = (position - len(self.head) + self.pattern_shift) % _TILE_BYTES
            length = min(CHUNK_BYTES, end - position)
            yield tile[offset : offset + length]
            position += length


def build_video(
    *, total_bytes: int, frames: int, width: int, height: int, created_at: float, seed: int
) -> VideoFile:
    """Lay out an MP4 of `total_bytes` (or the smallest valid size above it) with one video track.

    Its index is valid but its frames are filler: what large-output benchmarks need, at no render cost.
    """
    moov_bytes = len(_moov(frames, width, height, created_at, sample_sizes=[0] * frames, chunk_offset=0))
    mdat_header_bytes = 8
    payload_bytes = max(total_bytes - len(_FTYP) - moov_bytes - mdat_header_bytes, frames)
    if payload_bytes + mdat_header_bytes > 0xFFFFFFFF:
        mdat_header_bytes = 16
        payload_bytes = max(total_bytes - len(_FTYP) - moov_bytes - mdat_header_bytes, frames)
    head_bytes = len(_FTYP) + moov_bytes + mdat_header_bytes
    base, remainder = divmod(payload_bytes, frames)
    sample_sizes = [base] * (frames - 1) + [base + remainder]
    moov = _moov(frames, width, height, created_at, sample_sizes=sample_sizes, chunk_offset=head_bytes)
    head = _FTYP + moov + _mdat_header(payload_bytes, mdat_header_bytes)
    return VideoFile(head, payload_bytes, seed % _TILE_BYTES)


def _box(kind: bytes, *parts: bytes) -> bytes:
    payload = b"".join(parts)
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *parts)


_FTYP = _box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isom", b"iso2", b"avc1", b"mp41")


def _mdat_header(payload_bytes: int, header_bytes: int) -> bytes:
    if header_bytes == 8:
        return struct.pack(">I", 8 + payload_bytes) + b"mdat"
    # size 1 means a 64-bit size follows the type
    return struct.pack(">I", 1) + b"mdat" + struct.pack(">Q", 16 + payload_bytes)


def _moov(
    frames: int, width: int, height: int, created_at: float, *, sample_sizes: list[int], chunk_offset: int
) -> bytes:
    mp4_time = int(created_at) + _MP4_EPOCH_OFFSET
    movie_timescale = 1000
    movie_duration = frames * movie_timescale // FRAMES_PER_SECOND
    mvhd = _full_box(
        b"mvhd",
        0,
        0,
        struct.pack(">IIII", mp4_time, mp4_time, movie_timescale, movie_duration),
        struct.pack(">IH", 0x00010000, 0x0100),
        bytes(10),
        _UNITY_MATRIX,
        bytes(24),
        struct.pack(">I", 2),
    )
    tkhd = _full_box(
        b"tkhd",
        0,
        0x3,  # enabled, in movie
        struct.pack(">IIII", mp4_time, mp4_time, 1, 0),
        struct.pack(">I", movie_duration),
        bytes(8),
        struct.pack(">hhhH", 0, 0, 0, 0),
        _UNITY_MATRIX,
        struct.pack(">II", width << 16, height << 16),
    )
    language_und = ((ord("u") - 0x60) << 10) | ((ord("n") - 0x60) << 5) | (ord("d") - 0x60)
    mdhd = _full_box(
        b"mdhd",
        0,
        0,
        struct.pack(">IIII", mp4_time, mp4_time, FRAMES_PER_SECOND, frames),
        struct.pack(">HH", language_und, 0),
    )
    hdlr = _full_box(b"hdlr", 0, 0, bytes(4), b"vide", bytes(12), b"VideoHandler\x00")
    vmhd = _full_box(b"vmhd", 0, 1, bytes(8))
    dinf = _box(b"dinf", _full_box(b"dref", 0, 0, struct.pack(">I", 1), _full_box(b"url ", 0, 1)))
    avcc = _box(
        b"avcC",
        bytes([1, _SPS[1], _SPS[2], _SPS[3], 0xFF, 0xE1]),
        struct.pack(">H", len(_SPS)),
        _SPS,
        bytes([1]),
        struct.pack(">H", len(_PPS)),
        _PPS,
    )
    avc1 = _box(
        b"avc1",
        bytes(6),
        struct.pack(">H", 1),
        bytes(16),
        struct.pack(">HHII", width, height, 0x00480000, 0x00480000),
        bytes(4),
        struct.pack(">H", 1),
        bytes(32),
        struct.pack(">Hh", 0x0018, -1),
        avcc,
    )
    stbl = _box(
        b"stbl",
        _full_box(b"stsd", 0, 0, struct.pack(">I", 1), avc1),
        _full_box(b"stts", 0, 0, struct.pack(">III", 1, frames, 1)),
        _full_box(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, frames, 1)),
        _full_box(b"stsz", 0, 0, struct.pack(">II", 0, frames), struct.pack(f">{frames}I", *sample_sizes)),
        _full_box(b"stco", 0, 0, struct.pack(">II", 1, chunk_offset)),
    )
    minf = _box(b"minf", vmhd, dinf, stbl)
    trak = _box(b"trak", tkhd, _box(b"mdia", mdhd, hdlr, minf))
    return _box(b"moov", mvhd, trak)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The byte range a `Range` header asks for, as (start, end exclusive); None to send everything.

    :raises RangeNotSatisfiable: when the range starts past the end of the file.
    """
    if header is None:
        return None
    unit, _, spec = header.strip().partition("=")
    # Multiple ranges and malformed headers may be ignored (RFC 9110 section 14.2).
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()):
        return None
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - suffix), size
    start = int(first)
    if last and not last.isdigit():
        return None
    if last and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(size)
    end = min(int(last) + 1, size) if last else size
    return start, end


class RangeNotSatisfiable(Exception):
    """A `Range` header that lies wholly past the end of the file."""

    def __init__(self, size: int) -> None:
        super().__init__(f"range not satisfiable for {size} bytes")
        self.size = size
