"""Fixtures of the emulator's own tests."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from airflow_provider_dreamina.emulator import EmulatorHandle


@pytest.fixture
def api(emulator: EmulatorHandle) -> Iterator[httpx.Client]:
    """A plain HTTP client holding the emulator's token, as a provider would send it.

    Its timeout allows a first download to wait for a render.
    """
    with httpx.Client(
        base_url=emulator.base_url,
        headers={"Authorization": f"Bearer {emulator.token}"},
        timeout=60,
        trust_env=False,
    ) as client:
        yield client
