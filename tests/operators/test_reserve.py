"""The balance reserve: a generation that would leave less than ``min_balance_usd`` is never paid for."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from airflow.exceptions import AirflowFailException

from airflow_provider_dreamina.emulator import EmulatorHandle
from airflow_provider_dreamina.exceptions import DreaminaBalanceReserveError
from airflow_provider_dreamina.operators.dreamina import DreaminaImageToVideoOperator
from tests.helpers import FakeStateStore, make_context


def generate(emulator: EmulatorHandle, **kwargs: Any) -> Any:
    kwargs.setdefault("prompt", "a paper boat on a rainy street")
    kwargs.setdefault("image_url", emulator.sample_image_url)
    operator = DreaminaImageToVideoOperator(task_id="generate", **kwargs)
    return operator.execute(make_context(FakeStateStore()))


def refusal(emulator: EmulatorHandle, **kwargs: Any) -> tuple[str, DreaminaBalanceReserveError]:
    with pytest.raises(AirflowFailException) as caught:
        generate(emulator, **kwargs)
    cause = caught.value.__cause__
    assert isinstance(cause, DreaminaBalanceReserveError)
    return str(caught.value), cause


@pytest.fixture
def connection(emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Point dreamina_default at the emulator with these extras."""

    def with_extras(**extra: Any) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_DREAMINA_DEFAULT", emulator.connection_json(**extra))

    return with_extras


def test_a_generation_that_would_pass_the_reserve_fails_before_any_submission(
    emulator: EmulatorHandle,
) -> None:
    emulator.configure(balance_usd=1.2, price_usd=0.5)

    message, error = refusal(emulator, min_balance_usd=0.75)

    assert "the balance is 1.2 USD" in message
    assert "about 0.5 USD" in message
    assert "leave 0.7 USD, below the reserve of 0.75 USD (min_balance_usd)" in message
    assert (error.balance_usd, error.price_usd, error.limit_usd) == (1.2, 0.5, 0.75)
    assert not error.retryable
    counters = emulator.counters()
    assert counters["submissions"] == 0 and counters["calls"]["submit"] == 0
    assert counters["balance_usd"] == 1.2


def test_a_balance_that_suffices_lets_the_generation_through(
    emulator: EmulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.configure(balance_usd=1.25, price_usd=0.5)

    with caplog.at_level(logging.INFO, logger="airflow_provider_dreamina"):
        generate(emulator, min_balance_usd=0.75)

    assert emulator.counters()["submissions"] == 1
    assert "Balance 1.25 USD; this generation (about 0.5 USD" in caplog.text
    assert "leaves 0.75 USD, not below the reserve of 0.75 USD" in caplog.text


def test_the_connection_sets_a_reserve_for_every_task(emulator: EmulatorHandle, connection: Any) -> None:
    connection(min_balance_usd=5)
    emulator.configure(balance_usd=5.4, price_usd=0.5)

    message, _ = refusal(emulator)

    assert "below the reserve of 5 USD" in message
    # A task's own reserve takes precedence over the connection's.
    generate(emulator, min_balance_usd=0)
    assert emulator.counters()["submissions"] == 1


def test_an_unknown_balance_is_logged_and_the_generation_goes_ahead(
    emulator: EmulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.configure(balance_usd=0.6, offer_balance=False)

    with caplog.at_level(logging.INFO, logger="airflow_provider_dreamina"):
        generate(emulator, min_balance_usd=100)

    assert emulator.counters()["submissions"] == 1
    assert "Could not check the balance reserve of 100 USD" in caplog.text
    assert "submitting anyway" in caplog.text


def test_without_a_reserve_nothing_is_asked(emulator: EmulatorHandle) -> None:
    generate(emulator)

    calls = emulator.counters()["calls"]
    assert (calls["balance"], calls["model"], calls["submit"]) == (0, 0, 1)


def test_an_unknown_price_checks_the_balance_alone(
    emulator: EmulatorHandle, connection: Any, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.configure(balance_usd=0.8, price_usd=0.5, offer_model_info=False)

    with caplog.at_level(logging.INFO, logger="airflow_provider_dreamina"):
        generate(emulator, min_balance_usd=0.75)
    assert "checking the balance alone" in caplog.text
    assert emulator.counters()["submissions"] == 1

    # With the price the connection states, the same reserve refuses.
    connection(price_usd=0.5)
    message, _ = refusal(emulator, min_balance_usd=0.75)
    assert "price_usd of connection 'dreamina_default'" in message


def test_a_price_per_second_counts_the_frames(emulator: EmulatorHandle) -> None:
    emulator.configure(balance_usd=1.5, price_usd=0.1, price_unit="second")

    message, error = refusal(emulator, min_balance_usd=0.6, frames=241)

    assert error.price_usd == pytest.approx(0.1 * 241 / 24)
    assert "model info: 0.1 USD per second" in message
    generate(emulator, min_balance_usd=0.6, frames=121)
    assert emulator.counters()["submissions"] == 1


def test_a_reserve_that_is_not_an_amount_fails_without_submitting(emulator: EmulatorHandle) -> None:
    with pytest.raises(AirflowFailException, match="min_balance_usd is 'lots'; give an amount in USD"):
        generate(emulator, min_balance_usd="lots")

    assert emulator.counters()["calls"]["submit"] == 0
