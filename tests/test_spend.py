"""The spend module: a batch's plan against its budget and the balance, and what a batch did cost."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from airflow_provider_dreamina.emulator import EmulatorHandle
from airflow_provider_dreamina.exceptions import DreaminaBudgetExceededError
from airflow_provider_dreamina.hooks.dreamina import DreaminaHook
from airflow_provider_dreamina.outputs.manifest import Manifest
from airflow_provider_dreamina.submission.spend import actual_spend, plan_batch, usd

ROWS = [
    {"prompt": "a lighthouse at dusk", "image_url": "lighthouse.png"},
    {"prompt": "a harbour at dawn", "image_url": "harbour.jpg"},
    {"prompt": "a square at noon", "image_url": "square.png", "frames": 241},
]


def plan(caplog: pytest.LogCaptureFixture, **kwargs: Any) -> Any:
    with caplog.at_level(logging.INFO, logger="airflow_provider_dreamina"):
        return plan_batch(ROWS, hook=DreaminaHook(), **kwargs)


def test_the_plan_logs_each_row_and_the_total(
    emulator: EmulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.configure(balance_usd=10, price_usd=0.5)

    planned = plan(caplog, budget_usd=2)

    assert planned.row_prices_usd == [0.5, 0.5, 0.5]
    assert planned.total_usd == 1.5
    assert planned.unchecked == []
    assert (
        "Row 1 ('a lighthouse at dusk', 121 frames): about 0.5 USD (model info: 0.5 USD per output)"
        in caplog.text
    )
    assert "Row 3 ('a square at noon', 241 frames): about 0.5 USD" in caplog.text
    assert "Estimated cost of the 3 rows: 1.5 USD in all" in caplog.text
    assert "Within the budget of 2 USD" in caplog.text
    assert "Available balance: 10 USD" in caplog.text
    assert emulator.counters()["calls"]["model"] == 1


def test_a_price_per_second_prices_each_row_by_its_frames(
    emulator: EmulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.configure(price_usd=0.1, price_unit="second")

    planned = plan(caplog)

    assert planned.row_prices_usd == pytest.approx([0.1 * 121 / 24, 0.1 * 121 / 24, 0.1 * 241 / 24])
    assert planned.total_usd == pytest.approx(0.1 * 483 / 24)


def test_over_budget_refuses_before_any_submission(
    emulator: EmulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.configure(price_usd=0.5)

    with pytest.raises(DreaminaBudgetExceededError) as caught:
        plan(caplog, budget_usd="1.2")

    assert "its 3 rows would cost about 1.5 USD, over the budget of 1.2 USD (budget_usd)" in str(caught.value)
    assert "nothing was submitted" in str(caught.value)
    assert not caught.value.retryable
    assert emulator.counters()["submissions"] == 0


def test_over_the_balance_above_the_reserve_refuses(
    emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DREAMINA_DEFAULT", emulator.connection_json(min_balance_usd=1))
    emulator.configure(balance_usd=2.4, price_usd=0.5)

    with pytest.raises(DreaminaBudgetExceededError) as caught:
        plan(caplog, budget_usd=100)

    assert "more than the available 1.4 USD (balance 2.4 USD minus the reserve of 1 USD)" in str(caught.value)
    assert emulator.counters()["submissions"] == 0


def test_the_connections_price_stands_in_for_missing_model_info(
    emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DREAMINA_DEFAULT", emulator.connection_json(price_usd=0.8))
    emulator.configure(offer_model_info=False)

    with pytest.raises(DreaminaBudgetExceededError) as caught:
        plan(caplog, budget_usd=2)
    assert "about 2.4 USD, over the budget of 2 USD" in str(caught.value)
    assert "(price_usd of connection 'dreamina_default')" in caplog.text


def test_with_every_endpoint_missing_the_plan_says_what_it_could_not_check(
    emulator: EmulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.configure(offer_model_info=False, offer_balance=False, offer_cost=False)

    planned = plan(caplog, budget_usd=0.01)

    assert planned.total_usd is None
    assert planned.unchecked == ["price", "budget", "balance"]
    assert "Estimated cost of the 3 rows: unknown (no price in RunComfy's model info" in caplog.text
    assert "Could not check the budget of 0.01 USD" in caplog.text
    assert "Could not check the balance" in caplog.text


def test_actual_spend_counts_each_request_once_and_prefers_the_measured_duration() -> None:
    manifests = [
        {"request_id": "a", "cost_usd": 0.5, "frames": 121, "video": {"duration_seconds": 5.0}},
        {"request_id": "b", "cost_usd": 0.25, "frames": 241},
        # A second file of request b: its cost is not counted twice.
        {"request_id": "b", "cost_usd": 0.25, "frames": 241},
        {"request_id": "c", "cost_usd": None, "frames": 121},
    ]

    spent = actual_spend(Manifest.read(manifest) or Manifest() for manifest in manifests)

    assert spent["count"] == 4
    assert spent["total_cost_usd"] == 0.75
    assert spent["cost_unreported"] == 1
    assert spent["video_seconds"] == pytest.approx(5 + 2 * 241 / 24 + 121 / 24, abs=0.01)
    assert spent["cost_per_second_usd"] == pytest.approx(0.75 / (5 + 2 * 241 / 24 + 121 / 24), abs=1e-6)


def test_actual_spend_of_nothing_reported() -> None:
    spent = actual_spend([Manifest(request_id="a", frames=121)])

    assert (spent["total_cost_usd"], spent["cost_per_second_usd"], spent["cost_unreported"]) == (
        None,
        None,
        1,
    )


@pytest.mark.parametrize(
    ("manifest", "seconds"),
    [
        ({"video": {"duration_seconds": 5.04}, "frames": 241}, 5.04),
        ({"video": {"duration_seconds": None}, "frames": 241}, 241 / 24),
        ({"frames": 121}, 121 / 24),
        ({}, None),
    ],
)
def test_video_seconds(manifest: dict[str, Any], seconds: float | None) -> None:
    assert (Manifest.read(manifest) or Manifest()).video_seconds == seconds


def test_amounts_read_as_people_write_them() -> None:
    assert [usd(12), usd(0.5), usd(0.25208333), usd(0)] == ["12 USD", "0.5 USD", "0.2521 USD", "0 USD"]
