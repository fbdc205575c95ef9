"""Shared fixtures: one emulator per test session, reset before each test that uses it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from airflow_provider_dreamina.emulator import EmulatorHandle, run_emulator
from tests.helpers import EMULATOR_STARTUP_SECONDS, Api

# Short job durations keep the suite fast; tests that need other timings configure them.
EMULATOR_OPTIONS = {"queue_seconds": 0.3, "run_seconds": 0.5}


@pytest.fixture(scope="session")
def emulator_session() -> Iterator[EmulatorHandle]:
    with run_emulator(startup_timeout=EMULATOR_STARTUP_SECONDS, **EMULATOR_OPTIONS) as handle:
        yield handle


@pytest.fixture
def emulator(emulator_session: EmulatorHandle, monkeypatch: pytest.MonkeyPatch) -> EmulatorHandle:
    """The session's emulator, reset, with ``dreamina_default`` pointing at it."""
    emulator_session.reset()
    monkeypatch.setenv("AIRFLOW_CONN_DREAMINA_DEFAULT", emulator_session.connection_json())
    return emulator_session


@pytest.fixture(autouse=True)
def _no_leaked_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own AIRFLOW_CONN_DREAMINA_DEFAULT must never reach a real account from tests.
    if "AIRFLOW_CONN_DREAMINA_DEFAULT" in os.environ:
        monkeypatch.delenv("AIRFLOW_CONN_DREAMINA_DEFAULT")


@pytest.fixture
def memory_storage() -> Iterator[None]:
    """Make ``memory://`` an Airflow object store, as a provider's filesystem would be."""
    import fsspec
    from airflow.sdk.io import attach

    filesystem = fsspec.filesystem("memory")
    attach("memory", fs=filesystem)
    yield
    filesystem.store.clear()
    filesystem.pseudo_dirs.clear()
    filesystem.pseudo_dirs.append("")


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest) -> Api:
    """Calls a hook method by its sync name, once directly and once through its async twin."""
    return Api(request.param)
