"""Real outputs for the emulator: a slow camera move over the submitted image, as H.264 in MP4.

A client that saves, checks, decodes or plays the emulator's videos then meets what it would meet
with Dreamina: a playable file of exactly the requested frames at 24 fps whose shape follows the
input image. Rendering needs PyAV (the `emulator` extra); it runs on a worker thread so the event
loop keeps serving, and each distinct input is rendered once.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import tempfile
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from PIL import Image

from airflow_provider_dreamina.defaults import FRAMES_PER_SECOND
from airflow_provider_dreamina.emulator.media import output_dimensions

INSTALL_HINT = "pip install 'airflow-provider-dreamina[emulator]'"
# How far the camera moves in: the frame shows at least 1 / MAX_ZOOM of the image's width and height.
MIN_ZOOM = 1.1
MAX_ZOOM = 1.2
# x264's output depends on its thread count: fixing it keeps renders identical on every machine.
ENCODER_THREADS = 2
ENCODER_OPTIONS = {"preset": "veryfast", "crf": "23"}
CACHE_BYTES = 256 * 1024 * 1024
CACHE_ENTRIES = 64
_LUMA_RANGE = [16 + value * 219 // 255 for value in range(256)]
_CHROMA_RANGE = [16 + value * 224 // 255 for value in range(256)]
MOVES = ("zoom_in", "zoom_out", "pan_left", "pan_right", "pan_up", "pan_down")


Box = tuple[float, float, float, float]


class RendererUnavailable(RuntimeError):
    """PyAV, which the emulator renders videos with, is not installed."""


def require_renderer() -> ModuleType:
    """Import PyAV, or say what to install.

    :raises RendererUnavailable: when PyAV is missing or lacks the libx264 encoder.
    """
    try:
        import av
    except ImportError as error:
        raise RendererUnavailable(
            "the emulator renders its videos with PyAV, which is not installed: "
            f"run `{INSTALL_HINT}` (or set output_bytes to serve synthetic MP4s without rendering)"
        ) from error
    try:
        av.codec.Codec("libx264", "w")
    except av.error.FFmpegError as error:  # pragma: no cover - every PyAV wheel bundles libx264
        raise RendererUnavailable(
            f"this PyAV build has no libx264 encoder: install PyAV's own wheel with `{INSTALL_HINT}`"
        ) from error
    return av


@dataclass(frozen=True)
class RenderRequest:
    """Everything an output depends on: the same request always renders the same bytes."""

    image: bytes = field(repr=False)
    prompt: str
    seed: int
    frames: int
    long_side: int
    # Outputs of one job differ by their index, as separate generations would.
    variant: int = 0

    @property
    def key(self) -> str:
        digest = hashlib.sha256(self.image).hexdigest()
        parts = [digest, self.prompt, self.seed, self.frames, self.long_side, self.variant]
        return hashlib.sha256(repr(parts).encode()).hexdigest()


@dataclass(frozen=True)
class CameraMove:
    """A camera path: zoom factor and centre (as fractions of the image) at the start and the end."""

    kind: str
    zoom: tuple[float, float]
    centre: tuple[tuple[float, float], tuple[float, float]]

    def box(self, progress: float, width: int, height: int) -> Box:
        """The part of a `width` x `height` image the camera shows at `progress` (0 to 1)."""
        # Smoothstep: the camera eases in and out instead of jerking at the first and last frame.
        eased = progress * progress * (3 - 2 * progress)
        zoom = self.zoom[0] + (self.zoom[1] - self.zoom[0]) * eased
        (x0, y0), (x1, y1) = self.centre
        box_width, box_height = width / zoom, height / zoom
        centre_x = (x0 + (x1 - x0) * eased) * width
        centre_y = (y0 + (y1 - y0) * eased) * height
        left = min(max(centre_x - box_width / 2, 0.0), width - box_width)
        top = min(max(centre_y - box_height / 2, 0.0), height - box_height)
        return (left, top, left + box_width, top + box_height)


def camera_move(request: RenderRequest) -> CameraMove:
    """The move for a request, chosen by its image, prompt, seed and variant (never at random).

    The kind of move and how far it goes both vary, so two requests almost never look alike.
    """
    digest = hashlib.sha256(f"{request.key}/move".encode()).digest()
    kind = MOVES[int.from_bytes(digest[:4], "big") % len(MOVES)]
    zoom = MIN_ZOOM + (MAX_ZOOM - MIN_ZOOM) * int.from_bytes(digest[4:6], "big") / 0xFFFF
    middle = (0.5, 0.5)
    if kind == "zoom_in":
        return CameraMove(kind, (1.0, zoom), (middle, middle))
    if kind == "zoom_out":
        return CameraMove(kind, (zoom, 1.0), (middle, middle))
    # A pan sweeps across the room a zoomed-in frame leaves on each side.
    span = (1 - 1 / zoom) / 2
    start, end = 0.5 - span, 0.5 + span
    centres = {
        "pan_left": ((end, 0.5), (start, 0.5)),
        "pan_right": ((start, 0.5), (end, 0.5)),
        "pan_up": ((0.5, end), (0.5, start)),
        "pan_down": ((0.5, start), (0.5, end)),
    }
    return CameraMove(kind, (zoom, zoom), centres[kind])


def render(request: RenderRequest) -> bytes:
    """Encode the request's video: `frames` frames at 24 fps, the index (`moov`) before the frames.

    :raises RendererUnavailable: without PyAV.
    """
    av = require_renderer()
    with Image.open(io.BytesIO(request.image)) as opened:
        source = opened.convert("RGB")
    width, height = output_dimensions(source.width, source.height, request.long_side)
    # Frames are cut from planes just large enough for the deepest zoom, so each cut is cheap.
    working = source.resize(
        (round(width * MAX_ZOOM), round(height * MAX_ZOOM)), Image.Resampling.LANCZOS, reducing_gap=2.0
    )
    planes = _yuv_planes(working)
    move = camera_move(request)
    last = max(request.frames - 1, 1)
    # Faststart moves the index in a second pass that reopens the file by name: a path, not a buffer.
    with tempfile.TemporaryDirectory(prefix="dreamina-render-") as directory:
        path = os.path.join(directory, "output.mp4")
        with av.open(path, "w", format="mp4", options={"movflags": "faststart"}) as container:
            stream: Any = container.add_stream("libx264", rate=FRAMES_PER_SECOND, options=ENCODER_OPTIONS)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.thread_count = ENCODER_THREADS
            for index in range(request.frames):
                box = move.box(index / last, working.width, working.height)
                frame = av.VideoFrame(width, height, "yuv420p")
                for target, plane in zip(frame.planes, planes, strict=True):
                    _cut(plane, box, working.size, target)
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        with open(path, "rb") as rendered:
            return rendered.read()


def _yuv_planes(image: Image.Image) -> tuple[Image.Image, Image.Image, Image.Image]:
    """The image as the encoder takes it: Y at full size, Cb and Cr at half, BT.601 limited range.

    Cutting each frame from these, instead of converting every frame from RGB, takes a third of the
    time. Pillow's YCbCr is full range (JPEG's); H.264 players expect 16-235 luma, 16-240 chroma.
    """
    luma, blue, red = image.convert("YCbCr").split()
    half = ((image.width + 1) // 2, (image.height + 1) // 2)
    return (
        luma.point(_LUMA_RANGE),
        blue.resize(half, Image.Resampling.BILINEAR).point(_CHROMA_RANGE),
        red.resize(half, Image.Resampling.BILINEAR).point(_CHROMA_RANGE),
    )


def _cut(plane: Image.Image, box: Box, size: tuple[int, int], target: Any) -> None:
    """Fill one plane of a frame with what `box`, in pixels of an image of `size`, shows of `plane`."""
    scale_x, scale_y = plane.width / size[0], plane.height / size[1]
    left, top, right, bottom = box
    picture = plane.resize(
        (target.width, target.height),
        Image.Resampling.BILINEAR,
        box=(left * scale_x, top * scale_y, right * scale_x, bottom * scale_y),
    )
    # FFmpeg may pad each row: cropping past the right edge adds that padding as zeros.
    target.update(picture.crop((0, 0, target.line_size, target.height)).tobytes())


class RenderCache:
    """Renders on one worker thread, at most once per distinct request, and keeps recent results.

    Concurrent downloads of an output being rendered wait for that one render; a client that hangs
    up does not cancel it, so its retry finds the result ready.
    """

    def __init__(self, *, max_bytes: int = CACHE_BYTES, max_entries: int = CACHE_ENTRIES) -> None:
        self._max_bytes = max_bytes
        self._max_entries = max_entries
        self._done: OrderedDict[str, bytes] = OrderedDict()
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        # One worker: renders queue up instead of fighting over the cores the clients need too.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emulator-render")
        self.renders = 0

    async def get(self, request: RenderRequest) -> bytes:
        key = request.key
        cached = self._done.get(key)
        if cached is not None:
            self._done.move_to_end(key)
            return cached
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().run_in_executor(self._executor, render, request)
            self._pending[key] = pending
            pending.add_done_callback(lambda future: self._settle(key, future))
            self.renders += 1
        return await asyncio.shield(pending)

    def _settle(self, key: str, future: asyncio.Future[bytes]) -> None:
        self._pending.pop(key, None)
        if future.cancelled() or future.exception() is not None:
            return
        self._done[key] = future.result()
        while len(self._done) > 1 and (
            len(self._done) > self._max_entries or sum(map(len, self._done.values())) > self._max_bytes
        ):
            self._done.popitem(last=False)
