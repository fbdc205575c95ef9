"""The provider in a real Airflow: scheduler, triggerer, dag processor and API server, against the emulator.

One Airflow and one emulator serve the whole module (starting them takes about 15 s); each test
resets the emulator and waits for its own runs to finish, so tests do not see each other's jobs.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from airflow import __version__ as airflow_version
from packaging.version import Version

from airflow_provider_dreamina.emulator import EmulatorHandle, run_emulator
from airflow_provider_dreamina.operators.dreamina import MANIFEST_SUFFIX
from airflow_provider_dreamina.outputs.decode import decode_all
from airflow_provider_dreamina.outputs.video import inspect_file
from airflow_provider_dreamina.triggers.dreamina import DreaminaRequestTrigger
from tests.e2e.harness import Airflow, marked_processes, run_airflow

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS = ROOT / "example_dags"
E2E_DAGS = Path(__file__).resolve().parent / "dags"
E2E_IMAGES = EXAMPLE_DAGS / "data"
# Distinctive, so a search for it cannot match anything else.
TOKEN = f"e2e-token-{secrets.token_hex(16)}"
BATCH_ROWS = [
    json.loads(line) for line in (EXAMPLE_DAGS / "data" / "batch.jsonl").read_text().splitlines() if line
]
AIRFLOW_3_3 = Version(Version(airflow_version).base_version) >= Version("3.3")
needs_3_3 = pytest.mark.skipif(
    not AIRFLOW_3_3,
    reason=f"needs Airflow 3.3+ (trigger on_kill, task_state_store); this is {airflow_version}",
)
DAG_IDS = [
    "dreamina_image_to_video",
    "dreamina_single_task",
    "dreamina_content_pipeline",
    "dreamina_asset_consumer",
    "dreamina_e2e_mark_failed",
    "dreamina_e2e_reattach",
    "dreamina_e2e_timeout",
    "dreamina_e2e_clear_reuse",
    "dreamina_e2e_clear_regenerate",
]


class StatsdListener:
    """A StatsD server on 127.0.0.1 that keeps the provider's metrics (Airflow's own are dropped)."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.port: int = self.socket.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="statsd-listener", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.socket.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.lines.extend(
                line for line in data.decode(errors="replace").splitlines() if "dreamina." in line
            )

    def names(self) -> list[str]:
        return [line.partition(":")[0] for line in list(self.lines)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.socket.close()


@dataclass
class Stack:
    airflow: Airflow
    emulator: EmulatorHandle
    output_dir: Path
    metrics: StatsdListener


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("airflow")
    output_dir = home / "videos"
    metrics = StatsdListener()
    with run_emulator(token=TOKEN, queue_seconds=1, run_seconds=2) as emulator:
        env = {
            # Airflow's metrics, and so the provider's, go to a StatsD listener of this test.
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(metrics.port),
            "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
            # The e2e DAGs read their image through the deployment's roots; the examples set their own.
            "AIRFLOW_CONN_DREAMINA_DEFAULT": emulator.connection_json(allowed_image_roots=[str(E2E_IMAGES)]),
            "AIRFLOW_CONN_DREAMINA_NORETRY": emulator.connection_json(
                max_retries=0, allowed_image_roots=[str(E2E_IMAGES)]
            ),
            "AIRFLOW_VAR_DREAMINA_OUTPUT_DIR": str(output_dir),
            "AIRFLOW_VAR_DREAMINA_E2E_IMAGE": str(E2E_IMAGES / "square.png"),
            # No Fernet encryption, so that searching the database's bytes for the token also
            # reads trigger kwargs and every other value Airflow would otherwise encrypt.
            "AIRFLOW__CORE__FERNET_KEY": "",
        }
        with run_airflow([EXAMPLE_DAGS, E2E_DAGS], env=env, home=home) as airflow:
            airflow.set_pool("dreamina", 4, include_deferred=True)
            airflow.wait_for_dags(DAG_IDS, timeout=90)
            yield Stack(airflow, emulator, output_dir, metrics)
        # Everything the harness started is gone, task processes included.
        assert marked_processes(airflow.marker) == []
    metrics.close()


@pytest.fixture
def e2e(stack: Stack) -> Stack:
    stack.emulator.reset()
    return stack


def local_path(uri: str) -> Path:
    parsed = urlparse(uri)
    assert parsed.scheme == "file", uri
    return Path(parsed.path)


def check_video(uri: str) -> dict[str, Any]:
    """The stored MP4 is whole, plays, and matches its manifest; returns the manifest."""
    video = local_path(uri)
    data = video.read_bytes()
    manifest: dict[str, Any] = json.loads(video.with_name(video.name + MANIFEST_SUFFIX).read_text())
    assert data[4:8] == b"ftyp", f"{video} does not start with an MP4 ftyp box"
    assert len(data) == manifest["bytes"]
    assert hashlib.sha256(data).hexdigest() == manifest["sha256"]
    facts = inspect_file(video)
    assert (facts.frames, facts.fps) == (manifest["frames"], 24.0)
    assert decode_all(video) == manifest["frames"]
    assert manifest["stored_uri"] == uri
    return manifest


def return_value(airflow: Airflow, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
    entries = airflow.xcom_entries(dag_id, run_id, task_id, map_index=map_index)
    values = [entry["value"] for entry in entries if entry["key"] == "return_value"]
    assert len(values) == 1, entries
    return values[0]


def request_ids(emulator: EmulatorHandle) -> list[str]:
    return [job["request_id"] for job in emulator.requests()]


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        outcome = check()
        if outcome:
            return outcome
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.3)


def test_image_to_video_defers_to_the_triggerer_and_saves_a_verified_video(e2e: Stack) -> None:
    airflow, emulator = e2e.airflow, e2e.emulator
    dag_id = "dreamina_image_to_video"
    # Long enough that the sensor's first poke finds the request unfinished, so it must defer.
    emulator.script_jobs(queue_seconds=2, run_seconds=12)
    run_id = airflow.trigger_dag(dag_id, {"seed": 42})

    airflow.wait_for_task_state(dag_id, run_id, "wait", "deferred", timeout=60)
    run = airflow.wait_for_run(dag_id, run_id, timeout=120)
    assert run["state"] == "success", airflow.describe_run(dag_id, run_id)

    # The trigger ran in the triggerer: its log file carries a triggerer job's id.
    triggerer_ids = {job["id"] for job in airflow.jobs("TriggererJob")}
    trigger_logs = [
        path
        for path in airflow.log_files()
        if f"run_id={run_id}" in str(path) and "task_id=wait" in str(path) and ".log.trigger." in path.name
    ]
    assert len(trigger_logs) == 1, airflow.log_files()
    assert int(trigger_logs[0].name.rsplit(".", 2)[-2]) in triggerer_ids
    (request_id,) = request_ids(emulator)
    trigger_log = trigger_logs[0].read_text()
    assert f"request {request_id} succeeded with 1 output(s)" in trigger_log
    assert "Trigger fired event" in trigger_log
    # The sensor poked once, then the trigger polled while the video rendered.
    assert emulator.counters()["calls_per_request"][request_id]["status"] >= 3
    assert emulator.counters()["submissions"] == 1

    (uri,) = return_value(airflow, dag_id, run_id, "download")
    manifest = check_video(uri)
    assert manifest["request_id"] == request_id
    assert manifest["seed"] == 42
    assert manifest["frames"] == 121
    assert local_path(uri).is_relative_to(e2e.output_dir)

    # Metrics from the worker (the submit, the download) and from the triggerer: the sensor's one
    # poke saw the request unfinished, so only the trigger saw it end.
    wanted = {
        "airflow.dreamina.submit.succeeded",
        "airflow.dreamina.request.succeeded",
        "airflow.dreamina.request.generation_duration",
        "airflow.dreamina.download.bytes",
    }
    wait_for(lambda: wanted <= set(e2e.metrics.names()), f"metrics {wanted}", timeout=30)


def test_content_pipeline_makes_three_videos_one_asset_event_and_feeds_the_consumer(e2e: Stack) -> None:
    airflow, emulator = e2e.airflow, e2e.emulator
    pipeline, consumer = "dreamina_content_pipeline", "dreamina_asset_consumer"
    airflow.unpause(consumer)
    # Daily with catchup off: unpausing makes the scheduler start the latest interval's run.
    airflow.unpause(pipeline)
    (run,) = airflow.wait_for_runs(pipeline, 1, timeout=60)
    run = airflow.wait_for_run(pipeline, run["dag_run_id"], timeout=180)
    run_id = run["dag_run_id"]
    airflow.pause(pipeline)
    assert run["run_type"] == "scheduled"
    assert run["state"] == "success", airflow.describe_run(pipeline, run_id)

    generations = airflow.task_instances(pipeline, run_id, "video.generate")
    assert sorted(ti["map_index"] for ti in generations) == [0, 1, 2]
    assert all(ti["pool"] == "dreamina" and ti["state"] == "success" for ti in generations)
    downloads = airflow.task_instances(pipeline, run_id, "video.download")
    assert sorted(ti["map_index"] for ti in downloads) == [0, 1, 2]
    assert emulator.counters()["submissions"] == 3
    jobs = emulator.requests()
    assert sorted(job["input"]["prompt"] for job in jobs) == sorted(row["prompt"] for row in BATCH_ROWS)

    stored = return_value(airflow, pipeline, run_id, "publish")
    assert len(stored) == 3
    manifests = [check_video(uri) for uri in stored]
    assert sorted(manifest["request_id"] for manifest in manifests) == sorted(request_ids(emulator))
    assert all(manifest["frames"] == 121 for manifest in manifests)
    assert {manifest["prompt"] for manifest in manifests} == {row["prompt"] for row in BATCH_ROWS}
    assert sorted(Path(manifest["image_url"]).name for manifest in manifests) == sorted(
        row["image"] for row in BATCH_ROWS
    )
    assert len({local_path(uri).parent for uri in stored}) == 1

    (consumer_run,) = airflow.wait_for_runs(consumer, 1, timeout=60)
    consumer_run = airflow.wait_for_run(consumer, consumer_run["dag_run_id"], timeout=60)
    # Asked only now: Airflow 3.3.2's asset-events endpoint answers 500 while a run the event
    # created has not started yet (its start_date is None, which the response model rejects).
    # The downloads also announce each video (for the gallery); the batch is the event with "files".
    events = batch_events(airflow, pipeline)
    assert len(events) == 1, events
    assert events[0]["extra"]["files"] == stored
    assert consumer_run["state"] == "success", airflow.describe_run(consumer, consumer_run["dag_run_id"])
    assert consumer_run["run_type"] == "asset_triggered"
    summary = json.loads((local_path(stored[0]).parent / "summary.json").read_text())
    assert summary["count"] == 3
    assert summary["total_seconds"] == pytest.approx(3 * 121 / 24, abs=0.02)
    assert summary["sha256"] == [manifest["sha256"] for manifest in manifests]
    assert len(batch_events(airflow, pipeline)) == 1


def batch_events(airflow: Airflow, dag_id: str) -> list[dict[str, Any]]:
    return [event for event in airflow.asset_events(source_dag_id=dag_id) if "files" in event["extra"]]


@needs_3_3
def test_marking_a_deferred_task_failed_cancels_its_queued_request(e2e: Stack) -> None:
    airflow, emulator = e2e.airflow, e2e.emulator
    dag_id = "dreamina_e2e_mark_failed"
    emulator.script_jobs(queue_seconds=300)
    run_id = airflow.trigger_dag(dag_id)
    airflow.wait_for_task_state(dag_id, run_id, "generate", "deferred", timeout=60)
    # Only the trigger polls status: once it has, it runs in the triggerer and can be killed.
    request_id = wait_for(lambda: (ids := request_ids(emulator)) and ids[0], "a submission")
    wait_for(lambda: emulator.counters()["calls_per_request"][request_id]["status"] >= 1, "a status poll")

    airflow.mark_task(dag_id, run_id, "generate", "failed")

    wait_for(lambda: emulator.counters()["cancellations"] == 1, "the request to be cancelled", timeout=30)
    (job,) = emulator.requests()
    assert job["state"] == "cancelled"
    assert airflow.task_instance(dag_id, run_id, "generate")["state"] == "failed"
    assert airflow.wait_for_run(dag_id, run_id, timeout=60)["state"] == "failed"
    assert emulator.counters()["submissions"] == 1


@needs_3_3
def test_a_retry_after_the_trigger_gives_up_reattaches_instead_of_paying_again(e2e: Stack) -> None:
    airflow, emulator = e2e.airflow, e2e.emulator
    dag_id = "dreamina_e2e_reattach"
    tolerated = inspect.signature(DreaminaRequestTrigger).parameters["max_consecutive_errors"].default
    # One fault more than the trigger tolerates: try 1 ends in an error event, try 2 polls cleanly.
    emulator.inject_fault("status", 500, count=tolerated + 1)
    emulator.script_jobs(queue_seconds=1, run_seconds=12)
    run_id = airflow.trigger_dag(dag_id)

    run = airflow.wait_for_run(dag_id, run_id, timeout=120)
    described = airflow.describe_run(dag_id, run_id)
    logs = "\n".join(airflow.task_log(dag_id, run_id, "generate", try_number=n)[-3000:] for n in (1, 2))
    assert run["state"] == "success", f"{described}\n{logs}"
    counters = emulator.counters()
    assert counters["submissions"] == 1
    assert counters["faults_injected"] == tolerated + 1
    (request_id,) = request_ids(emulator)

    tries = airflow.task_tries(dag_id, run_id, "generate")
    assert [ti["try_number"] for ti in tries] == [1, 2]
    assert [ti["state"] for ti in tries] == ["failed", "success"]
    first = airflow.task_log(dag_id, run_id, "generate", try_number=1)
    assert f"after {tolerated + 1} failed polls in a row" in first
    second = airflow.task_log(dag_id, run_id, "generate", try_number=2)
    assert f"Reattaching to request {request_id}" in second
    assert return_value(airflow, dag_id, run_id, "generate")["request_id"] == request_id


def test_the_trigger_deadline_cancels_a_request_still_queued(e2e: Stack) -> None:
    airflow, emulator = e2e.airflow, e2e.emulator
    dag_id = "dreamina_e2e_timeout"
    emulator.script_jobs(queue_seconds=300)
    run_id = airflow.trigger_dag(dag_id)

    run = airflow.wait_for_run(dag_id, run_id, timeout=90)
    assert run["state"] == "failed", airflow.describe_run(dag_id, run_id)
    assert emulator.counters()["cancellations"] == 1
    (job,) = emulator.requests()
    assert job["state"] == "cancelled"
    log = airflow.task_log(dag_id, run_id, "generate")
    assert f"request {job['request_id']} was still queued when the deadline passed; it was cancelled" in log


def test_the_token_is_in_no_log_xcom_rendered_field_or_database_row(e2e: Stack) -> None:
    airflow = e2e.airflow
    dag_id = "dreamina_single_task"
    e2e.emulator.script_jobs(run_seconds=10)
    run_id = airflow.trigger_dag(dag_id)
    airflow.wait_for_task_state(dag_id, run_id, "generate", "deferred", timeout=60)
    # While deferred, the trigger's row (kwargs in plain text) is in the database file: no token.
    wait_for(lambda: b"max_consecutive_errors" in airflow.database_bytes(), "the trigger row")
    assert TOKEN.encode() not in airflow.database_bytes()
    run = airflow.wait_for_run(dag_id, run_id, timeout=120)
    assert run["state"] == "success", airflow.describe_run(dag_id, run_id)
    (uri,) = return_value(airflow, dag_id, run_id, "download")
    check_video(uri)

    token = TOKEN.encode()
    paths = airflow.log_files() + sorted(airflow.process_logs_dir.glob("*.log"))
    paths += airflow.database_files()
    contents = {path: path.read_bytes() for path in paths}
    leaks = [str(path) for path, content in contents.items() if token in content]
    # The search covers real material: trigger logs, and this run's request in some file.
    assert any(".log.trigger." in path.name for path in paths), "no trigger log to search"
    (request_id,) = request_ids(e2e.emulator)
    assert any(request_id.encode() in content for content in contents.values())

    searched_api = 0
    request_seen = False
    for dag in DAG_IDS:
        for dag_run in airflow.dag_runs(dag):
            run_id = dag_run["dag_run_id"]
            for ti in airflow.task_instances(dag, run_id):
                where = f"{dag}/{run_id}/{ti['task_id']}[{ti['map_index']}]"
                if TOKEN in json.dumps(ti["rendered_fields"]):
                    leaks.append(f"rendered fields of {where}")
                xcoms = json.dumps(
                    airflow.xcom_entries(dag, run_id, ti["task_id"], map_index=ti["map_index"])
                )
                request_seen |= "request_id" in xcoms
                if TOKEN in xcoms:
                    leaks.append(f"XComs of {where}")
                for try_number in range(1, ti["try_number"] + 1):
                    log = airflow.task_log(dag, run_id, ti["task_id"], try_number, ti["map_index"])
                    if TOKEN in log:
                        leaks.append(f"log of try {try_number} of {where}")
                searched_api += 1
    assert leaks == []
    # The searches saw real material: this run's two tasks at least (every earlier test's too).
    assert searched_api >= 2
    assert request_seen


@needs_3_3
@pytest.mark.parametrize(("on_clear", "submissions"), [("reuse", 1), ("regenerate", 2)])
def test_a_clear_follows_on_clear(e2e: Stack, on_clear: str, submissions: int) -> None:
    airflow, emulator = e2e.airflow, e2e.emulator
    dag_id = f"dreamina_e2e_clear_{on_clear}"
    # Long enough that the deferring worker has exited before the trigger fires: on a loaded
    # machine Airflow 3.3.2 otherwise marks the resumed task failed ("finished with state success,
    # but the task instance's state attribute is queued"), a scheduler race, not the provider.
    emulator.script_jobs(count=2, queue_seconds=1, run_seconds=8)
    run_id = airflow.trigger_dag(dag_id)
    run = airflow.wait_for_run(dag_id, run_id, timeout=120)
    assert run["state"] == "success", airflow.task_log(dag_id, run_id, "generate")[-2500:]
    first = return_value(airflow, dag_id, run_id, "generate")["request_id"]

    airflow.clear_task(dag_id, run_id, "generate")
    # The clear is done once the task has run again: a second try that ended.
    airflow.wait_for_task_state(dag_id, run_id, "generate", ("success", "failed"), timeout=120)
    instance = airflow.task_instance(dag_id, run_id, "generate")
    log = airflow.task_log(dag_id, run_id, "generate", try_number=2)
    assert (instance["try_number"], instance["state"]) == (2, "success"), log[-3000:]
    assert emulator.counters()["submissions"] == submissions
    again = return_value(airflow, dag_id, run_id, "generate")["request_id"]
    if on_clear == "reuse":
        assert again == first
        assert f"reusing request {first}" in log and "on_clear='regenerate'" in log
    else:
        assert again != first
        assert f"instead of reusing {first}" in log
