"""Whether an output that claims to be a video is one, read from its MP4 / QuickTime boxes.

An MP4 (ISO-BMFF) or QuickTime file is a sequence of boxes. The frames sit in `mdat`, which is
nearly the whole file; everything a manifest records about the video (duration, frame count and
rate, size, codec) sits in the small `moov` index, before or after `mdat`. So the check reads box
headers as the bytes stream past, skips `mdat` without keeping it, and keeps only `moov` (and the
`moof` boxes of a fragmented file): memory stays bounded whatever the file's size, and nothing here
needs more than the standard library. An HTML error page served with status 200, a body cut short
and a file without a video track are told apart from a video before anything is stored.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from airflow_provider_dreamina.exceptions import DreaminaInvalidVideoError, DreaminaVideoIndexTooLargeError
from airflow_provider_dreamina.outputs import mp4 as _mp4

#: Largest `moov` (or `moof`) box kept in memory; a 10 s video's index is a few kilobytes.
MAX_INDEX_BYTES = 64 * 1024 * 1024
VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v")

# What a file may start with: MP4 starts with `ftyp` (`styp` for a segment); old QuickTime files
# start with any of their top-level boxes.
_FIRST_BOXES = frozenset({b"ftyp", b"styp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid"})
_KEPT_BOXES = frozenset({b"moov", b"moof"})
# Enough of the start of a body to say what it is when it is not a video.
_PREFIX_BYTES = 64
_CODEC_LABELS = {
    "h264": "H.264",
    "hevc": "HEVC",
    "av1": "AV1",
    "vp8": "VP8",
    "vp9": "VP9",
    "prores": "ProRes",
}


@dataclass(frozen=True)
class VideoFacts:
    """What a video is, as its index says: the `video` entry of a manifest."""

    duration_seconds: float
    frames: int
    fps: float
    width: int
    height: int
    #: FFmpeg's name for the codec ("h264", "hevc", "av1", ...), or the sample entry's four letters.
    codec: str

    def as_manifest(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_manifest(cls, entry: Mapping[str, Any]) -> VideoFacts:
        """Read back the `video` entry of a manifest (extra keys are ignored)."""
        return cls(**{name: entry[name] for name in cls.__dataclass_fields__})

    def summary(self) -> str:
        """For people: duration, frames, size and codec on one line, e.g. for the demo's report."""
        codec = _CODEC_LABELS.get(self.codec, self.codec)
        size = f"{self.width}\N{MULTIPLICATION SIGN}{self.height}"
        return f"{self.duration_seconds:.2f} s, {self.frames} frames, {size} {codec}"


#: Content types of the containers this module reads; other video types (WebM...) are not checked.
MP4_CONTENT_TYPES = frozenset({"video/mp4", "video/quicktime", "video/x-m4v", "video/mp4v-es"})


def claims_video(*, content_type: str | None = None, name: str | None = None) -> bool:
    """Whether an output says it is an MP4/QuickTime video, by its content type or its extension.

    Dreamina answers MP4. An output of another video type (``video/webm``) is stored unchecked:
    this module reads ISO-BMFF boxes only.

    :param name: a file name, path or URL (its query is ignored).
    """
    if content_type and content_type.split(";", 1)[0].strip().lower() in MP4_CONTENT_TYPES:
        return True
    if not name:
        return False
    path = urlsplit(name).path if "://" in name else name
    return path.lower().endswith(VIDEO_EXTENSIONS)


@dataclass
class _Index:
    """`moov` and what the `moof` boxes add to it, whatever order they came in."""

    source: str
    url: str | None
    moov: bytes | None = None
    fragments: dict[int, _mp4.Fragments] = field(default_factory=dict)

    def keep(self, kind: bytes, payload: bytes) -> None:
        if kind == b"moov":
            if self.moov is None:
                self.moov = payload
            return
        try:
            _mp4.read_moof(payload, self.fragments)
        except (_mp4.Corrupt, struct.error) as error:
            raise self.invalid(f"has a corrupt 'moof' box ({error})") from None

    def invalid(
        self, problem: str, *, kind: type[DreaminaInvalidVideoError] = DreaminaInvalidVideoError
    ) -> DreaminaInvalidVideoError:
        return kind(f"{self.source} {problem}", url=self.url)

    def facts(self, file_size: int) -> VideoFacts:
        if self.moov is None:
            raise self.invalid(
                "has no 'moov' box, the index every MP4 needs to be played: the body was cut short "
                "or is not a finished video"
            )
        try:
            tracks, default_ticks = _mp4.read_moov(self.moov)
        except (_mp4.Corrupt, struct.error) as error:
            raise self.invalid(f"has a corrupt 'moov' box ({error})") from None
        video = next((track for track in tracks if track.handler == b"vide"), None)
        if video is None:
            found = ", ".join(track.handler.decode("latin-1") for track in tracks) or "none"
            raise self.invalid(f"has no video track (tracks: {found})")
        fragments = self.fragments.get(video.track_id, _mp4.Fragments())
        frames = video.samples + fragments.samples
        ticks = (
            video.sample_ticks
            + fragments.ticks
            + fragments.samples_at_default * default_ticks.get(video.track_id, 0)
        )
        if frames == 0:
            raise self.invalid("has a video track without frames")
        if video.data_end is not None and video.data_end > file_size:
            raise self.invalid(
                f"is cut short: its index places frames up to byte {video.data_end}, "
                f"but the body has {file_size} bytes"
            )
        if ticks == 0:
            ticks = video.media_duration
        duration = ticks / video.timescale if video.timescale else 0.0
        return VideoFacts(
            duration_seconds=round(duration, 6),
            frames=frames,
            fps=round(frames / duration, 6) if duration else 0.0,
            width=video.width,
            height=video.height,
            codec=_mp4.CODECS.get(video.codec_tag, video.codec_tag.decode("latin-1").strip()),
        )


def _describe_start(prefix: bytes) -> str:
    """What a body that is not a video starts with, in words a user can act on."""
    text = prefix.lstrip()[:40].decode("latin-1")
    shown = "".join(character if character.isprintable() else "." for character in text)
    lowered = text.lower()
    if lowered.startswith("<"):
        kind = "an HTML page: the output host answered with a page instead of the video"
    elif lowered.startswith(("{", "[")):
        kind = "a JSON document: the output host answered with an error instead of the video"
    elif not text:
        kind = "nothing but blanks"
    else:
        kind = "no MP4 box"
    return f"it starts with {shown!r} ({kind})"


def _box_header(
    header: bytes, position: int, first: bool, index: _Index, prefix: bytes
) -> tuple[bytes, int, int]:
    """(type, header length, declared size; 0 for "to the end") of the box whose header this is."""
    size, kind = struct.unpack_from(">I4s", header)
    if first and kind not in _FIRST_BOXES:
        raise index.invalid(f"is not an MP4 or QuickTime video: {_describe_start(prefix)}")
    if not all(0x20 <= byte <= 0x7E for byte in kind):
        raise index.invalid(f"is corrupt: no box header at byte {position} after the video's boxes")
    header_length = 8
    if size == 1:
        (size,) = struct.unpack_from(">Q", header, 8)
        header_length = 16
    if size and size < header_length:
        raise index.invalid(f"is corrupt: its {kind.decode()!r} box at byte {position} claims {size} bytes")
    return kind, header_length, size


def _header_length(partial: bytes | bytearray) -> int:
    """How many bytes the box header starting with these (at least 8) bytes has."""
    return 16 if struct.unpack_from(">I", partial)[0] == 1 else 8


def _check_index_size(kind: bytes, payload_size: int, cap: int, index: _Index) -> None:
    if payload_size > cap:
        # Not retryable: the same file would be refused again.
        raise index.invalid(
            f"has a {kind.decode()!r} box of {payload_size} bytes, more than the {cap} bytes this check "
            "keeps in memory; a video of minutes has an index of kilobytes",
            kind=DreaminaVideoIndexTooLargeError,
        )


class VideoInspector:
    """Checks a video as it streams past: `feed` every chunk in order, then `finish` for its facts.

    Memory stays bounded: `mdat` is counted, never kept; only `moov` and `moof` boxes are, each at
    most `max_index_bytes`. Errors raise as soon as the bytes show them (an HTML page fails at
    its first 64 bytes), so a download can stop early.

    :param source: how messages name the output, e.g. its file name (never a signed URL).
    :param url: set as the error's `url`.
    """

    def __init__(
        self, *, source: str = "the output", url: str | None = None, max_index_bytes: int = MAX_INDEX_BYTES
    ) -> None:
        self._index = _Index(source, url)
        self._cap = max_index_bytes
        self._prefix: bytearray | None = bytearray()
        self._start = b""
        self._position = 0
        self._header = bytearray()
        self._first = True
        # The box being read: its type, absolute end (None: to the end of the body), kept payload.
        self._kind = b""
        self._end: int | None = None
        self._in_box = False
        self._kept: bytearray | None = None

    @property
    def bytes_seen(self) -> int:
        return self._position + (len(self._prefix) if self._prefix is not None else 0)

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        """Take the next bytes of the body.

        :raises DreaminaInvalidVideoError: as soon as the bytes so far cannot be a video.
        """
        view = memoryview(chunk).cast("B")
        if self._prefix is not None:
            # The first bytes wait until there are enough to say what a non-video body is.
            wanted = _PREFIX_BYTES - len(self._prefix)
            self._prefix += view[:wanted]
            if len(self._prefix) < _PREFIX_BYTES:
                return
            self._release_prefix()
            view = view[wanted:]
        self._consume(view)

    def finish(self) -> VideoFacts:
        """The video's facts, once the whole body was fed.

        :raises DreaminaInvalidVideoError: when the body is not a complete video with a video track.
        """
        if self._prefix is not None:
            if not self._prefix:
                raise self._index.invalid("is empty")
            self._release_prefix()
        if self._header:
            raise self._index.invalid(f"is cut short: it ends inside a box header at byte {self._position}")
        if self._in_box and self._end is not None:
            raise self._index.invalid(
                f"is cut short: it ends at byte {self._position}, inside its {self._kind.decode()!r} box "
                f"that ends at byte {self._end}"
            )
        if self._in_box:
            self._close_box()
        return self._index.facts(self._position)

    def _release_prefix(self) -> None:
        assert self._prefix is not None
        self._start, self._prefix = bytes(self._prefix), None
        self._consume(memoryview(self._start))

    def _consume(self, view: memoryview) -> None:
        offset, length = 0, len(view)
        while offset < length:
            if not self._in_box:
                offset = self._read_header(view, offset)
                continue
            take = length - offset if self._end is None else min(length - offset, self._end - self._position)
            if self._kept is not None:
                if self._end is None:
                    _check_index_size(self._kind, len(self._kept) + take, self._cap, self._index)
                self._kept += view[offset : offset + take]
            offset += take
            self._position += take
            if self._position == self._end:
                self._close_box()

    def _read_header(self, view: memoryview, offset: int) -> int:
        wanted = 8 if len(self._header) < 8 else _header_length(self._header)
        take = min(wanted - len(self._header), len(view) - offset)
        self._header += view[offset : offset + take]
        offset += take
        if len(self._header) < 8 or len(self._header) < _header_length(self._header):
            return offset
        start = self._position
        header, self._header = bytes(self._header), bytearray()
        kind, header_length, size = _box_header(header, start, self._first, self._index, self._start)
        self._first = False
        self._position += header_length
        self._kind, self._end, self._in_box = kind, (start + size if size else None), True
        self._kept = None
        if kind in _KEPT_BOXES:
            if size:
                _check_index_size(kind, size - header_length, self._cap, self._index)
            self._kept = bytearray()
        if self._position == self._end:
            self._close_box()
        return offset

    def _close_box(self) -> None:
        if self._kept is not None:
            self._index.keep(self._kind, bytes(self._kept))
        self._kept, self._in_box = None, False


_Read = tuple[int, int]


def _walk(size: int, cap: int, index: _Index) -> Generator[_Read, bytes, VideoFacts]:
    """The reads (offset, length) that inspecting a file of `size` bytes needs, and then its facts.

    Written once for every way of reading: the drivers below only perform the reads.
    """
    if size == 0:
        raise index.invalid("is empty")
    prefix = yield (0, min(_PREFIX_BYTES, size))
    position, first = 0, True
    while position < size:
        if size - position < 8:
            raise index.invalid(f"is cut short: it ends inside a box header at byte {size}")
        header = prefix[:16] if first else (yield (position, min(16, size - position)))
        if len(header) < _header_length(header):
            raise index.invalid(f"is cut short: it ends inside a box header at byte {size}")
        kind, header_length, declared = _box_header(header, position, first, index, prefix)
        first = False
        box_size = declared or size - position
        if position + box_size > size:
            raise index.invalid(
                f"is cut short: it ends at byte {size}, inside its {kind.decode()!r} box that ends at "
                f"byte {position + box_size}"
            )
        if kind in _KEPT_BOXES:
            _check_index_size(kind, box_size - header_length, cap, index)
            index.keep(kind, (yield (position + header_length, box_size - header_length)))
        position += box_size
    return index.facts(size)


def _read_exactly(read_at: Callable[[int, int], bytes], offset: int, length: int, index: _Index) -> bytes:
    data = read_at(offset, length)
    if len(data) != length:
        raise index.invalid(f"is cut short: reading {length} bytes at {offset} gave {len(data)}")
    return data


def inspect_read_at(
    read_at: Callable[[int, int], bytes],
    size: int,
    *,
    source: str = "the output",
    url: str | None = None,
    max_index_bytes: int = MAX_INDEX_BYTES,
) -> VideoFacts:
    """Check a video of `size` bytes that `read_at(offset, length)` reads, e.g. a stored file.

    Reads box headers and the index only (a few kilobytes), never `mdat`.

    :raises DreaminaInvalidVideoError: when it is not a complete video with a video track.
    """
    index = _Index(source, url)
    walk = _walk(size, max_index_bytes, index)
    try:
        offset, length = next(walk)
        while True:
            offset, length = walk.send(_read_exactly(read_at, offset, length, index))
    except StopIteration as done:
        facts: VideoFacts = done.value
        return facts


def inspect_file(
    file: str | os.PathLike[str] | BinaryIO,
    *,
    source: str | None = None,
    url: str | None = None,
    max_index_bytes: int = MAX_INDEX_BYTES,
) -> VideoFacts:
    """Check a stored video by path or through a seekable binary file object (left where it was).

    :param source: how messages name it; by default the path, or "the output" for a file object.
    """
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as opened:
            return inspect_file(
                opened, source=source or os.fspath(file), url=url, max_index_bytes=max_index_bytes
            )
    start = file.tell()
    try:
        size = file.seek(0, os.SEEK_END)

        def read_at(offset: int, length: int) -> bytes:
            file.seek(offset)
            return file.read(length)

        return inspect_read_at(
            read_at, size, source=source or "the output", url=url, max_index_bytes=max_index_bytes
        )
    finally:
        file.seek(start)
