"""What the download task records, the gallery serves: the real operator's event and manifest.

The gallery refuses anything its record does not vouch for; this holds the two sides together, on
a local disk and in an object store, with the emulator's real output.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from airflow.sdk import Asset
from airflow.sdk.execution_time.context import OutletEventAccessors
from fastapi.testclient import TestClient

from airflow_provider_dreamina.emulator import EmulatorHandle
from airflow_provider_dreamina.hooks.dreamina import DreaminaHook
from airflow_provider_dreamina.models import ImageToVideoInput
from airflow_provider_dreamina.operators.dreamina import DreaminaDownloadOperator
from airflow_provider_dreamina.plugins.records import EventRow
from tests.helpers import FakeTI
from tests.plugins.conftest import FakeCatalog


@pytest.mark.parametrize("destination", ["local", "memory"])
def test_a_downloaded_video_is_served_as_recorded(
    emulator: EmulatorHandle,
    served: TestClient,
    fake: FakeCatalog,
    tmp_path: Path,
    destination: str,
    request: pytest.FixtureRequest,
) -> None:
    if destination == "memory":
        request.getfixturevalue("memory_storage")
    emulator.script_jobs(queue_seconds=0, run_seconds=0)
    prompt = ImageToVideoInput(prompt="a lighthouse at dusk", image_urls=[emulator.sample_image_url], seed=7)
    with DreaminaHook() as hook:
        request_id = hook.submit(prompt).request_id
        output_url = hook.get_result(request_id).output_urls[0]
    video = httpx.get(output_url, trust_env=False).content
    asset = Asset("dreamina_videos")
    events = OutletEventAccessors()
    operator = DreaminaDownloadOperator(
        task_id="download",
        request_id=request_id,
        destination=str(tmp_path) if destination == "local" else f"memory://gallery-{tmp_path.name}",
        outlets=[asset],
    )
    operator.execute(cast(Any, {"outlet_events": events, "ti": FakeTI()}))
    extra = dict(events[asset].extra)
    fake.events.append(EventRow(1, datetime.now(timezone.utc), extra, "dag_a", "download", "manual__1", -1))

    (card,) = served.get("/api/generations").json()["generations"]
    assert card["playable"], card["problem"]
    whole = served.get(card["video_url"])
    assert (whole.status_code, whole.content) == (200, video)
    part = served.get(card["video_url"], headers={"Range": "bytes=10-19"})
    assert (part.status_code, part.content) == (206, video[10:20])
