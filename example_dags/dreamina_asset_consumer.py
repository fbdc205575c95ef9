"""Runs whenever the content pipeline publishes new videos, and writes a summary of them.

The summary (count, total seconds of video, SHA-256 of each file) is read from the manifests the
download task wrote beside each video (``<video>.json``), and saved as ``summary.json`` in the
same folder.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from airflow.sdk import DAG, Asset, ObjectStoragePath, task

from airflow_provider_dreamina.operators.dreamina import MANIFEST_SUFFIX

DAILY_VIDEOS = Asset(name="dreamina_daily_videos", uri="dreamina://videos/daily")
# Dreamina renders 24 frames per second: 121 frames is about 5 s, 241 about 10 s.
FRAMES_PER_SECOND = 24


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
        frames = manifest.get("frames")
        videos.append(
            {
                "uri": uri,
                "sha256": manifest["sha256"],
                "bytes": manifest["bytes"],
                "seconds": round(int(frames) / FRAMES_PER_SECOND, 2) if frames else None,
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
