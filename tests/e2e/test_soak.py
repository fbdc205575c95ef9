"""The fault soak in short: a few generations through a real Airflow while 20% of the calls fail.

``benchmarks/soak.py`` runs the same with 100 generations (``make bench-soak``); here six are
enough to see that faults on every endpoint lose nothing, pay for nothing twice and leak nothing.
"""

from __future__ import annotations

import pytest

from benchmarks.soak import run_soak

pytestmark = pytest.mark.e2e

GENERATIONS = 6


def test_faults_on_a_fifth_of_the_calls_lose_nothing_and_pay_for_nothing_twice() -> None:
    figures = run_soak(GENERATIONS, timeout=300)

    assert figures["run_state"] == "success", figures["tasks"]
    assert figures["completed"] == GENERATIONS
    assert figures["submissions"] == figures["distinct_inputs"] == GENERATIONS
    assert figures["duplicate_submissions"] == 0
    assert figures["files"] == GENERATIONS
    assert figures["corrupt_files"] == []
    assert figures["partial_files"] == []
    assert figures["token_in_logs"] == 0
    assert figures["token_in_xcom_rows"] == 0
    assert figures["token_in_database"] == 0
    # The searches covered real material, and faults did happen.
    assert figures["log_files_searched"] > GENERATIONS
    assert figures["xcom_rows_searched"] >= 2 * GENERATIONS
    assert figures["faults_injected"] > 0
