"""What a person sees: generations as cards (HTML page) and as JSON, with readable values.

Values are formatted once here, so the page and the JSON agree (a duration is the measured one
when the manifest has it, else about ``frames / 24``, marked as an estimate).

The pages run no script and load nothing from elsewhere; :data:`SECURITY_HEADERS` (sent with every
answer of the app) says so to the browser, allowing the one inline style sheet by its hash.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape

from airflow_provider_dreamina.defaults import FRAMES_PER_SECOND
from airflow_provider_dreamina.plugins.catalog import Filters, Page
from airflow_provider_dreamina.plugins.records import Generation

_TEMPLATES = Path(__file__).parent / "templates"
_environment = Environment(
    loader=FileSystemLoader(_TEMPLATES), autoescape=select_autoescape(default=True), auto_reload=False
)


def _style_hashes() -> list[str]:
    """CSP sources for the style sheets the templates inline (``style.html``), by their SHA-256."""
    style = _environment.get_template("style.html").render()
    blocks = re.findall(r"<style>(.*?)</style>", style, flags=re.DOTALL)
    return [
        f"'sha256-{base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()}'" for block in blocks
    ]


#: What the browser may do with any answer of the gallery: nothing from another origin, no script,
#: no plugin, framed only by the Airflow UI (same origin), never sniffed as another type.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'none'",
        f"style-src {' '.join(_style_hashes())}",
        "img-src 'self'",
        "media-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'self'",
    ]
)
#: The headers the gallery app adds to every answer, errors included.
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "SAMEORIGIN",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # Another site cannot embed a stored video or poster with the viewer's Airflow session.
    "Cross-Origin-Resource-Policy": "same-origin",
}


class Urls:
    """Where things are, seen from the browser: this app's URLs and the Airflow UI's."""

    def __init__(self, app_root: str, ui_root: str) -> None:
        self.app_root = app_root.rstrip("/")
        self.ui_root = ui_root.rstrip("/")

    def gallery(self, **query: Any) -> str:
        clean = {key: value for key, value in query.items() if value not in (None, "")}
        return f"{self.app_root}/" + (f"?{urlencode(clean)}" if clean else "")

    def video(self, generation: Generation) -> str:
        return f"{self.app_root}/media/{generation.event_id}/{generation.index}/video"

    def poster(self, generation: Generation) -> str:
        return f"{self.app_root}/media/{generation.event_id}/{generation.index}/poster"

    def dag_run(self, generation: Generation) -> str:
        dag_id, run_id = quote(generation.dag_id, safe=""), quote(generation.run_id, safe="")
        return f"{self.ui_root}/dags/{dag_id}/runs/{run_id}"

    def task(self, generation: Generation) -> str:
        url = f"{self.dag_run(generation)}/tasks/{quote(generation.task_id, safe='')}"
        return url + (f"/mapped/{generation.map_index}" if generation.map_index >= 0 else "")


def duration_text(generation: Generation) -> str | None:
    if generation.duration_seconds is not None:
        return f"{generation.duration_seconds:.2f} s"
    if generation.frames:
        return f"about {generation.frames / FRAMES_PER_SECOND:.1f} s"
    return None


def cost_text(cost: float | None) -> str | None:
    if cost is None:
        return None
    return f"${cost:.2f}" if cost >= 0.1 else f"${cost:.4f}".rstrip("0").rstrip(".")


def size_text(size: int | None) -> str | None:
    if size is None:
        return None
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def time_text(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else ""


def resolution_text(facts: Mapping[str, Any]) -> str | None:
    width, height = facts.get("width"), facts.get("height")
    if isinstance(width, int) and isinstance(height, int):
        codec = facts.get("codec")
        return f"{width}\u00d7{height}" + (f" {str(codec).upper()}" if codec else "")
    return None


def card(generation: Generation, urls: Urls) -> dict[str, Any]:
    """Everything one card shows (the JSON answer is the same, minus presentation)."""
    seed = generation.seed
    return {
        "key": generation.key,
        "request_id": generation.request_id,
        "dag_id": generation.dag_id,
        "run_id": generation.run_id,
        "task_id": generation.task_id,
        "map_index": generation.map_index,
        "recorded_at": generation.recorded_at.isoformat() if generation.recorded_at else None,
        "recorded_text": time_text(generation.recorded_at),
        "prompt": generation.prompt,
        "seed": seed,
        "seed_text": "random" if seed == -1 else (str(seed) if seed is not None else None),
        "frames": generation.frames,
        "duration_seconds": generation.duration_seconds,
        "duration_text": duration_text(generation),
        "resolution_text": resolution_text(generation.facts),
        "cost_usd": generation.cost_usd,
        "cost_text": cost_text(generation.cost_usd),
        "model_id": generation.model_id,
        "file_name": generation.video.name,
        "stored_uri": generation.video.uri,
        "content_type": generation.video.content_type,
        "bytes": generation.video.size,
        "size_text": size_text(generation.video.size),
        "sha256": generation.video.sha256,
        "playable": generation.playable,
        "problem": generation.problem or None,
        "video_url": urls.video(generation) if generation.playable else None,
        "poster_url": urls.poster(generation) if generation.playable and generation.poster else None,
        "gallery_url": urls.gallery(request_id=generation.request_id),
        "dag_run_url": urls.dag_run(generation),
        "task_url": urls.task(generation),
    }


def render_gallery(page: Page, filters: Filters, dag_ids: list[str], urls: Urls, *, limit: int) -> str:
    cards = [card(generation, urls) for generation in page.generations]
    active = bool(filters.dag_id or filters.day or filters.request_id)
    query = {"dag_id": filters.dag_id, "day": filters.day.isoformat() if filters.day else None}
    older = urls.gallery(**query, request_id=filters.request_id, before=page.older_than, limit=limit)
    return _environment.get_template("gallery.html").render(
        cards=cards,
        dag_ids=dag_ids,
        filters=filters,
        day=filters.day.isoformat() if filters.day else "",
        today=date.today().isoformat(),
        active=active,
        clear_url=urls.gallery(),
        without_request_url=urls.gallery(**query),
        older_url=older if page.older_than is not None else None,
    )


def render_signed_out(login: str | None, status: int) -> str:
    return _environment.get_template("signed_out.html").render(login=login, status=status)
