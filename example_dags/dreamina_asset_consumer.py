"""Runs whenever the content pipeline publishes new videos, and writes a summary of them.

The summary (count, total seconds of video as measured by the download, SHA-256 of each file) is
read from the manifests the download task wrote beside each video (``<video>.json``), and saved as ``summary.json`` in the
same folder.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from airflow.sdk import DAG, Asset, ObjectStoragePath, task

from airflow_provider_dreamina.operators.dreamina import MANIFEST_SUFFIX

DAILY_VIDEOS = Asset(name="dreamina_daily_videos", uri="dreamina://videos/daily")
# Only for a manifest written before videos were measured: 121 frames is about 5 s at 24 fps.
FRAMES_PER_SECOND = 24


def video_seconds(manifest: dict[str, Any]) -> float | None:
    """The video's measured length (the download checked it), else what its frame count implies."""
    video = manifest.get("video") or {}
    if isinstance(video.get("duration_seconds"), (int, float)):
        return round(float(video["duration_seconds"]), 3)
    frames = manifest.get("frames")
    return round(int(frames) / FRAMES_PER_SECOND, 2) if frames else None


@task
def summarize(*, triggering_asset_events: Any = None) -> dict[str, Any]:
    files: list[str] = []
    for events in triggering_asset_events.values():
        for event in events:
            files.extend(event.extra.get("files", []))
    videos = []
    for uri in files:
        video = ObjectStoragePath(uri)
        manifest = json.loads(video.with_name(video.name + MANIFEST_SUFFIX).read_text())
        videos.append(
            {
                "uri": uri,
                "sha256": manifest["sha256"],
                "bytes": manifest["bytes"],
                "seconds": video_seconds(manifest),
            }
        )
    summary: dict[str, Any] = {
        "count": len(videos),
        "total_seconds": round(sum(video["seconds"] or 0 for video in videos), 2),
        "sha256": [video["sha256"] for video in videos],
        "videos": videos,
    }
    if files:
        target = ObjectStoragePath(files[0]).parent / "summary.json"
        target.write_text(json.dumps(summary, indent=2))
        summary["summary_uri"] = str(target)
    return summary


with DAG(
    dag_id="dreamina_asset_consumer",
    description="Summarise the videos each content-pipeline run publishes",
    schedule=[DAILY_VIDEOS],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["dreamina", "example"],
    doc_md=__doc__,
) as dag:
    summarize()
