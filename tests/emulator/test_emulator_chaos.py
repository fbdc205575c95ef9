"""The emulator's knobs for crash tests: a submit answer held after the request is paid, slow downloads.

The distributed chaos scenarios (tests/distributed) kill a worker inside these windows: during a held
submit answer (the request exists and is charged, the worker never learns its id), and in the middle
of a throttled download.
"""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import pytest

from airflow_provider_dreamina.emulator import MODEL_ID, EmulatorError, EmulatorHandle
from tests.helpers import wait_until

SUBMIT_PATH = f"/v1/models/{MODEL_ID}"


def submit(api: httpx.Client, emulator: EmulatorHandle) -> httpx.Response:
    body = {"prompt": "a lighthouse at dusk", "image_urls": [emulator.sample_image_url]}
    return api.post(SUBMIT_PATH, json=body)


def test_hold_creates_and_charges_the_request_before_answering(
    api: httpx.Client, emulator: EmulatorHandle
) -> None:
    emulator.configure(balance_usd=10.0)
    # Done at once, so it is charged well within the hold.
    emulator.script_jobs(queue_seconds=0, run_seconds=0)
    emulator.inject_fault("submit", "hold", delay=1)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(submit, api, emulator)
        # The request exists, and will be charged when it succeeds, while its answer is held back.
        wait_until(lambda: emulator.counters()["submissions"] == 1)
        assert not answer.done()
        (job,) = emulator.requests()
        wait_until(lambda: emulator.counters()["generations_charged"] == 1)
        assert emulator.counters()["balance_usd"] == 10.0 - emulator.config()["price_usd"]
        response = answer.result(timeout=20)

    assert response.status_code == 200
    assert response.json()["request_id"] == job["request_id"]
    assert emulator.counters()["faults_injected"] == 1


def test_hold_fires_once_by_default(api: httpx.Client, emulator: EmulatorHandle) -> None:
    emulator.inject_fault("submit", "hold", delay=0.5)

    started = time.monotonic()
    assert submit(api, emulator).status_code == 200
    held = time.monotonic() - started

    assert held >= 0.5
    assert emulator.faults() == []
    assert submit(api, emulator).status_code == 200
    assert emulator.counters()["submissions"] == 2


def test_hold_is_refused_on_downloads(emulator: EmulatorHandle) -> None:
    with pytest.raises(EmulatorError, match="API endpoints only"):
        emulator.inject_fault("download", "hold")


def test_download_rate_throttles_outputs_and_keeps_their_bytes(
    api: httpx.Client, emulator: EmulatorHandle
) -> None:
    emulator.script_jobs(queue_seconds=0, run_seconds=0, output_bytes=1_000_000)
    request_id = submit(api, emulator).json()["request_id"]
    url = api.get(f"/v1/requests/{request_id}/result").json()["output"]["video"]
    whole = httpx.get(url, trust_env=False).content

    emulator.configure(download_bytes_per_second=1_000_000)
    started = time.monotonic()
    throttled = httpx.get(url, trust_env=False, timeout=30).content
    elapsed = time.monotonic() - started

    assert throttled == whole
    assert len(whole) >= 1_000_000
    # At 1 MB/s the last 256 KiB chunk's pause alone is about 0.26 s; most of a second in all.
    assert elapsed >= 0.7
    emulator.reset()
    assert emulator.config()["download_bytes_per_second"] is None
