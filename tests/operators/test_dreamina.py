"""DreaminaImageToVideoOperator: validation, submit, wait, defer, reattach and cancel."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from airflow.exceptions import AirflowFailException, TaskDeferred

from airflow_provider_dreamina import links
from airflow_provider_dreamina.emulator import EmulatorHandle
from airflow_provider_dreamina.exceptions import (
    DreaminaError,
    DreaminaTimeoutError,
)
from airflow_provider_dreamina.hooks.dreamina import DreaminaHook
from airflow_provider_dreamina.links import DreaminaOutputLink
from airflow_provider_dreamina.models import DEFAULT_MODEL_ID, RequestState
from airflow_provider_dreamina.operators.dreamina import (
    STATE_KEY,
    XCOM_REQUEST_ID,
    DreaminaImageToVideoOperator,
)
from airflow_provider_dreamina.triggers.dreamina import DreaminaRequestTrigger
from tests.helpers import (
    FakeStateStore,
    data_uri,
    make_context,
    request_events,
    wait_until,
    wait_until_state,
)


def make_operator(emulator: EmulatorHandle, **kwargs: Any) -> DreaminaImageToVideoOperator:
    kwargs.setdefault("prompt", "a paper boat on a rainy street")
    kwargs.setdefault("image_url", emulator.sample_image_url)
    kwargs.setdefault("poll_interval", 0.1)
    return DreaminaImageToVideoOperator(task_id="generate", **kwargs)


@pytest.fixture
def no_retries(emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch) -> EmulatorHandle:
    """The emulator with a connection whose hook does not retry, so faults reach the task."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_DREAMINA_DEFAULT", emulator.connection_json(max_retries=0, max_error_seconds=0)
    )
    return emulator


def test_submit_without_waiting_returns_and_pushes_the_request_id(emulator: EmulatorHandle) -> None:
    context = make_context()
    request_id = make_operator(emulator).execute(context)
    assert context["ti"].xcom[XCOM_REQUEST_ID] == request_id
    assert emulator.counters()["submissions"] == 1


def test_waiting_returns_a_small_json_result(emulator: EmulatorHandle) -> None:
    context = make_context()
    result = make_operator(emulator, wait_for_completion=True, deferrable=False).execute(context)
    assert result["state"] == "succeeded"
    assert result["request_id"] == context["ti"].xcom[XCOM_REQUEST_ID]
    assert result["output_urls"]
    # The output URL is in the return value only: no second XCom of a signed URL.
    assert set(context["ti"].xcom) == {XCOM_REQUEST_ID}
    assert set(result) >= {"created_at", "finished_at", "generation_seconds", "cost_usd"}
    assert "cost" not in result and "duration_seconds" not in result
    assert result["input"] == {
        "model_id": DEFAULT_MODEL_ID,
        "prompt": "a paper boat on a rainy street",
        "seed": -1,
        "frames": 121,
        "image_url": emulator.sample_image_url,
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": ""}, "prompt is blank"),
        ({"prompt": "x" * 801}, "prompt is 801 characters; the limit is 800"),
        ({"frames": 200}, "frames is 200"),
        ({"image_url": data_uri(300, 300)}, "shortest side must be more than 320"),
    ],
)
def test_bad_input_fails_at_once_without_submitting(
    emulator: EmulatorHandle, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(AirflowFailException, match=message):
        make_operator(emulator, **kwargs).execute(make_context(FakeStateStore()))
    assert emulator.counters()["calls"]["submit"] == 0


def test_templated_numbers_arrive_as_strings_and_still_work(emulator: EmulatorHandle) -> None:
    make_operator(emulator, seed="7", frames="241").execute(make_context())
    (job,) = emulator.requests()
    assert (job["input"]["seed"], job["input"]["frames"]) == (7, 241)


def test_rejected_token_is_permanent(emulator: EmulatorHandle) -> None:
    emulator.configure(token="some-other-token")
    with pytest.raises(AirflowFailException, match="token rejected"):
        make_operator(emulator).execute(make_context())


def test_failed_job_fails_without_retry(emulator: EmulatorHandle) -> None:
    emulator.script_jobs(outcome="failed", error="content policy")
    with pytest.raises(AirflowFailException, match="content policy"):
        make_operator(emulator, wait_for_completion=True, deferrable=False).execute(make_context())


def test_deferrable_defers_to_the_trigger(emulator: EmulatorHandle) -> None:
    operator = make_operator(emulator, wait_for_completion=True, deferrable=True, timeout=600)
    context = make_context()
    with pytest.raises(TaskDeferred) as caught:
        operator.execute(context)
    trigger = caught.value.trigger
    assert isinstance(trigger, DreaminaRequestTrigger)
    assert caught.value.method_name == "execute_complete"
    assert trigger.request_id == context["ti"].xcom[XCOM_REQUEST_ID]
    assert trigger.dreamina_conn_id == "dreamina_default"
    assert trigger.deadline is not None and trigger.deadline - time.time() == pytest.approx(600, abs=5)
    # Airflow's own deferral timeout leaves the trigger room to cancel and report first.
    assert caught.value.timeout is not None and caught.value.timeout.total_seconds() > 600
    _, kwargs = trigger.serialize()
    assert "token" not in str(kwargs).lower()


def test_execute_complete_success(emulator: EmulatorHandle) -> None:
    context = make_context()
    operator = make_operator(emulator)
    record = operator.execute_complete(context, request_events("req-1")["success"])
    assert record["output_urls"] == ["https://a.runcomfy.net/v.mp4"]
    assert record["input"]["prompt"] == "a paper boat on a rainy street"
    # The links Airflow computes next, in this process, need no XCom read back.
    assert links.request_id_for(operator, ti_key=None) == "req-1"
    assert DreaminaOutputLink().get_link(operator, ti_key=None) == "https://a.runcomfy.net/v.mp4"  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["failed", "cancelled", "error"])
def test_execute_complete_failures_are_permanent_and_keep_their_cause(
    emulator: EmulatorHandle, kind: str
) -> None:
    operator = make_operator(emulator)
    with pytest.raises(AirflowFailException, match=f"was {kind}") as caught:
        operator.execute_complete(make_context(), request_events("req-1")[kind])
    assert isinstance(caught.value.__cause__, DreaminaError)
    # Its gallery link still leads to the request, with no XCom read back.
    assert links.request_id_for(operator, ti_key=None) == "req-1"


def test_execute_complete_timeout_may_retry(emulator: EmulatorHandle) -> None:
    with pytest.raises(DreaminaTimeoutError, match="was timeout"):
        make_operator(emulator).execute_complete(make_context(), request_events("req-1")["timeout"])


# -- never pay twice ------------------------------------------------------------------------


def test_three_tries_with_failing_waits_submit_exactly_once(no_retries: EmulatorHandle) -> None:
    emulator = no_retries
    store = FakeStateStore()
    emulator.inject_fault("status", "500", count=1000)
    for _ in range(2):
        with pytest.raises(DreaminaError) as caught:
            make_operator(emulator, wait_for_completion=True, deferrable=False).execute(make_context(store))
        assert caught.value.retryable, "a flaky status endpoint is worth an Airflow retry"
    emulator.clear_faults()
    result = make_operator(emulator, wait_for_completion=True, deferrable=False).execute(make_context(store))
    assert result["state"] == "succeeded"
    assert emulator.counters()["submissions"] == 1


def test_deferred_retry_reattaches_instead_of_resubmitting(emulator: EmulatorHandle) -> None:
    store = FakeStateStore()
    emulator.script_jobs(queue_seconds=60)  # still waiting at every try, however slow the machine
    for _ in range(3):
        with pytest.raises(TaskDeferred):
            make_operator(emulator, wait_for_completion=True, deferrable=True).execute(make_context(store))
    assert emulator.counters()["submissions"] == 1


def test_reattach_to_a_succeeded_request_returns_its_result(emulator: EmulatorHandle) -> None:
    store = FakeStateStore()
    first = make_operator(emulator, wait_for_completion=True, deferrable=False).execute(make_context(store))
    again = make_operator(emulator, wait_for_completion=True, deferrable=False).execute(make_context(store))
    assert again["request_id"] == first["request_id"]
    assert emulator.counters()["submissions"] == 1


def test_deferred_reattach_to_a_succeeded_request_does_not_defer(emulator: EmulatorHandle) -> None:
    store = FakeStateStore()
    first = make_operator(emulator, wait_for_completion=True, deferrable=False).execute(make_context(store))
    operator = make_operator(emulator, wait_for_completion=True, deferrable=True)
    again = operator.execute(make_context(store))
    assert again["request_id"] == first["request_id"]
    assert again["state"] == "succeeded"
    assert emulator.counters()["submissions"] == 1


def test_reattach_without_waiting_returns_the_same_request_id(emulator: EmulatorHandle) -> None:
    store = FakeStateStore()
    first = make_operator(emulator).execute(make_context(store))
    context = make_context(store)
    assert make_operator(emulator).execute(context) == first
    assert context["ti"].xcom[XCOM_REQUEST_ID] == first
    assert emulator.counters()["submissions"] == 1


@pytest.mark.parametrize("prior", ["failed", "cancelled", "expired"])
def test_a_dead_prior_request_is_replaced(emulator: EmulatorHandle, prior: str) -> None:
    store = FakeStateStore()
    hook = DreaminaHook()
    if prior == "failed":
        emulator.script_jobs(outcome="failed", error="boom")
    if prior == "cancelled":
        emulator.script_jobs(queue_seconds=60)
    first = make_operator(emulator).execute(make_context(store))
    if prior == "cancelled":
        assert hook.cancel(first)
    elif prior == "failed":
        wait_until_state(hook, first, RequestState.FAILED)
    else:
        store.values[STATE_KEY] = {**store.values[STATE_KEY], "request_id": "long-gone-request"}
    second = make_operator(emulator).execute(make_context(store))
    assert second != first
    assert store.values[STATE_KEY]["request_id"] == second
    assert emulator.counters()["submissions"] == 2


def test_changed_input_is_submitted_anew(emulator: EmulatorHandle) -> None:
    store = FakeStateStore()
    first = make_operator(emulator, prompt="a red kite").execute(make_context(store))
    second = make_operator(emulator, prompt="a blue kite").execute(make_context(store))
    assert first != second
    assert emulator.counters()["submissions"] == 2


def test_without_a_state_store_a_retry_resubmits_and_says_so(
    emulator: EmulatorHandle, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("airflow_provider_dreamina.submission.reattach._warned_no_state", False)
    make_operator(emulator).execute(make_context())
    make_operator(emulator).execute(make_context())
    assert emulator.counters()["submissions"] == 2
    assert caplog.text.count("no task_state_store") == 1


# -- cancel what the user kills -------------------------------------------------------------


def test_on_kill_cancels_a_queued_request(emulator: EmulatorHandle) -> None:
    emulator.script_jobs(queue_seconds=60)
    operator = make_operator(emulator, wait_for_completion=True, deferrable=False)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            operator.execute(make_context())
        except BaseException as error:
            errors.append(error)

    worker = threading.Thread(target=run)
    worker.start()
    # Polling: the operator knows its request.
    wait_until(lambda: emulator.counters()["calls"]["status"] > 0)
    operator.on_kill()
    worker.join(timeout=10)
    assert emulator.counters()["cancellations"] == 1
    assert errors and isinstance(errors[0], AirflowFailException)
    assert "cancelled" in str(errors[0])


def test_on_kill_of_a_running_request_says_it_cannot_be_cancelled(
    emulator: EmulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.script_jobs(queue_seconds=0, run_seconds=60)
    operator = make_operator(emulator, wait_for_completion=True, deferrable=False, timeout=1)
    with pytest.raises(DreaminaTimeoutError):
        operator.execute(make_context())
    operator.on_kill()
    assert emulator.counters()["cancellations"] == 0
    assert "could not be cancelled" in caplog.text


def test_wait_timeout_cancels_a_queued_request(emulator: EmulatorHandle) -> None:
    emulator.script_jobs(queue_seconds=60)
    with pytest.raises(DreaminaTimeoutError):
        make_operator(emulator, wait_for_completion=True, deferrable=False, timeout=0.5).execute(
            make_context()
        )
    assert emulator.counters()["cancellations"] == 1


def test_operator_builds_no_hook_at_parse_time(emulator: EmulatorHandle) -> None:
    operator = make_operator(emulator)
    assert "hook" not in operator.__dict__
    assert operator.model_id == DEFAULT_MODEL_ID
    assert emulator.counters()["calls"] == {k: 0 for k in emulator.counters()["calls"]}


def test_extra_link_points_at_the_first_output(emulator: EmulatorHandle) -> None:
    operator = make_operator(emulator, wait_for_completion=True, deferrable=False)
    link = DreaminaOutputLink()
    assert link.get_link(operator, ti_key=None) == ""  # type: ignore[arg-type]
    result = operator.execute(make_context())
    assert link.get_link(operator, ti_key=None) == result["output_urls"][0]  # type: ignore[arg-type]
