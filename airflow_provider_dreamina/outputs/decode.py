"""Deeper checks of a saved video with PyAV (the `video` extra): decode every frame, cut a poster.

Reading the boxes (`airflow_provider_dreamina.outputs.video`) proves a file is a complete MP4 with a video
track; only decoding proves its frames are pictures. That costs CPU seconds per video and FFmpeg,
so it is optional and PyAV is imported only when one of these runs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from types import ModuleType
from typing import IO, Any, BinaryIO

from airflow_provider_dreamina.exceptions import DreaminaInvalidVideoError

INSTALL_HINT = "pip install 'airflow-provider-dreamina[video]'"
POSTER_QUALITY = 85

Source = str | os.PathLike[str] | BinaryIO


def require_av() -> ModuleType:
    """Import PyAV, or say what to install.

    :raises ImportError: when PyAV is missing.
    """
    try:
        import av
    except ImportError as error:
        raise ImportError(
            "verify='decode' and poster=True decode videos with PyAV, which is not installed: "
            f"run `{INSTALL_HINT}`",
            name="av",
        ) from error
    return av


def decode_all(source: Source, *, name: str = "the output", poster: IO[bytes] | None = None) -> int:
    """Decode every frame of a video and return how many there were.

    :param source: a path, or a seekable binary file object (read from its start, left where it was).
    :param name: how messages name the video.
    :param poster: where to write a JPEG of the middle frame (by count), saving a second pass.
    :raises DreaminaInvalidVideoError: when a frame does not decode, or fewer frames decode than the
        container lists.
    :raises ImportError: without PyAV.
    """
    av = require_av()
    try:
        with _opened(av, source) as container:
            stream = _video_stream(container, name)
            listed = int(stream.frames)
            middle = listed // 2
            decoded = 0
            for frame in container.decode(stream):
                if poster is not None and decoded == middle:
                    _save_jpeg(frame, poster)
                    poster = None
                decoded += 1
    except av.error.FFmpegError as error:
        raise DreaminaInvalidVideoError(f"{name} does not decode: {error}") from error
    if decoded == 0 or decoded < listed:
        raise DreaminaInvalidVideoError(f"{name} decodes to {decoded} of the {listed} frames it lists")
    return decoded


def write_poster(source: Source, out: IO[bytes], *, name: str = "the output") -> float:
    """Write a JPEG of the frame in the middle of a video to `out`; return that frame's time in seconds.

    Seeks to the key frame before the middle and decodes from there, not from the start.

    :raises DreaminaInvalidVideoError: when the video does not decode up to its middle.
    :raises ImportError: without PyAV.
    """
    av = require_av()
    try:
        with _opened(av, source) as container:
            stream = _video_stream(container, name)
            middle = _middle_pts(av, container, stream)
            container.seek(middle, stream=stream, backward=True)
            chosen = None
            for frame in container.decode(stream):
                chosen = frame
                if frame.pts is not None and frame.pts >= middle:
                    break
    except av.error.FFmpegError as error:
        raise DreaminaInvalidVideoError(f"{name} does not decode: {error}") from error
    if chosen is None:
        raise DreaminaInvalidVideoError(f"{name} has no frame to make a poster of")
    _save_jpeg(chosen, out)
    return float(chosen.time or 0.0)


def _middle_pts(av: ModuleType, container: Any, stream: Any) -> int:
    """The middle of the video, in the stream's time base."""
    start = stream.start_time or 0
    if stream.duration:
        return int(start + stream.duration // 2)
    if container.duration:
        return int(start + container.duration / av.time_base / 2 / stream.time_base)
    return int(start)


@contextlib.contextmanager
def _opened(av: ModuleType, source: Source) -> Iterator[Any]:
    if isinstance(source, (str, os.PathLike)):
        with av.open(os.fspath(source), mode="r") as container:
            yield container
        return
    position = source.tell()
    source.seek(0)
    try:
        with av.open(source, mode="r") as container:
            yield container
    finally:
        source.seek(position)


def _video_stream(container: Any, name: str) -> Any:
    if not container.streams.video:
        raise DreaminaInvalidVideoError(f"{name} has no video track")
    stream = container.streams.video[0]
    # Frame threads decode faster; the frames come out the same.
    stream.thread_type = "AUTO"
    return stream


def _save_jpeg(frame: Any, out: IO[bytes]) -> None:
    frame.to_image().save(out, format="JPEG", quality=POSTER_QUALITY)
