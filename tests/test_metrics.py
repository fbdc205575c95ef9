"""Metrics: every ``dreamina.*`` name is emitted where it happens, never fails a task, and reaches
a real StatsD listener through Airflow's own stats."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.exceptions import AirflowFailException

from airflow_provider_dreamina import metrics
from airflow_provider_dreamina.emulator import EmulatorHandle
from airflow_provider_dreamina.exceptions import DreaminaTransientWaitError
from airflow_provider_dreamina.models import RequestStatus
from airflow_provider_dreamina.operators.dreamina import (
    DreaminaDownloadOperator,
    DreaminaImageToVideoOperator,
)
from airflow_provider_dreamina.waiting.policy import Waiting, WaitPolicy
from tests.helpers import FakeStateStore, FakeTI, make_context
from tests.operators.download_server import output_host


class Recorder:
    """Stands in for Airflow's ``Stats``: what was emitted, in order."""

    def __init__(self) -> None:
        self.emitted: list[tuple[str, str, Any]] = []

    def incr(self, name: str, count: int = 1) -> None:
        self.emitted.append(("incr", name, count))

    def timing(self, name: str, value: Any) -> None:
        self.emitted.append(("timing", name, value))

    def names(self) -> list[str]:
        return [name for _kind, name, _value in self.emitted]

    def value(self, name: str) -> Any:
        (value,) = [value for _kind, emitted, value in self.emitted if emitted == name]
        return value


@pytest.fixture
def stats(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(metrics, "_stats", lambda: recorder)
    return recorder


def generate(emulator: EmulatorHandle, **kwargs: Any) -> DreaminaImageToVideoOperator:
    kwargs.setdefault("wait_for_completion", True)
    kwargs.setdefault("deferrable", False)
    return DreaminaImageToVideoOperator(
        task_id="generate",
        prompt="a heron in the reeds",
        image_url=emulator.sample_image_url,
        poll_interval=0.05,
        **kwargs,
    )


@pytest.fixture
def no_retries(emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch) -> EmulatorHandle:
    monkeypatch.setenv(
        "AIRFLOW_CONN_DREAMINA_DEFAULT", emulator.connection_json(max_retries=0, max_error_seconds=0)
    )
    return emulator


def test_a_generation_counts_its_submit_end_time_and_cost(emulator: EmulatorHandle, stats: Recorder) -> None:
    emulator.script_jobs(cost=0.35)
    record = generate(emulator).execute(make_context(FakeStateStore()))

    assert stats.names().count("dreamina.submit.succeeded") == 1
    assert stats.names().count("dreamina.request.succeeded") == 1
    assert stats.value("dreamina.request.cost_micro_usd") == 350_000
    assert stats.value("dreamina.request.generation_duration").total_seconds() == pytest.approx(
        record["generation_seconds"]
    )


def test_a_retry_that_reattaches_counts_reattached(emulator: EmulatorHandle, stats: Recorder) -> None:
    store = FakeStateStore()
    generate(emulator, wait_for_completion=False).execute(make_context(store))
    generate(emulator, wait_for_completion=False).execute(make_context(store, FakeTI(try_number=2)))

    assert [name for name in stats.names() if name.startswith("dreamina.submit.")] == [
        "dreamina.submit.succeeded",
        "dreamina.submit.reattached",
    ]


def test_a_reserve_refusal_counts_refused(emulator: EmulatorHandle, stats: Recorder) -> None:
    emulator.configure(balance_usd=1.2, price_usd=0.5)
    with pytest.raises(AirflowFailException):
        generate(emulator, min_balance_usd=0.75).execute(make_context(FakeStateStore()))

    assert stats.names() == ["dreamina.submit.refused"]


def test_a_rejected_token_counts_refused(
    emulator: EmulatorHandle, stats: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = {**json.loads(emulator.connection_json()), "password": "not-the-token"}
    monkeypatch.setenv("AIRFLOW_CONN_DREAMINA_DEFAULT", json.dumps(connection))
    with pytest.raises(AirflowFailException):
        generate(emulator).execute(make_context(FakeStateStore()))

    assert stats.names() == ["dreamina.submit.refused"]


def test_a_lost_answer_counts_uncertain_then_the_retry_orphaned(
    emulator: EmulatorHandle, stats: Recorder
) -> None:
    store = FakeStateStore()
    emulator.inject_fault("submit", "reset_after_send", count=1)
    with pytest.raises(AirflowFailException):
        generate(emulator).execute(make_context(store))
    with pytest.raises(AirflowFailException, match="orphaned submit"):
        generate(emulator).execute(make_context(store, FakeTI(try_number=2)))

    assert stats.names() == ["dreamina.submit.uncertain", "dreamina.submit.orphaned"]


def test_a_wait_times_the_queue_from_first_seen_queued_to_first_seen_running(stats: Recorder) -> None:
    waiting = Waiting("r", WaitPolicy())
    waiting.saw(RequestStatus(request_id="r", status="in_queue", queue_position=3))
    waiting.saw(RequestStatus(request_id="r", status="in_queue", queue_position=1))
    assert stats.emitted == []
    waiting.saw(RequestStatus(request_id="r", status="in_progress"))
    waiting.saw(RequestStatus(request_id="r", status="completed"))

    assert stats.names() == ["dreamina.request.queue_duration"]
    assert stats.value("dreamina.request.queue_duration").total_seconds() >= 0


def test_a_request_first_seen_running_has_no_queue_time(stats: Recorder) -> None:
    waiting = Waiting("r", WaitPolicy())
    waiting.saw(RequestStatus(request_id="r", status="in_progress"))
    waiting.saw(RequestStatus(request_id="r", status="completed"))

    assert stats.emitted == []


def test_failed_polls_count_by_error_code(no_retries: EmulatorHandle, stats: Recorder) -> None:
    no_retries.inject_fault("status", 503, count=2)
    generate(no_retries, max_consecutive_errors=5).execute(make_context(FakeStateStore()))

    assert stats.names().count("dreamina.wait.error.server") == 2
    assert "dreamina.request.succeeded" in stats.names()


def test_a_wait_that_gives_up_counts_why(no_retries: EmulatorHandle, stats: Recorder) -> None:
    no_retries.inject_fault("status", 503, count=5)
    with pytest.raises(DreaminaTransientWaitError):
        generate(no_retries, max_consecutive_errors=1).execute(make_context(FakeStateStore()))

    assert stats.names().count("dreamina.wait.error.server") == 2
    assert stats.names()[-1] == "dreamina.wait.error.transient_wait"


def test_a_wait_past_its_deadline_counts_a_timeout(emulator: EmulatorHandle, stats: Recorder) -> None:
    emulator.script_jobs(queue_seconds=60)
    with pytest.raises(Exception, match="deadline"):
        generate(emulator, timeout=0.2).execute(make_context(FakeStateStore()))

    assert stats.names()[-1] == "dreamina.wait.error.timeout"


def test_a_download_counts_its_bytes_and_times_it(
    emulator: EmulatorHandle, stats: Recorder, tmp_path: Path
) -> None:
    emulator.script_jobs(queue_seconds=0, run_seconds=0)
    request_id = generate(emulator, wait_for_completion=False).execute(make_context())
    stats.emitted.clear()
    download = DreaminaDownloadOperator(task_id="download", request_id=request_id, destination=str(tmp_path))
    download.execute(make_context())

    assert stats.value("dreamina.download.bytes") == (tmp_path / f"{request_id}.mp4").stat().st_size
    assert stats.value("dreamina.download.duration").total_seconds() >= 0


def test_a_body_that_is_not_a_video_counts_an_invalid_video(
    emulator: EmulatorHandle, stats: Recorder, tmp_path: Path
) -> None:
    with output_host() as host:
        host.behaviour.body = b"<!DOCTYPE html><html><body>Access denied</body></html>" * 20
        emulator.script_jobs(queue_seconds=0, run_seconds=0, output_urls=[host.url()])
        request_id = generate(emulator, wait_for_completion=False).execute(make_context())
        download = DreaminaDownloadOperator(
            task_id="download", request_id=request_id, destination=str(tmp_path)
        )
        with pytest.raises(Exception, match="video"):
            download.execute(make_context())

    assert "dreamina.video.invalid" in stats.names()
    assert "dreamina.download.bytes" not in stats.names()


def test_emitting_never_fails_a_task(monkeypatch: pytest.MonkeyPatch, emulator: EmulatorHandle) -> None:
    class Broken:
        def __getattr__(self, name: str) -> Any:
            raise OSError("statsd host unreachable")

    monkeypatch.setattr(metrics, "_stats", Broken)
    record = generate(emulator).execute(make_context(FakeStateStore()))
    assert record["state"] == "succeeded"

    def no_stats() -> Any:
        raise ImportError("no stats here")

    monkeypatch.setattr(metrics, "_stats", no_stats)
    metrics.submitted("succeeded")
    metrics.wait_error("a code/with odd characters")


def test_names_from_the_network_are_made_safe(stats: Recorder) -> None:
    metrics.request_ended("Weird State!", None, None)
    metrics.wait_error("x" * 500)

    assert stats.names() == ["dreamina.request.weird_state_", "dreamina.wait.error." + "x" * 64]


# -- a real StatsD listener ---------------------------------------------------------------------

_EMIT = textwrap.dedent(
    """
    import asyncio, os, tempfile

    # What the task runner and the triggerer do when they start (Airflow 3.1 configures Stats from
    # the configuration at its first use).
    try:
        from airflow.sdk.observability import stats
        from airflow.sdk.observability.metrics import stats_utils
    except ImportError:
        pass
    else:
        if hasattr(stats, "initialize"):  # Airflow 3.3
            stats.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=False)
        else:  # Airflow 3.2
            stats.Stats.initialize(factory=stats_utils.get_stats_factory(stats.Stats))

    from airflow_provider_dreamina.hooks.dreamina import DreaminaHook
    from airflow_provider_dreamina.models import ImageToVideoInput
    from airflow_provider_dreamina.operators.dreamina import DreaminaDownloadOperator
    from airflow_provider_dreamina.triggers.dreamina import DreaminaRequestTrigger

    image = os.environ["DREAMINA_TEST_IMAGE"]
    with DreaminaHook() as hook:
        waited = hook.submit(ImageToVideoInput(prompt="a fox", image_urls=[image])).request_id
        hook.wait(waited, poll_interval=0.05, timeout=60)
        deferred = hook.submit(ImageToVideoInput(prompt="a fox", image_urls=[image])).request_id

    async def trigger():  # as the triggerer runs it
        async for event in DreaminaRequestTrigger(deferred, poll_interval=0.05).run():
            assert event.payload["status"] == "success", event.payload
    asyncio.run(trigger())

    class TI:
        def xcom_push(self, key, value):
            pass

    DreaminaDownloadOperator(
        task_id="download", request_id=waited, destination=tempfile.mkdtemp()
    ).execute({"ti": TI()})
    print("emitted")
    """
)


@pytest.fixture
def statsd_listener() -> Iterator[socket.socket]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    yield listener
    listener.close()


def _received(listener: socket.socket) -> list[str]:
    """Every datagram already delivered (the sender has exited: nothing more is on its way)."""
    lines: list[str] = []
    while select.select([listener], [], [], 0)[0]:
        lines.extend(listener.recv(65536).decode().splitlines())
    return lines


def test_metrics_reach_a_statsd_listener_through_airflows_stats(
    emulator: EmulatorHandle, statsd_listener: socket.socket, tmp_path: Path
) -> None:
    pytest.importorskip("statsd")
    emulator.script_jobs(count=2, queue_seconds=1.0, run_seconds=0.2, cost=0.25)
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW__")}
    env.update(
        AIRFLOW_HOME=str(tmp_path),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__METRICS__STATSD_ON="True",
        AIRFLOW__METRICS__STATSD_HOST="127.0.0.1",
        AIRFLOW__METRICS__STATSD_PORT=str(statsd_listener.getsockname()[1]),
        AIRFLOW__METRICS__STATSD_PREFIX="airflow",
        AIRFLOW_CONN_DREAMINA_DEFAULT=emulator.connection_json(),
        DREAMINA_TEST_IMAGE=emulator.sample_image_url,
    )
    done = subprocess.run(
        [sys.executable, "-c", _EMIT], env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0 and "emitted" in done.stdout, done.stderr[-3000:]

    received = _received(statsd_listener)
    names = [line.partition(":")[0] for line in received]

    assert names.count("airflow.dreamina.request.succeeded") == 2, received  # hook.wait and the trigger
    assert names.count("airflow.dreamina.request.cost_micro_usd") == 2
    assert "airflow.dreamina.request.cost_micro_usd:250000|c" in received
    assert "airflow.dreamina.request.generation_duration" in names
    assert "airflow.dreamina.request.queue_duration" in names
    assert any(
        line.startswith("airflow.dreamina.request.queue_duration:") and line.endswith("|ms")
        for line in received
    )
    assert "airflow.dreamina.download.bytes" in names
    assert "airflow.dreamina.download.duration" in names
