"""The emulator's money: price and schema, cost in results, a balance that succeeded jobs lower.

RunComfy documents none of it, so each of the three answers can be switched off.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from airflow_provider_dreamina.emulator import MODEL_ID, EmulatorHandle
from tests.helpers import wait_until

SUBMIT_PATH = f"/v1/models/{MODEL_ID}"
BALANCE_PATH = "/prod/v2/balance"


def submit(api: httpx.Client, emulator: EmulatorHandle, **fields: Any) -> httpx.Response:
    body = {"prompt": "a paper boat on a rainy street", "image_urls": [emulator.sample_image_url]}
    return api.post(SUBMIT_PATH, json={**body, **fields})


def finished(api: httpx.Client, emulator: EmulatorHandle, frames: int = 121, **behaviour: Any) -> str:
    """Submit a job scripted to end at once; returns its request id."""
    emulator.script_jobs(queue_seconds=0, run_seconds=0, **behaviour)
    response = submit(api, emulator, frames=frames)
    assert response.status_code == 200, response.text
    request_id: str = response.json()["request_id"]
    return request_id


def cost(api: httpx.Client, request_id: str) -> Any:
    return api.get(f"/v1/requests/{request_id}/result", params={"include_cost": "true"}).json().get("cost")


def test_balance_answers_usd_and_each_succeeded_job_lowers_it(
    api: httpx.Client, emulator: EmulatorHandle
) -> None:
    emulator.configure(balance_usd=10.0, price_usd=0.5)
    assert api.get(BALANCE_PATH).json() == {"balance_usd": 10.0, "currency": "USD"}

    done = [finished(api, emulator) for _ in range(3)]
    finished(api, emulator, outcome="failed")
    emulator.script_jobs(queue_seconds=60)
    queued = submit(api, emulator).json()["request_id"]
    api.post(f"/v1/requests/{queued}/cancel")

    assert [cost(api, request_id) for request_id in done] == [0.5, 0.5, 0.5]
    assert api.get(BALANCE_PATH).json()["balance_usd"] == pytest.approx(8.5)
    counters = emulator.counters()
    assert counters["generations_charged"] == 3
    assert counters["cost_usd_charged"] == pytest.approx(1.5)
    assert counters["balance_usd"] == pytest.approx(8.5)
    assert counters["calls"]["balance"] == 2


def test_a_job_is_charged_when_it_succeeds_not_when_submitted(
    api: httpx.Client, emulator: EmulatorHandle
) -> None:
    emulator.configure(balance_usd=2.0, price_usd=0.5)
    emulator.script_jobs(queue_seconds=2, run_seconds=0.3)  # not done yet however busy the machine
    submit(api, emulator)

    assert api.get(BALANCE_PATH).json()["balance_usd"] == 2.0
    assert emulator.counters()["cost_usd_charged"] == 0
    wait_until(lambda: emulator.counters()["generations_charged"] == 1)
    assert api.get(BALANCE_PATH).json()["balance_usd"] == pytest.approx(1.5)


def test_setting_the_balance_again_starts_from_it(api: httpx.Client, emulator: EmulatorHandle) -> None:
    emulator.configure(balance_usd=5.0)
    finished(api, emulator)
    emulator.configure(balance_usd=3.0)
    finished(api, emulator)

    assert api.get(BALANCE_PATH).json()["balance_usd"] == pytest.approx(2.5)
    assert emulator.counters()["cost_usd_charged"] == pytest.approx(1.0)


def test_a_price_per_second_charges_frames_over_24(api: httpx.Client, emulator: EmulatorHandle) -> None:
    emulator.configure(balance_usd=10.0, price_usd=0.1, price_unit="second")
    short = finished(api, emulator, frames=121)
    long = finished(api, emulator, frames=241)

    model = api.get(SUBMIT_PATH).json()
    assert (model["base_price_usd"], model["price_unit"]) == (0.1, "second")
    assert cost(api, short) == pytest.approx(0.1 * 121 / 24)
    assert cost(api, long) == pytest.approx(0.1 * 241 / 24)
    assert emulator.counters()["cost_usd_charged"] == pytest.approx(0.1 * 362 / 24)


def test_an_unlimited_balance_is_answered_without_a_figure(
    api: httpx.Client, emulator: EmulatorHandle
) -> None:
    assert emulator.config()["balance_usd"] is None

    assert api.get(BALANCE_PATH).json() == {"currency": "USD"}
    assert emulator.counters()["balance_usd"] is None


def test_the_balance_needs_the_token(api: httpx.Client, emulator: EmulatorHandle) -> None:
    response = httpx.get(f"{emulator.base_url}{BALANCE_PATH}", trust_env=False)

    assert response.status_code == 401


@pytest.mark.parametrize(
    ("switch", "call"),
    [
        ("offer_model_info", lambda api: api.get(SUBMIT_PATH)),
        ("offer_balance", lambda api: api.get(BALANCE_PATH)),
    ],
)
def test_model_info_and_balance_can_be_switched_off(
    api: httpx.Client, emulator: EmulatorHandle, switch: str, call: Any
) -> None:
    emulator.configure(balance_usd=1.0)
    assert call(api).status_code == 200

    emulator.configure(**{switch: False})

    response = call(api)
    assert response.status_code == 404
    assert response.json()["error_code"] == 404001


def test_cost_in_results_can_be_switched_off(api: httpx.Client, emulator: EmulatorHandle) -> None:
    emulator.configure(offer_cost=False, balance_usd=1.0)
    request_id = finished(api, emulator)

    assert cost(api, request_id) is None
    # Still charged: RunComfy would not tell the cost, but would take it.
    assert emulator.counters()["cost_usd_charged"] == 0.5
