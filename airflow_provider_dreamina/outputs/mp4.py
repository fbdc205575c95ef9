"""The MP4 / QuickTime index (`moov`, `moof`) as the numbers a video's facts are made of.

Private to `airflow_provider_dreamina.outputs.video`, which decides what those numbers mean for a download.
Box layouts follow ISO/IEC 14496-12; every offset below is into a box's payload.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass

CODECS = {
    b"avc1": "h264",
    b"avc2": "h264",
    b"avc3": "h264",
    b"avc4": "h264",
    b"hvc1": "hevc",
    b"hev1": "hevc",
    b"dvh1": "hevc",
    b"dvhe": "hevc",
    b"av01": "av1",
    b"vp08": "vp8",
    b"vp09": "vp9",
    b"mp4v": "mpeg4",
    b"jpeg": "mjpeg",
    b"mjpa": "mjpeg",
    b"mjpb": "mjpeg",
    b"apch": "prores",
    b"apcn": "prores",
    b"apcs": "prores",
    b"apco": "prores",
    b"ap4h": "prores",
    b"ap4x": "prores",
}


class Corrupt(Exception):
    """A box inside the index does not fit where it sits; becomes DreaminaInvalidVideoError."""


@dataclass
class Track:
    """The numbers of one track that the facts are made of."""

    handler: bytes = b""
    track_id: int = 0
    timescale: int = 0
    media_duration: int = 0
    codec_tag: bytes = b""
    width: int = 0
    height: int = 0
    samples: int = 0
    sample_ticks: int = 0
    # The end of the track's last frame in the file; None when the index does not say.
    data_end: int | None = None


@dataclass
class Fragments:
    """Samples of one track found in `moof` boxes (fragmented MP4)."""

    samples: int = 0
    ticks: int = 0
    # Samples whose duration is the `trex` default, known only from `moov`.
    samples_at_default: int = 0


def children(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of each box between `start` and `end`."""
    position = start
    while position + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, position)
        header = 8
        if size == 1:
            if position + 16 > end:
                raise Corrupt(f"box {kind!r} at {position} has a cut 64-bit size")
            (size,) = struct.unpack_from(">Q", data, position + 8)
            header = 16
        elif size == 0:
            size = end - position
        if size < header or position + size > end:
            raise Corrupt(f"box {kind!r} at {position} claims {size} bytes")
        yield kind, position + header, position + size
        position += size


_TRACK_CONTAINERS = frozenset({b"mdia", b"minf", b"stbl"})


def _track_boxes(data: bytes, start: int, end: int, parent: bytes = b"trak") -> dict[bytes, tuple[int, int]]:
    """The leaf boxes of a `trak` that the facts need, by type (the first of each)."""
    found: dict[bytes, tuple[int, int]] = {}
    for kind, payload_start, payload_end in children(data, start, end):
        if kind in _TRACK_CONTAINERS:
            for inner, span in _track_boxes(data, payload_start, payload_end, kind).items():
                found.setdefault(inner, span)
        # QuickTime has a second `hdlr` (the data handler) in `minf`: the media type is in mdia's.
        elif kind != b"hdlr" or parent == b"mdia":
            found.setdefault(kind, (payload_start, payload_end))
    return found


def read_moov(moov: bytes) -> tuple[list[Track], dict[int, int]]:
    """Every track, and the default sample duration of each track in a fragmented file."""
    tracks: list[Track] = []
    default_ticks: dict[int, int] = {}
    for kind, start, end in children(moov, 0, len(moov)):
        if kind == b"trak":
            tracks.append(_read_trak(moov, _track_boxes(moov, start, end)))
        elif kind == b"mvex":
            for inner, inner_start, _ in children(moov, start, end):
                if inner == b"trex":
                    track_id, _, ticks = struct.unpack_from(">III", moov, inner_start + 4)
                    default_ticks[track_id] = ticks
    return tracks, default_ticks


def _read_trak(data: bytes, boxes: dict[bytes, tuple[int, int]]) -> Track:
    track = Track()
    if b"hdlr" in boxes:
        track.handler = data[boxes[b"hdlr"][0] + 8 : boxes[b"hdlr"][0] + 12]
    if b"tkhd" in boxes:
        start = boxes[b"tkhd"][0]
        wide = data[start] == 1
        (track.track_id,) = struct.unpack_from(">I", data, start + (20 if wide else 12))
        width, height = struct.unpack_from(">II", data, start + (88 if wide else 76))
        track.width, track.height = width >> 16, height >> 16
    if b"mdhd" in boxes:
        start = boxes[b"mdhd"][0]
        if data[start] == 1:
            track.timescale, track.media_duration = struct.unpack_from(">IQ", data, start + 20)
        else:
            track.timescale, track.media_duration = struct.unpack_from(">II", data, start + 12)
    if b"stsd" in boxes:
        start, end = boxes[b"stsd"]
        for tag, entry_start, entry_end in children(data, start + 8, end):
            track.codec_tag = tag
            if entry_end - entry_start >= 28:
                # Coded size, as decoders report it; the track header's may be a display size.
                width, height = struct.unpack_from(">HH", data, entry_start + 24)
                if width and height:
                    track.width, track.height = width, height
            break
    if b"stts" in boxes:
        start = boxes[b"stts"][0]
        (count,) = struct.unpack_from(">I", data, start + 4)
        entries = struct.unpack_from(f">{2 * count}I", data, start + 8)
        track.samples = sum(entries[0::2])
        track.sample_ticks = sum(map(math.prod, zip(entries[0::2], entries[1::2], strict=True)))
    if b"stsz" in boxes or b"stz2" in boxes:
        _read_sample_sizes(data, boxes, track)
    return track


def _read_sample_sizes(data: bytes, boxes: dict[bytes, tuple[int, int]], track: Track) -> None:
    """The frame count from the size table, and where the last frame ends (stsz with stsc and stco)."""
    if b"stz2" in boxes:
        (track.samples,) = struct.unpack_from(">I", data, boxes[b"stz2"][0] + 8)
        return
    start = boxes[b"stsz"][0]
    constant, count = struct.unpack_from(">II", data, start + 4)
    track.samples = count
    sizes = None if constant else struct.unpack_from(f">{count}I", data, start + 12)
    if b"stsc" not in boxes or not (b"stco" in boxes or b"co64" in boxes):
        return
    stsc = boxes[b"stsc"][0]
    (runs,) = struct.unpack_from(">I", data, stsc + 4)
    table = struct.unpack_from(f">{3 * runs}I", data, stsc + 8)
    if b"co64" in boxes:
        (chunks,) = struct.unpack_from(">I", data, boxes[b"co64"][0] + 4)
        offsets = struct.unpack_from(f">{chunks}Q", data, boxes[b"co64"][0] + 8)
    else:
        (chunks,) = struct.unpack_from(">I", data, boxes[b"stco"][0] + 4)
        offsets = struct.unpack_from(f">{chunks}I", data, boxes[b"stco"][0] + 8)
    sample, data_end = 0, 0
    for run in range(runs):
        first_chunk, per_chunk = table[3 * run], table[3 * run + 1]
        last_chunk = table[3 * (run + 1)] - 1 if run + 1 < runs else chunks
        if not 1 <= first_chunk <= last_chunk + 1 or last_chunk > chunks:
            raise Corrupt("the sample-to-chunk table points outside the chunk table")
        for chunk in range(first_chunk, last_chunk + 1):
            taken = max(0, min(per_chunk, count - sample))
            chunk_bytes = constant * taken if sizes is None else sum(sizes[sample : sample + taken])
            data_end = max(data_end, offsets[chunk - 1] + chunk_bytes)
            sample += taken
    track.data_end = data_end


def read_moof(moof: bytes, fragments: dict[int, Fragments]) -> None:
    for kind, start, end in children(moof, 0, len(moof)):
        if kind != b"traf":
            continue
        track_id, default_ticks = 0, None
        for inner, inner_start, _ in children(moof, start, end):
            if inner == b"tfhd":
                (flags,) = struct.unpack_from(">I", moof, inner_start)
                (track_id,) = struct.unpack_from(">I", moof, inner_start + 4)
                if flags & 0x08:
                    # After the optional base data offset (8 bytes) and sample description (4 bytes).
                    offset = inner_start + 8 + (8 if flags & 0x01 else 0) + (4 if flags & 0x02 else 0)
                    (default_ticks,) = struct.unpack_from(">I", moof, offset)
            elif inner == b"trun":
                _read_trun(moof, inner_start, fragments.setdefault(track_id, Fragments()), default_ticks)


def _read_trun(moof: bytes, start: int, fragments: Fragments, default_ticks: int | None) -> None:
    flags, count = struct.unpack_from(">II", moof, start)
    fragments.samples += count
    if not flags & 0x100:
        if default_ticks is None:
            fragments.samples_at_default += count
        else:
            fragments.ticks += count * default_ticks
        return
    position = start + 8 + (4 if flags & 0x01 else 0) + (4 if flags & 0x04 else 0)
    stride = 4 * sum(1 for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit)
    for _ in range(count):
        fragments.ticks += struct.unpack_from(">I", moof, position)[0]
        position += stride
