"""Cost and budgets in a real Airflow: the pipeline's plan, its published cost, the consumer's summary.

The pipeline is daily with catchup off, so unpausing it starts the run of the latest interval
(with no budget); the ``scheduled_run`` fixture lets that one run first, then each test triggers
its own run with a ``budget_usd`` and pauses the DAG again.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from airflow_provider_dreamina.emulator import EmulatorHandle, run_emulator
from tests.e2e.harness import Airflow, marked_processes, run_airflow

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS = ROOT / "example_dags"
PIPELINE, CONSUMER = "dreamina_content_pipeline", "dreamina_asset_consumer"
TOKEN = f"e2e-cost-token-{secrets.token_hex(16)}"
BALANCE, PRICE = 100.0, 0.5
ROWS = 3
VIDEO_SECONDS = ROWS * 121 / 24


@dataclass
class Stack:
    airflow: Airflow
    emulator: EmulatorHandle


@dataclass
class Finished:
    """A pipeline run that published, its consumer's run, and the emulator's counters after both."""

    run_id: str
    plan_log: str
    event: dict[str, Any]
    summary: dict[str, Any]
    counters: dict[str, Any]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("airflow-cost")
    options = {"queue_seconds": 1, "run_seconds": 2, "balance_usd": BALANCE, "price_usd": PRICE}
    with run_emulator(token=TOKEN, **options) as emulator:
        env = {
            # account_url points at the emulator too: the balance is never asked of RunComfy.
            "AIRFLOW_CONN_DREAMINA_DEFAULT": emulator.connection_json(),
            "AIRFLOW_VAR_DREAMINA_OUTPUT_DIR": str(home / "videos"),
        }
        with run_airflow([EXAMPLE_DAGS], env=env, home=home) as airflow:
            airflow.set_pool("dreamina", 4, include_deferred=True)
            airflow.wait_for_dags([PIPELINE, CONSUMER], timeout=90)
            airflow.unpause(CONSUMER)
            yield Stack(airflow, emulator)
        assert marked_processes(airflow.marker) == []


def finish(stack: Stack, run_id: str) -> Finished:
    """Wait for a pipeline run and the consumer run its event starts; collect what they left."""
    airflow = stack.airflow
    run = airflow.wait_for_run(PIPELINE, run_id, timeout=240)
    airflow.pause(PIPELINE)
    assert run["state"] == "success", airflow.describe_run(PIPELINE, run_id)
    # One consumer run per published event; asked for events only once those runs have ended
    # (Airflow 3.3.2's asset-events endpoint answers 500 while a run an event created has not started).
    published = [each for each in airflow.dag_runs(PIPELINE) if each["state"] == "success"]
    for consumer_run in airflow.wait_for_runs(CONSUMER, len(published), timeout=60):
        ended = airflow.wait_for_run(CONSUMER, consumer_run["dag_run_id"], timeout=60)
        assert ended["state"] == "success", airflow.describe_run(CONSUMER, ended["dag_run_id"])
    events = airflow.asset_events(source_dag_id=PIPELINE)
    # The batch's one event on the daily asset (each download also announces its video to the gallery).
    events = [each for each in events if each["source_run_id"] == run_id and "files" in (each["extra"] or {})]
    assert len(events) == 1, events
    first_file = Path(urlparse(events[0]["extra"]["files"][0]).path)
    return Finished(
        run_id=run_id,
        plan_log=airflow.task_log(PIPELINE, run_id, "plan"),
        event=events[0]["extra"],
        summary=json.loads((first_file.parent / "summary.json").read_text()),
        counters=stack.emulator.counters(),
    )


@pytest.fixture(scope="module")
def scheduled_run(stack: Stack) -> Finished:
    stack.emulator.reset()
    stack.airflow.unpause(PIPELINE)
    (run,) = stack.airflow.wait_for_runs(PIPELINE, 1, timeout=60)
    return finish(stack, run["dag_run_id"])


@pytest.fixture
def e2e(stack: Stack, scheduled_run: Finished) -> Stack:
    stack.emulator.reset()
    return stack


def test_the_summary_total_equals_what_the_emulator_charged(scheduled_run: Finished) -> None:
    charged = scheduled_run.counters["cost_usd_charged"]
    assert scheduled_run.counters["generations_charged"] == ROWS
    assert charged == pytest.approx(ROWS * PRICE)

    summary = scheduled_run.summary
    assert summary["count"] == ROWS
    assert summary["total_cost_usd"] == pytest.approx(charged)
    assert summary["cost_unreported"] == 0
    assert summary["total_seconds"] == pytest.approx(VIDEO_SECONDS, abs=0.02)
    assert summary["cost_per_second_usd"] == pytest.approx(charged / VIDEO_SECONDS, rel=1e-3)
    assert [video["cost_usd"] for video in summary["videos"]] == [PRICE] * ROWS

    event = scheduled_run.event
    assert (event["count"], event["total_cost_usd"]) == (ROWS, pytest.approx(charged))
    assert event["cost_per_second_usd"] == pytest.approx(summary["cost_per_second_usd"])
    assert scheduled_run.counters["balance_usd"] == pytest.approx(BALANCE - charged)

    # The plan ran first, and said what it expected to pay.
    log = scheduled_run.plan_log
    assert log.count("121 frames): about 0.5 USD (model info: 0.5 USD per output)") == ROWS
    assert "Estimated cost of the 3 rows: 1.5 USD in all" in log
    assert "No budget_usd given" in log
    assert f"Available balance: {BALANCE:g} USD" in log


def test_the_budget_refuses_a_batch_before_any_submission(e2e: Stack) -> None:
    airflow = e2e.airflow
    run_id = airflow.trigger_dag(PIPELINE, {"budget_usd": 1.2})
    run = airflow.wait_for_run(PIPELINE, run_id, timeout=120)
    airflow.pause(PIPELINE)

    assert run["state"] == "failed"
    assert [ti["state"] for ti in airflow.task_tries(PIPELINE, run_id, "plan")] == ["failed"]
    generations = airflow.task_instances(PIPELINE, run_id, "video.generate")
    assert generations and all(ti["state"] == "upstream_failed" for ti in generations), generations
    counters = e2e.emulator.counters()
    assert (counters["submissions"], counters["calls"]["submit"], counters["cost_usd_charged"]) == (0, 0, 0)
    log = airflow.task_log(PIPELINE, run_id, "plan")
    assert "its 3 rows would cost about 1.5 USD, over the budget of 1.2 USD (budget_usd)" in log
    assert "nothing was submitted" in log


def test_with_every_endpoint_missing_the_pipeline_still_runs_and_says_what_it_could_not_check(
    e2e: Stack,
) -> None:
    e2e.emulator.configure(offer_model_info=False, offer_cost=False, offer_balance=False)
    # A budget the batch would exceed at the emulator's price: unknown prices cannot be held to it.
    run_id = e2e.airflow.trigger_dag(PIPELINE, {"budget_usd": 0.01})

    finished = finish(e2e, run_id)

    assert finished.counters["submissions"] == ROWS
    log = finished.plan_log
    assert "Estimated cost of the 3 rows: unknown" in log
    assert "Could not check the budget of 0.01 USD" in log
    assert "Could not check the balance" in log
    generate_log = e2e.airflow.task_log(PIPELINE, run_id, "video.generate", map_index=0)
    assert "cost not reported" in generate_log
    assert finished.summary["count"] == ROWS
    assert finished.summary["total_cost_usd"] is None
    assert finished.summary["cost_unreported"] == ROWS
    assert finished.event["total_cost_usd"] is None
