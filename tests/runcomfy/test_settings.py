"""Hooks on one event loop share a reading of their connection for a short while.

A triggerer that starts a batch of waits looks the connection up once instead of once per wait;
an edited connection is picked up once the reading is older than ``SETTINGS_TTL_SECONDS``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from airflow.sdk import BaseHook

from airflow_provider_dreamina.hooks.dreamina import DreaminaHook, DreaminaSettings
from airflow_provider_dreamina.runcomfy import settings as settings_module
from tests.helpers import ScriptedClock

TOKEN = "token-for-the-settings-test"


def connection(token: str = TOKEN) -> str:
    return json.dumps({"conn_type": "dreamina", "host": "http://runcomfy.test", "password": token})


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Connection ids looked up through ``aget_connection``, each after a short pause."""
    monkeypatch.setenv("AIRFLOW_CONN_DREAMINA_DEFAULT", connection())
    looked_up: list[str] = []
    real = BaseHook.aget_connection.__func__  # type: ignore[attr-defined]

    async def counting(cls: Any, conn_id: str) -> Any:
        looked_up.append(conn_id)
        await asyncio.sleep(0.01)
        return await real(cls, conn_id)

    monkeypatch.setattr(DreaminaHook, "aget_connection", classmethod(counting))
    return looked_up


def run(coroutine: Any) -> Any:
    async def and_close() -> Any:
        try:
            return await coroutine
        finally:
            await DreaminaHook.aclose_shared_clients()

    return asyncio.run(and_close())


def test_concurrent_hooks_look_the_connection_up_once(lookups: list[str]) -> None:
    async def read_all() -> list[DreaminaSettings]:
        return list(await asyncio.gather(*(DreaminaHook().aget_settings() for _ in range(50))))

    readings = run(read_all())

    assert lookups == ["dreamina_default"]
    assert {settings.token for settings in readings} == {TOKEN}


def test_each_connection_id_is_read_on_its_own(lookups: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DREAMINA_OTHER", connection("the-other-token"))

    async def read_both() -> tuple[DreaminaSettings, DreaminaSettings]:
        return await DreaminaHook().aget_settings(), await DreaminaHook("dreamina_other").aget_settings()

    default, other = run(read_both())

    assert sorted(lookups) == ["dreamina_default", "dreamina_other"]
    assert (default.token, other.token) == (TOKEN, "the-other-token")


def test_an_edited_connection_is_read_again_once_the_reading_is_stale(
    lookups: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ScriptedClock().install(monkeypatch, settings_module)

    async def read_edit_read() -> tuple[str, str, str]:
        first = (await DreaminaHook().aget_settings()).token
        monkeypatch.setenv("AIRFLOW_CONN_DREAMINA_DEFAULT", connection("rotated-token"))
        within = (await DreaminaHook().aget_settings()).token
        clock.sleep(settings_module.SETTINGS_TTL_SECONDS + 0.01)
        after = (await DreaminaHook().aget_settings()).token
        return first, within, after

    assert run(read_edit_read()) == (TOKEN, TOKEN, "rotated-token")
    assert lookups == ["dreamina_default", "dreamina_default"]


def test_a_failed_lookup_is_not_remembered(lookups: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_DREAMINA_DEFAULT")

    async def fail_then_create() -> str:
        with pytest.raises(Exception, match="dreamina_default"):
            await DreaminaHook().aget_settings()
        monkeypatch.setenv("AIRFLOW_CONN_DREAMINA_DEFAULT", connection())
        return (await DreaminaHook().aget_settings()).token

    assert run(fail_then_create()) == TOKEN
    assert lookups == ["dreamina_default", "dreamina_default"]


def test_a_cancelled_waiter_does_not_cancel_the_shared_lookup(lookups: list[str]) -> None:
    async def cancel_one() -> str:
        first = asyncio.ensure_future(DreaminaHook().aget_settings())
        second = asyncio.ensure_future(DreaminaHook().aget_settings())
        await asyncio.sleep(0)
        first.cancel()
        settings = await second
        assert first.cancelled()
        return settings.token

    assert run(cancel_one()) == TOKEN
    assert lookups == ["dreamina_default"]


def test_event_loops_do_not_share_readings(lookups: list[str]) -> None:
    for _ in range(2):
        run(DreaminaHook().aget_settings())

    assert lookups == ["dreamina_default", "dreamina_default"]
