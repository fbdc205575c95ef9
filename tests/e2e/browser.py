"""What the browser tests need besides Airflow: Chromium, Playwright, a real video, screenshots.

Playwright cannot download its own browser here, so it drives Debian's ``chromium``
(``apt-get install chromium``; ``DREAMINA_CHROMIUM`` names another binary). Without one, or
without Playwright or PyAV, the browser tests skip and say how to get what is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    """Debian's Chromium (or ``DREAMINA_CHROMIUM``), None when there is none."""
    named = os.environ.get("DREAMINA_CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    for candidate in ("chromium", "chromium-browser"):
        if found := shutil.which(candidate):
            return found
    return None


def missing_for_browser_tests() -> str | None:
    """Why the browser tests cannot run here (None when they can)."""
    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is not installed: `make install` (the dev extra) installs it"
    if chromium_path() is None:
        return (
            "no Chromium: install Debian's with `apt-get install chromium` (.ci/run does), or set "
            "DREAMINA_CHROMIUM to a Chromium binary (Playwright cannot download its own here)"
        )
    if importlib.util.find_spec("av") is None:
        return "PyAV (`av`) is not installed: `make install` installs it, to make a playable test video"
    return None


def artifacts_dir() -> Path:
    """Where screenshots go: ``DREAMINA_TEST_ARTIFACTS`` or ``test-artifacts/browser`` (ignored by git)."""
    path = Path(os.environ.get("DREAMINA_TEST_ARTIFACTS") or ROOT / "test-artifacts" / "browser")
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_video(
    target: Path, image: Path, *, seconds: int = 4, fps: int = 24, size: tuple[int, int] = (480, 320)
) -> bytes:
    """A real, decodable H.264 MP4 (moov first): a slow zoom into ``image``."""
    import av
    from PIL import Image

    width, height = size
    source = Image.open(image).convert("RGB")
    frames = seconds * fps
    with av.open(str(target), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for index in range(frames):
            zoom = 1 + 0.15 * index / frames
            crop_width, crop_height = source.width / zoom, source.height / zoom
            left, top = (source.width - crop_width) / 2, (source.height - crop_height) / 2
            picture = source.resize((width, height), box=(left, top, left + crop_width, top + crop_height))
            frame = av.VideoFrame.from_image(picture).reformat(format="yuv420p")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return target.read_bytes()


def write_poster(video: Path, image: Path, size: tuple[int, int] = (480, 320)) -> None:
    """A JPEG poster beside a stored video, recorded in its manifest, as ``poster=True`` does."""
    import hashlib

    from PIL import Image

    target = video.with_suffix(".jpg")
    source = Image.open(image).convert("RGB")
    source.resize(size).save(target, "JPEG", quality=85)
    data = target.read_bytes()
    manifest_path = video.with_name(video.name + ".json")
    manifest = json.loads(manifest_path.read_text())
    manifest["poster"] = {
        "file_name": target.name,
        "stored_uri": target.as_uri(),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    manifest_path.write_text(json.dumps(manifest))
