"""What a generation cost is recorded wherever its outcome goes: the operator's result, the trigger
event, the manifest, every asset event's extra and the log line that ends a wait; null when
RunComfy does not report it."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any, cast

import pytest
from airflow.sdk import Asset, AssetAlias
from airflow.sdk.execution_time.context import OutletEventAccessors

from airflow_provider_dreamina.emulator import EmulatorHandle
from airflow_provider_dreamina.hooks.dreamina import DreaminaHook
from airflow_provider_dreamina.models import ImageToVideoInput
from airflow_provider_dreamina.operators.dreamina import (
    DreaminaDownloadOperator,
    DreaminaImageToVideoOperator,
)
from airflow_provider_dreamina.triggers.dreamina import DreaminaRequestTrigger
from tests.helpers import FakeTI, make_context

PRICE = 0.37


def generate(emulator: EmulatorHandle) -> dict[str, Any]:
    operator = DreaminaImageToVideoOperator(
        task_id="generate",
        prompt="a paper boat on a rainy street",
        image_url=emulator.sample_image_url,
        wait_for_completion=True,
        deferrable=False,
        poll_interval=0.1,
    )
    result: dict[str, Any] = operator.execute(make_context())
    return result


def trigger_event(emulator: EmulatorHandle) -> dict[str, Any]:
    request = ImageToVideoInput(prompt="waves on a pier", image_urls=[emulator.sample_image_url])
    request_id = DreaminaHook().submit(request).request_id

    async def run() -> list[dict[str, Any]]:
        try:
            return [
                event.payload async for event in DreaminaRequestTrigger(request_id, poll_interval=0.1).run()
            ]
        finally:
            await DreaminaHook.aclose_shared_clients()

    (event,) = asyncio.run(run())
    return event


def download(emulator: EmulatorHandle, tmp_path: Path) -> tuple[dict[str, Any], Any, Any]:
    """Generate, then save; returns the manifest and the asset and alias events."""
    request_id = generate(emulator)["request_id"]
    asset, alias = Asset("dreamina_videos"), AssetAlias("dreamina_new_videos")
    events = OutletEventAccessors()
    operator = DreaminaDownloadOperator(
        task_id="download", request_id=request_id, destination=str(tmp_path), outlets=[asset, alias]
    )
    operator.execute(cast(Any, {"outlet_events": events, "ti": FakeTI()}))
    manifest = json.loads((tmp_path / f"{request_id}.mp4.json").read_text())
    return manifest, events[asset].extra, events[alias].asset_alias_events


def test_the_cost_reaches_result_event_manifest_and_asset_events(
    emulator: EmulatorHandle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.configure(price_usd=PRICE)

    with caplog.at_level(logging.INFO, logger="airflow_provider_dreamina"):
        result = generate(emulator)
    assert result["cost_usd"] == PRICE
    assert f"succeeded: 1 output(s), cost {PRICE:.4f} USD" in caplog.text

    event = trigger_event(emulator)
    assert event["cost_usd"] == PRICE
    assert event["result"]["cost"] == PRICE
    completed = DreaminaImageToVideoOperator(
        task_id="t", prompt="p", image_url="https://x.runcomfy.net/i.png"
    )
    assert completed.execute_complete(make_context(), event)["cost_usd"] == PRICE

    manifest, asset_extra, alias_events = download(emulator, tmp_path)
    assert manifest["cost_usd"] == PRICE
    assert asset_extra["cost_usd"] == PRICE
    assert [alias_event.extra["cost_usd"] for alias_event in alias_events] == [PRICE]
    # Every generation made here was charged what its records say.
    assert emulator.counters()["cost_usd_charged"] == pytest.approx(3 * PRICE)


def test_a_cost_not_reported_is_null_everywhere(
    emulator: EmulatorHandle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.configure(offer_cost=False)

    with caplog.at_level(logging.INFO, logger="airflow_provider_dreamina"):
        assert generate(emulator)["cost_usd"] is None
    assert "cost not reported" in caplog.text
    assert trigger_event(emulator)["cost_usd"] is None
    manifest, asset_extra, alias_events = download(emulator, tmp_path)
    assert manifest["cost_usd"] is None
    assert asset_extra["cost_usd"] is None
    assert [alias_event.extra["cost_usd"] for alias_event in alias_events] == [None]
