"""The emulator's outage of every RunComfy endpoint, and answers dripped a byte at a time.

The distributed chaos scenarios (tests/distributed) take RunComfy down for minutes (503s, resets,
refused connections) while generations run and are submitted, and kill a triggerer while a status
answer is still arriving. These tests hold what those scenarios rely on.
"""

from __future__ import annotations

import concurrent.futures
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from airflow_provider_dreamina.emulator import MODEL_ID, EmulatorError, EmulatorHandle

SUBMIT_PATH = f"/v1/models/{MODEL_ID}"


def submit(api: httpx.Client, emulator: EmulatorHandle) -> httpx.Response:
    return api.post(
        SUBMIT_PATH, json={"prompt": "a lighthouse at dusk", "image_urls": [emulator.sample_image_url]}
    )


def finished_request(api: httpx.Client, emulator: EmulatorHandle) -> tuple[str, str]:
    """A request that has succeeded, and its output's URL."""
    emulator.script_jobs(queue_seconds=0, run_seconds=0, output_bytes=2_000)
    request_id = submit(api, emulator).json()["request_id"]
    return request_id, api.get(f"/v1/requests/{request_id}/result").json()["output"]["video"]


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def every_call(
    api: httpx.Client, request_id: str, output_url: str
) -> dict[str, Callable[[], httpx.Response]]:
    """One call of each RunComfy endpoint, output downloads included."""
    return {
        "submit": lambda: api.post(SUBMIT_PATH, json={"prompt": "x", "image_urls": ["https://a.b/c.png"]}),
        "status": lambda: api.get(f"/v1/requests/{request_id}/status"),
        "result": lambda: api.get(f"/v1/requests/{request_id}/result"),
        "cancel": lambda: api.post(f"/v1/requests/{request_id}/cancel"),
        "model": lambda: api.get(SUBMIT_PATH),
        "balance": lambda: api.get("/prod/v2/balance"),
        "download": lambda: api.get(output_url),
    }


@pytest.fixture
def up_again(emulator: EmulatorHandle) -> Iterator[EmulatorHandle]:
    """The emulator, answering again after the test (a `refused` phase keeps even the control plane away)."""
    yield emulator
    emulator.wait_until_up(timeout=30)
    emulator.reset()


def test_a_503_outage_answers_503_on_every_endpoint_and_ends_by_itself(
    api: httpx.Client, emulator: EmulatorHandle
) -> None:
    request_id, output_url = finished_request(api, emulator)
    outage = emulator.start_outage([("503", 2)])
    assert outage["kind"] == "503"
    assert outage["ends_at"] == pytest.approx(outage["started_at"] + 2)

    for endpoint, call in every_call(api, request_id, output_url).items():
        answer = call()
        assert answer.status_code == 503, endpoint
        assert answer.json()["error_code"] == 500001, endpoint
    # The control plane is not RunComfy: it keeps answering.
    assert emulator.counters()["outage_answers"] == {"503": 7}
    assert emulator.counters()["submissions"] == 1

    wait_for(lambda: emulator.outage()["kind"] is None)  # type: ignore[index]
    assert api.get(f"/v1/requests/{request_id}/status").json()["status"] == "completed"
    assert api.get(output_url).status_code == 200


def test_a_reset_outage_resets_every_call_after_reading_it_and_creates_nothing(
    api: httpx.Client, emulator: EmulatorHandle
) -> None:
    request_id, output_url = finished_request(api, emulator)
    emulator.start_outage([("reset", 30)])

    for endpoint, call in every_call(api, request_id, output_url).items():
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            call()
        assert emulator.counters()["outage_answers"]["reset"] >= 1, endpoint
    assert emulator.counters()["submissions"] == 1

    emulator.end_outage()
    assert emulator.outage() is None
    assert api.get(f"/v1/requests/{request_id}/status").status_code == 200


def test_a_refused_outage_refuses_connections_then_listens_on_the_same_port(
    api: httpx.Client, up_again: EmulatorHandle
) -> None:
    emulator = up_again
    request_id, _ = finished_request(api, emulator)
    outage = emulator.start_outage([("refused", 1.5)])
    time.sleep(0.3)

    # The kernel refuses: a client knows for certain that nothing was sent (httpx.ConnectError).
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{emulator.base_url}/_emulator/health", trust_env=False)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", emulator.port)) != 0

    emulator.wait_until_up(timeout=30)
    assert time.time() >= outage["ends_at"] - 0.05
    # The same port, the same jobs.
    assert api.get(f"/v1/requests/{request_id}/status").json()["status"] == "completed"
    assert emulator.outage()["kind"] is None  # type: ignore[index]


def test_a_refused_outage_closes_open_connections_so_the_next_call_is_refused_not_reset(
    api: httpx.Client, up_again: EmulatorHandle
) -> None:
    emulator = up_again
    request_id, _ = finished_request(api, emulator)
    # `api` keeps its connection open: without the close, the next call would go out on it.
    assert api.get(f"/v1/requests/{request_id}/status").status_code == 200
    emulator.start_outage([("refused", 1.5)])
    time.sleep(0.3)

    with pytest.raises(httpx.ConnectError):
        api.get(f"/v1/requests/{request_id}/status")


def test_phases_follow_each_other(api: httpx.Client, up_again: EmulatorHandle) -> None:
    emulator = up_again
    request_id, _ = finished_request(api, emulator)
    outage = emulator.start_outage([(503, 0.6), ("reset", 0.6), ("refused", 0.6)])
    assert [
        (phase["kind"], round(phase["ends_at"] - phase["starts_at"], 3)) for phase in outage["phases"]
    ] == [
        ("503", 0.6),
        ("reset", 0.6),
        ("refused", 0.6),
    ]
    status = f"{emulator.base_url}/v1/requests/{request_id}/status"
    headers = {"Authorization": f"Bearer {emulator.token}"}

    seen = []
    while time.time() < outage["ends_at"] + 0.5:
        try:
            seen.append(str(httpx.get(status, headers=headers, trust_env=False, timeout=5).status_code))
        except httpx.ConnectError:
            seen.append("refused")
        except (httpx.ReadError, httpx.RemoteProtocolError):
            seen.append("reset")
        time.sleep(0.05)

    order = [kind for index, kind in enumerate(seen) if index == 0 or seen[index - 1] != kind]
    assert order == ["503", "reset", "refused", "200"]


def test_an_outage_is_ended_by_reset_and_checked(emulator: EmulatorHandle) -> None:
    emulator.start_outage([("503", 60)])
    emulator.reset()
    assert emulator.outage() is None
    for phases in ([], [("down", 1)], [("503", 0)], [("503", 90_000)]):
        with pytest.raises(EmulatorError, match="422"):
            emulator.start_outage(phases)


def test_drip_sends_the_same_answer_a_byte_at_a_time(api: httpx.Client, emulator: EmulatorHandle) -> None:
    request_id = submit(api, emulator).json()["request_id"]
    whole = api.get(f"/v1/requests/{request_id}/status")
    emulator.inject_fault("status", "drip", delay=0.01)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        answer = pool.submit(api.get, f"/v1/requests/{request_id}/status")
        wait_for(lambda: emulator.counters()["answers_dripping"] == 1)
        dripped = answer.result(timeout=30)
        took = time.monotonic() - started

    assert dripped.status_code == 200
    assert dripped.headers["content-length"] == str(len(dripped.content))
    assert dripped.json()["request_id"] == request_id
    assert len(dripped.content) == len(whole.content)
    assert took >= (len(dripped.content) - 1) * 0.01
    wait_for(lambda: emulator.counters()["answers_dripping"] == 0)
    assert emulator.counters()["drips_cut_short"] == 0
    # Once by default.
    assert emulator.faults() == []


def test_a_drip_stops_when_the_client_hangs_up(api: httpx.Client, emulator: EmulatorHandle) -> None:
    request_id = submit(api, emulator).json()["request_id"]
    emulator.inject_fault("status", "drip", delay=0.2)

    with socket.create_connection(("127.0.0.1", emulator.port)) as raw:
        raw.sendall(
            f"GET /v1/requests/{request_id}/status HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {emulator.token}\r\n\r\n".encode()
        )
        head = raw.recv(4096)
        assert head.startswith(b"HTTP/1.1 200")
        wait_for(lambda: emulator.counters()["answers_dripping"] == 1)
    # The client is gone (a killed process's socket is closed the same way).

    wait_for(lambda: emulator.counters()["drips_cut_short"] == 1)
    assert emulator.counters()["answers_dripping"] == 0


def test_drip_applies_to_downloads_too(api: httpx.Client, emulator: EmulatorHandle) -> None:
    _, output_url = finished_request(api, emulator)
    whole = api.get(output_url).content
    emulator.inject_fault("download", "drip", delay=0.0005)

    assert api.get(output_url).content == whole
    assert emulator.counters()["faults_injected"] == 1
