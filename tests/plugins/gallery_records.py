"""Stored videos as the provider leaves them: a file, its manifest, and the event announcing it."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow_provider_dreamina.plugins.records import EventRow

VIDEO = b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 40


def store_video(
    directory: Path,
    request_id: str,
    data: bytes = VIDEO,
    *,
    manifest: dict[str, Any] | None = None,
    write_manifest: bool = True,
    poster: bytes | None = None,
) -> dict[str, Any]:
    """Write ``<request id>.mp4`` and its manifest (and ``<request id>.jpg``, recorded in it, when
    ``poster`` is given); returns the event output entry."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{request_id}.mp4"
    path.write_bytes(data)
    output = {
        "uri": path.as_uri(),
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "content_type": "video/mp4",
    }
    if write_manifest:
        recorded = {
            "request_id": request_id,
            "model_id": "bytedance/dreamina-3-0/pro/image-to-video",
            "prompt": f"prompt of {request_id}",
            "seed": 42,
            "frames": 121,
            "stored_uri": output["uri"],
            "file_name": path.name,
            "bytes": len(data),
            "sha256": output["sha256"],
            "content_type": "video/mp4",
            "cost_usd": 0.5,
            **(recorded_poster(directory / f"{request_id}.jpg", poster) if poster is not None else {}),
            **(manifest or {}),
        }
        (directory / f"{path.name}.json").write_text(json.dumps(recorded))
    return output


def recorded_poster(path: Path, image: bytes) -> dict[str, Any]:
    """Write a poster as the download does, and the manifest's entry that records it."""
    path.write_bytes(image)
    entry = {"file_name": path.name, "stored_uri": path.as_uri(), "bytes": len(image)}
    return {"poster": {**entry, "sha256": hashlib.sha256(image).hexdigest()}}


def event(
    event_id: int,
    request_id: str,
    outputs: list[dict[str, Any]],
    *,
    dag_id: str = "dag_a",
    when: datetime | None = None,
    map_index: int = -1,
) -> EventRow:
    return EventRow(
        id=event_id,
        timestamp=when or datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc),
        extra={"request_id": request_id, "uris": [o["uri"] for o in outputs], "outputs": outputs},
        dag_id=dag_id,
        task_id="download",
        run_id="manual__1",
        map_index=map_index,
    )


def next_tick(path: Path) -> None:
    """Until the file system's clock has moved past ``path``'s last change (one tick at most).

    On kernels with coarse time stamps, two changes within one tick leave the same ctime; a test
    that needs a change to be seen waits for the next tick (not for a fixed time).
    """
    changed = path.stat().st_ctime_ns
    scratch = path.with_name(".tick")
    while True:
        scratch.write_bytes(b"")
        if scratch.stat().st_ctime_ns > changed:
            scratch.unlink()
            return
