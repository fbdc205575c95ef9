"""The gallery's app in-process, over events a test builds instead of Airflow's metadata database."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from airflow.api_fastapi.common.db.common import _get_session
from airflow.api_fastapi.core_api.security import get_user
from fastapi.testclient import TestClient

from airflow_provider_dreamina.plugins import access, catalog, integrity, records
from airflow_provider_dreamina.plugins.gallery import create_app
from airflow_provider_dreamina.plugins.records import EventRow, generation_at, with_details


class FakeCatalog:
    """The events a test stored, looked up as ``catalog`` would (readable DAGs only)."""

    def __init__(self) -> None:
        self.events: list[EventRow] = []
        self.readable_seen: list[set[str]] = []

    def find_generations(
        self, session: Any, dag_ids: set[str], filters: Any, *, before: Any, limit: int
    ) -> Any:
        self.readable_seen.append(dag_ids)
        found = [
            with_details(generation)
            for row in reversed(self.events)
            if row.dag_id in dag_ids
            and (not filters.request_id or row.extra["request_id"] == filters.request_id)
            for generation in records.generations_in(row)
        ]
        return catalog.Page(found[:limit], None)

    def find_generation(self, session: Any, dag_ids: set[str], event_id: int, index: int) -> Any:
        for row in self.events:
            if row.id == event_id and row.dag_id in dag_ids:
                found = generation_at(row, index)
                return with_details(found) if found else None
        return None

    def dags_with_generations(self, session: Any, dag_ids: set[str]) -> list[str]:
        return sorted({row.dag_id for row in self.events} & dag_ids)

    def newest_for_request(self, session: Any, dag_ids: set[str], request_id: str) -> Any:
        for row in reversed(self.events):
            if row.extra["request_id"] == request_id and row.dag_id in dag_ids:
                return with_details(records.generations_in(row)[0])
        return None


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeCatalog:
    records.details_cache.clear()
    integrity.verified.clear()
    found = FakeCatalog()
    for name in ("find_generations", "find_generation", "dags_with_generations", "newest_for_request"):
        monkeypatch.setattr(catalog, name, getattr(found, name))
    monkeypatch.setattr(access, "readable_dag_ids", lambda user: {"dag_a"})
    monkeypatch.setattr(access, "login_url", lambda next_url: "/auth/login?next=x")
    return found


@pytest.fixture
def client(fake: FakeCatalog) -> Iterator[TestClient]:
    app = create_app()
    app.dependency_overrides[get_user] = lambda: {"name": "reader"}
    app.dependency_overrides[_get_session] = lambda: None
    with TestClient(app, root_path="/dreamina") as opened:
        yield opened


@pytest.fixture
def anonymous(fake: FakeCatalog) -> Iterator[TestClient]:
    app = create_app()
    app.dependency_overrides[_get_session] = lambda: None
    with TestClient(app, root_path="/dreamina") as opened:
        yield opened


@pytest.fixture
def served(fake: FakeCatalog) -> Iterator[TestClient]:
    """A signed-in client that sees a server error as the browser would: a 500, not an exception."""
    app = create_app()
    app.dependency_overrides[get_user] = lambda: {"name": "reader"}
    app.dependency_overrides[_get_session] = lambda: None
    with TestClient(app, root_path="/dreamina", raise_server_exceptions=False) as opened:
        yield opened
