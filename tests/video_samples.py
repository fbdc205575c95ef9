"""Small real videos for the tests, encoded with PyAV in the layouts an output host may serve."""

from __future__ import annotations

import functools
import struct
import tempfile
from pathlib import Path
from typing import Any

import av
from PIL import Image

FPS = 24


@functools.cache
def encode(
    frames: int,
    *,
    container: str = "mp4",
    movflags: str | None = "faststart",
    size: tuple[int, int] = (96, 64),
    codec: str = "libx264",
) -> bytes:
    """A video of `frames` frames at 24 fps; `movflags` picks the layout (None: index at the end)."""
    options = {"movflags": movflags} if movflags else {}
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / f"video.{container}"
        with av.open(str(path), "w", format=container, options=options) as output:
            stream: Any = output.add_stream(codec, rate=FPS, options={"preset": "ultrafast"})
            stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
            for index in range(frames):
                picture = Image.new("RGB", size, (index % 256, 80, 160))
                output.mux(stream.encode(av.VideoFrame.from_image(picture)))
            output.mux(stream.encode(None))
        return path.read_bytes()


@functools.cache
def audio_only() -> bytes:
    """An MP4 with one AAC track and no video track."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "audio.mp4"
        with av.open(str(path), "w", format="mp4") as output:
            stream: Any = output.add_stream("aac", rate=48000)
            stream.layout = "mono"
            for index in range(20):
                frame = av.AudioFrame(format="fltp", layout="mono", samples=1024)
                frame.planes[0].update(bytes(4 * 1024))
                frame.sample_rate = 48000
                frame.pts = index * 1024
                output.mux(stream.encode(frame))
            output.mux(stream.encode(None))
        return path.read_bytes()


def top_level_boxes(data: bytes) -> list[tuple[str, int, int]]:
    """(type, offset, size) of each top-level box."""
    boxes, position = [], 0
    while position < len(data):
        size, kind = struct.unpack_from(">I4s", data, position)
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, position + 8)
        boxes.append((kind.decode("latin-1"), position, size))
        position += size
    return boxes


def box(data: bytes, kind: str) -> tuple[int, int]:
    """(offset, size) of the first top-level box of this type."""
    return next((offset, size) for found, offset, size in top_level_boxes(data) if found == kind)
