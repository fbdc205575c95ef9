"""Runs whenever the content pipeline publishes new videos, and writes a summary of them.

The summary (count, total seconds of video, what the videos cost in all and per second of video,
SHA-256 of each file) is read from the manifests the download task wrote beside each video
(``<video>.json``), and saved as ``summary.json`` in the same folder. A video's seconds are its
measured duration when the manifest has one, else frames / 24.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from airflow.sdk import DAG, Asset, ObjectStoragePath, task

DAILY_VIDEOS = Asset(name="dreamina_daily_videos", uri="dreamina://videos/daily")


# [START howto_dreamina_asset_consumer]
@task
def summarize(*, triggering_asset_events: Any = None) -> dict[str, Any]:
    from airflow_provider_dreamina.submission.spend import actual_spend, read_manifests

    files: list[str] = []
    for events in triggering_asset_events.values():
        for event in events:
            files.extend(event.extra.get("files", []))
    manifests = read_manifests(files)
    videos = [
        {
            "uri": uri,
            "sha256": manifest.sha256,
            "bytes": manifest.size_bytes,
            "seconds": round(manifest.video_seconds, 2) if manifest.video_seconds else None,
            "cost_usd": manifest.cost_usd,
        }
        for uri, manifest in zip(files, manifests, strict=True)
    ]
    spent = actual_spend(manifests)
    summary: dict[str, Any] = {
        "count": len(videos),
        "total_seconds": spent["video_seconds"],
        "total_cost_usd": spent["total_cost_usd"],
        "cost_per_second_usd": spent["cost_per_second_usd"],
        "cost_unreported": spent["cost_unreported"],
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
# [END howto_dreamina_asset_consumer]
