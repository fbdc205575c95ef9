"""The async client shared by a triggerer's waits never has more requests in flight than its pool.

Requests beyond ``max_connections`` wait for a slot in the hook, not inside httpx's pool, whose
bookkeeping costs CPU in proportion to the requests queued in it (BENCHMARKS.md, triggerer scale).
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from airflow_provider_dreamina.hooks.dreamina import DreaminaHook

POOL_SIZE = 4
WAITS = 40


class InFlightTransport(httpx.AsyncBaseTransport):
    """Answers every status call after a short pause, counting how many are in flight at once."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most_in_flight = 0
        self.answered = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.01)
        finally:
            self.in_flight -= 1
        self.answered += 1
        request_id = request.url.path.split("/")[3]
        return httpx.Response(200, json={"request_id": request_id, "status": "in_progress"})


@pytest.fixture
def small_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    connection = {
        "conn_type": "dreamina",
        "host": "http://runcomfy.test",
        "password": "token-for-the-slot-test",
        "extra": {"max_connections": POOL_SIZE, "max_retries": 0},
    }
    monkeypatch.setenv("AIRFLOW_CONN_DREAMINA_DEFAULT", json.dumps(connection))


@pytest.mark.usefixtures("small_pool")
def test_concurrent_waits_keep_at_most_max_connections_requests_in_flight() -> None:
    transport = InFlightTransport()

    async def poll_all() -> list[str]:
        hooks = [DreaminaHook(async_transport=transport) for _ in range(WAITS)]
        try:
            statuses = await asyncio.gather(
                *(hook.aget_status(f"request-{index}") for index, hook in enumerate(hooks))
            )
        finally:
            await DreaminaHook.aclose_shared_clients()
        return [status.request_id for status in statuses]

    answered = asyncio.run(poll_all())

    assert answered == [f"request-{index}" for index in range(WAITS)]
    assert transport.answered == WAITS
    assert transport.most_in_flight == POOL_SIZE


def test_every_client_of_a_process_shares_one_tls_context() -> None:
    """Loading the CA bundle costs about 20 ms of CPU: a task process pays for it once."""
    from airflow_provider_dreamina.runcomfy.clients import (
        api_client,
        client_options,
        output_client,
        tls_context,
    )
    from airflow_provider_dreamina.runcomfy.settings import DreaminaSettings

    settings = DreaminaSettings(conn_id="c", base_url="https://api.test", token="t" * 32)
    assert client_options(settings)["verify"] is tls_context()
    with api_client(settings) as api, output_client(settings) as output:
        contexts = {id(client._transport._pool._ssl_context) for client in (api, output)}  # type: ignore[attr-defined]
    assert contexts == {id(tls_context())}
    assert tls_context(trust_env=False) is not tls_context()
