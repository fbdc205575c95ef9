"""Never pay twice: the two-phase submit record, orphaned submits, clears and the ledger."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_dreamina.compat import AirflowFailException
from airflow_provider_dreamina.defaults import STATE_KEY
from airflow_provider_dreamina.emulator import EmulatorHandle
from airflow_provider_dreamina.exceptions import DreaminaOrphanedSubmitError, DreaminaStateError
from airflow_provider_dreamina.operators.dreamina import DreaminaImageToVideoOperator
from airflow_provider_dreamina.submission.records import SubmitRecord
from airflow_provider_dreamina.submission.stores import LedgerState
from tests.helpers import FakeStateStore, FakeTI, make_context, parse_record


def operator(emulator: EmulatorHandle, **kwargs: Any) -> DreaminaImageToVideoOperator:
    kwargs.setdefault("wait_for_completion", True)
    kwargs.setdefault("deferrable", False)
    return DreaminaImageToVideoOperator(
        task_id="generate",
        prompt="a heron in the reeds",
        image_url=emulator.sample_image_url,
        poll_interval=0.1,
        **kwargs,
    )


class FailingStore(FakeStateStore):
    """A task_state_store whose ``set`` fails from its ``fail_from``-th call on."""

    def __init__(self, fail_from: int) -> None:
        super().__init__()
        self.calls = 0
        self.fail_from = fail_from

    def set(self, key: str, value: Any, **kwargs: Any) -> None:
        self.calls += 1
        if self.calls >= self.fail_from:
            raise RuntimeError("the API server is unreachable (simulated)")
        super().set(key, value)


def test_intent_is_recorded_before_the_paid_post_and_the_id_after(emulator: EmulatorHandle) -> None:
    store = FakeStateStore()
    written: list[dict[str, Any]] = []
    original = store.set

    def spy(key: str, value: Any, **kwargs: Any) -> None:
        written.append({"value": value, "submissions": emulator.counters()["submissions"]})
        original(key, value)

    store.set = spy  # type: ignore[method-assign]
    operator(emulator).execute(make_context(store))
    intent, done = written
    assert (
        intent["submissions"] == 0 and intent["value"]["intent_at"] and intent["value"]["request_id"] is None
    )
    assert done["submissions"] == 1 and done["value"]["request_id"]


def test_a_lost_submit_answer_is_an_orphan_the_next_try_refuses_to_repay(
    emulator: EmulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    store = FakeStateStore()
    emulator.inject_fault("submit", "reset_after_send", count=1)
    with pytest.raises(AirflowFailException):  # DreaminaSubmitUncertainError: never retried
        operator(emulator).execute(make_context(store))
    with pytest.raises(AirflowFailException, match="orphaned submit") as caught:
        operator(emulator).execute(make_context(store, FakeTI(try_number=2)))
    assert isinstance(caught.value.__cause__, DreaminaOrphanedSubmitError)
    assert "RunComfy's dashboard" in str(caught.value) and "try 1" in str(caught.value)
    assert emulator.counters()["submissions"] == 1


def test_on_orphaned_submit_resubmit_pays_exactly_once_more(
    emulator: EmulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    store = FakeStateStore()
    emulator.inject_fault("submit", "reset_after_send", count=1)
    with pytest.raises(AirflowFailException):
        operator(emulator).execute(make_context(store))
    with caplog.at_level(logging.WARNING):
        record = operator(emulator, on_orphaned_submit="resubmit").execute(make_context(store))
    assert record["state"] == "succeeded"
    assert emulator.counters()["submissions"] == 2
    assert "may charge for both" in caplog.text


def test_clearing_after_an_orphan_resubmits(emulator: EmulatorHandle) -> None:
    store = FakeStateStore()
    emulator.inject_fault("submit", "reset_after_send", count=1)
    with pytest.raises(AirflowFailException):
        operator(emulator).execute(make_context(store, FakeTI(try_number=1, max_tries=2)))
    # A clear raises max_tries: the user looked in the dashboard, as the error asked.
    record = operator(emulator).execute(make_context(store, FakeTI(try_number=2, max_tries=4)))
    assert record["state"] == "succeeded"
    assert emulator.counters()["submissions"] == 2


def test_failing_to_record_the_request_id_fails_without_retry_naming_it(
    emulator: EmulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    store = FailingStore(fail_from=2)
    with caplog.at_level(logging.INFO), pytest.raises(AirflowFailException) as caught:
        operator(emulator).execute(make_context(store))
    (job,) = emulator.requests()
    assert job["request_id"] in str(caught.value)
    assert f"Submitted request {job['request_id']}" in caplog.text  # logged before the write failed
    assert emulator.counters()["submissions"] == 1


def test_failing_to_record_the_intent_pays_nothing_and_may_retry(emulator: EmulatorHandle) -> None:
    with pytest.raises(DreaminaStateError) as caught:
        operator(emulator).execute(make_context(FailingStore(fail_from=1)))
    assert caught.value.retryable
    assert emulator.counters()["submissions"] == 0


def test_a_refused_submit_leaves_no_orphan(emulator: EmulatorHandle) -> None:
    store = FakeStateStore()
    emulator.configure(balance_usd=0.0)
    with pytest.raises(AirflowFailException, match="insufficient balance"):
        operator(emulator).execute(make_context(store))
    assert parse_record(store.values[STATE_KEY]).orphaned is False
    emulator.configure(balance_usd=100.0)
    assert operator(emulator).execute(make_context(store))["state"] == "succeeded"


@pytest.mark.parametrize(("on_clear", "submissions"), [("reuse", 1), ("regenerate", 2)])
def test_a_manual_clear_follows_on_clear(
    emulator: EmulatorHandle, caplog: pytest.LogCaptureFixture, on_clear: str, submissions: int
) -> None:
    store = FakeStateStore()
    first = operator(emulator, on_clear=on_clear).execute(make_context(store, FakeTI(max_tries=2)))
    with caplog.at_level(logging.INFO):
        again = operator(emulator, on_clear=on_clear).execute(make_context(store, FakeTI(max_tries=4)))
    assert emulator.counters()["submissions"] == submissions
    if on_clear == "reuse":
        assert again["request_id"] == first["request_id"]
        assert "on_clear='regenerate'" in caplog.text and first["request_id"] in caplog.text
    else:
        assert again["request_id"] != first["request_id"]


def test_a_retry_is_not_a_clear(emulator: EmulatorHandle) -> None:
    store = FakeStateStore()
    first = operator(emulator, on_clear="regenerate").execute(make_context(store, FakeTI(max_tries=2)))
    again = operator(emulator, on_clear="regenerate").execute(make_context(store, FakeTI(try_number=2)))
    assert again["request_id"] == first["request_id"]
    assert emulator.counters()["submissions"] == 1


def test_the_ledger_reattaches_without_a_state_store(emulator: EmulatorHandle, tmp_path: Path) -> None:
    first = operator(emulator, state_path=str(tmp_path)).execute(make_context())
    again = operator(emulator, state_path=str(tmp_path)).execute(make_context(ti=FakeTI(try_number=2)))
    assert again["request_id"] == first["request_id"]
    assert emulator.counters()["submissions"] == 1
    (path,) = tmp_path.rglob("*.json")
    assert path.relative_to(tmp_path).parts == (
        "dag",
        "manual__2026-12-01T00%3A00%3A00%2B00%3A00",
        "generate",
        "-1.json",
    )
    assert json.loads(path.read_text())["request_id"] == first["request_id"]
    assert not [p for p in tmp_path.rglob(".*")], "no temporary file left behind"


def test_an_explicit_state_path_is_used_even_with_a_state_store(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    store = FakeStateStore()
    operator(emulator, state_path=str(tmp_path)).execute(make_context(store))
    assert STATE_KEY not in store.values
    assert list(tmp_path.rglob("*.json"))


def test_the_connection_extra_is_the_fallback_without_a_state_store(
    emulator: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DREAMINA_DEFAULT", emulator.connection_json(state_path=str(tmp_path)))
    operator(emulator).execute(make_context())
    operator(emulator).execute(make_context(ti=FakeTI(try_number=2)))
    assert emulator.counters()["submissions"] == 1
    store = FakeStateStore()
    operator(emulator).execute(make_context(store))
    assert STATE_KEY in store.values  # where task_state_store exists, it is preferred


def test_ledger_keys_keep_mapped_instances_apart(tmp_path: Path) -> None:
    first = LedgerState(str(tmp_path), "d", "r", "t", 0)
    second = LedgerState(str(tmp_path), "d", "r", "t", 1)
    first.write(SubmitRecord(fingerprint="a", request_id="one"))
    second.write(SubmitRecord(fingerprint="b", request_id="two"))
    assert (first.read() or SubmitRecord(fingerprint="")).request_id == "one"
    assert (second.read() or SubmitRecord(fingerprint="")).request_id == "two"


def test_ledger_on_object_storage(memory_storage: None) -> None:
    ledger = LedgerState("memory://ledger/dreamina", "d", "r/../x", "t", -1)
    assert ledger.read() is None
    ledger.write(SubmitRecord(fingerprint="f", request_id="abc"))
    assert (ledger.read() or SubmitRecord(fingerprint="")).request_id == "abc"
    assert "/" not in ledger.relative.split("/")[1] and ".." not in ledger.relative.split("/")
