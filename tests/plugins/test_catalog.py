"""Looking generations up in the metadata database: only the provider's events, only readable DAGs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from airflow_provider_dreamina.plugins import catalog, records
from airflow_provider_dreamina.plugins.catalog import Filters
from tests.plugins.gallery_records import store_video

DAY = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def session() -> Iterator[Session]:
    """A database holding only Airflow's ``asset_event`` table: all the gallery reads."""
    from airflow.models.asset import AssetEvent

    engine = create_engine("sqlite://")
    AssetEvent.__table__.create(engine)
    records.details_cache.clear()
    with Session(engine) as opened:
        yield opened


def add_event(
    session: Session, extra: dict[str, Any], *, dag_id: str | None = "dag_a", when: datetime = DAY
) -> int:
    from airflow.models.asset import AssetEvent

    row = AssetEvent(
        asset_id=1,
        extra=extra,
        source_dag_id=dag_id,
        source_task_id="download" if dag_id else None,
        source_run_id="manual__1" if dag_id else None,
        source_map_index=-1,
        timestamp=when,
    )
    session.add(row)
    session.commit()
    return int(row.id)


def stored(tmp_path: Path, session: Session, request_id: str, **kwargs: Any) -> int:
    output = store_video(tmp_path / request_id, request_id)
    return add_event(session, {"request_id": request_id, "outputs": [output]}, **kwargs)


def test_newest_first_and_only_dags_the_person_may_read(tmp_path: Path, session: Session) -> None:
    stored(tmp_path, session, "old", when=DAY - timedelta(days=1))
    stored(tmp_path, session, "new")
    stored(tmp_path, session, "secret", dag_id="dag_b")
    page = catalog.find_generations(session, {"dag_a"}, Filters(), before=None, limit=10)
    assert [g.request_id for g in page.generations] == ["new", "old"]
    assert all(g.playable for g in page.generations)
    assert catalog.find_generations(session, set(), Filters(), before=None, limit=10).generations == []
    assert catalog.dags_with_generations(session, {"dag_a", "dag_b", "dag_c"}) == ["dag_a", "dag_b"]


def test_events_not_emitted_by_a_task_are_not_the_providers(tmp_path: Path, session: Session) -> None:
    # The REST API can create an event with any extra; it has no source task.
    forged = stored(tmp_path, session, "forged", dag_id=None)
    other = add_event(session, {"files": ["file:///x.mp4"]})  # the pipeline's batch event
    assert catalog.find_generations(session, {"dag_a"}, Filters(), before=None, limit=10).generations == []
    assert catalog.find_generation(session, {"dag_a"}, forged, 0) is None
    assert catalog.find_generation(session, {"dag_a"}, other, 0) is None


def test_filters_by_dag_day_and_request(tmp_path: Path, session: Session) -> None:
    stored(tmp_path, session, "monday", when=DAY - timedelta(days=1))
    stored(tmp_path, session, "tuesday")
    stored(tmp_path, session, "elsewhere", dag_id="dag_b")
    readable = {"dag_a", "dag_b"}

    def request_ids(filters: Filters) -> list[str]:
        return [
            g.request_id
            for g in catalog.find_generations(session, readable, filters, before=None, limit=10).generations
        ]

    assert request_ids(Filters(dag_id="dag_b")) == ["elsewhere"]
    assert request_ids(Filters(day=date(2026, 11, 23))) == ["monday"]
    assert request_ids(Filters(request_id="tuesday")) == ["tuesday"]
    assert catalog.newest_for_request(session, readable, "monday").request_id == "monday"  # type: ignore[union-attr]
    assert catalog.newest_for_request(session, {"dag_b"}, "monday") is None


def test_pages_and_one_card_per_stored_file(tmp_path: Path, session: Session) -> None:
    for index in range(5):
        stored(tmp_path, session, f"r{index}")
    # The same file announced twice (two outlets): shown once.
    output = store_video(tmp_path / "twice", "twice")
    add_event(session, {"request_id": "twice", "outputs": [output]})
    add_event(session, {"request_id": "twice", "outputs": [output]})
    first = catalog.find_generations(session, {"dag_a"}, Filters(), before=None, limit=3)
    assert [g.request_id for g in first.generations] == ["twice", "r4", "r3"]
    assert first.older_than is not None
    second = catalog.find_generations(session, {"dag_a"}, Filters(), before=first.older_than, limit=3)
    assert [g.request_id for g in second.generations] == ["r2", "r1", "r0"]
