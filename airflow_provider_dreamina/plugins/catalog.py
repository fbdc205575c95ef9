"""Looking generations up in Airflow's metadata database: the provider's asset events.

Only events a task emitted count (the REST API can create events too, with no source task), only
of DAGs the person may read, and only those whose extra carries a ``request_id``: the shape
``DreaminaDownloadOperator`` gives them. Everything else about a generation comes from
:mod:`records`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from datetime import time as day_start
from typing import TYPE_CHECKING, Any

from airflow_provider_dreamina.plugins.records import (
    EventRow,
    Generation,
    generation_at,
    generations_in,
    with_details,
    with_details_all,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@dataclass(frozen=True)
class Filters:
    """What the person asked to see."""

    dag_id: str | None = None
    day: date | None = None
    request_id: str | None = None


def _request_id_column() -> Any:
    """``extra["request_id"]`` as SQL, None where the column type cannot index JSON.

    Airflow 3.3 stores ``extra`` as SQLAlchemy's JSON (indexable on SQLite, PostgreSQL and MySQL);
    older versions use a plain JSON text field, and then the shape is checked in Python only.
    """
    from airflow.models.asset import AssetEvent

    try:
        return AssetEvent.extra["request_id"].as_string()
    except (NotImplementedError, AttributeError, TypeError):
        return None


def _provider_events_query(dag_ids: set[str], filters: Filters) -> Any:
    from airflow.models.asset import AssetEvent
    from sqlalchemy import select

    query = select(AssetEvent).where(
        # Events created through the REST API have no source task: not the provider's.
        AssetEvent.source_task_id.is_not(None),
        AssetEvent.source_run_id.is_not(None),
        AssetEvent.source_dag_id.in_(dag_ids),
    )
    request_id = _request_id_column()
    if request_id is not None:
        query = query.where(request_id.is_not(None))
        if filters.request_id:
            query = query.where(request_id == filters.request_id)
    if filters.dag_id:
        query = query.where(AssetEvent.source_dag_id == filters.dag_id)
    if filters.day:
        start = datetime.combine(filters.day, day_start.min, tzinfo=timezone.utc)
        query = query.where(AssetEvent.timestamp >= start, AssetEvent.timestamp < start + timedelta(days=1))
    return query


def _shaped(row: EventRow, filters: Filters) -> bool:
    """The event carries a request id (the download operator's shape), the one asked for if any."""
    request_id = row.extra.get("request_id")
    return isinstance(request_id, str) and bool(request_id) and filters.request_id in (None, request_id)


def _row(event: Any) -> EventRow:
    return EventRow(
        id=event.id,
        timestamp=event.timestamp,
        extra=event.extra if isinstance(event.extra, Mapping) else {},
        dag_id=event.source_dag_id,
        task_id=event.source_task_id,
        run_id=event.source_run_id,
        map_index=event.source_map_index if event.source_map_index is not None else -1,
    )


def _newest_rows(
    session: Session, dag_ids: set[str], filters: Filters, *, before: int | None, limit: int
) -> list[EventRow]:
    """Up to ``limit`` candidate events, newest first (not yet checked for the provider's shape)."""
    from airflow.models.asset import AssetEvent

    if not dag_ids:
        return []
    query = _provider_events_query(dag_ids, filters)
    if before is not None:
        query = query.where(AssetEvent.id < before)
    query = query.order_by(AssetEvent.id.desc()).limit(limit)
    return [_row(event) for event in session.scalars(query)]


def provider_events(
    session: Session, dag_ids: set[str], filters: Filters, *, before: int | None, limit: int
) -> list[EventRow]:
    """The newest events of readable DAGs that look like the provider's, newest first."""
    rows = _newest_rows(session, dag_ids, filters, before=before, limit=limit)
    return [row for row in rows if _shaped(row, filters)]


def provider_event(session: Session, dag_ids: set[str], event_id: int) -> EventRow | None:
    """One event by id, None unless it is the provider's and its DAG is readable."""
    from airflow.models.asset import AssetEvent

    if not dag_ids:
        return None
    query = _provider_events_query(dag_ids, Filters()).where(AssetEvent.id == event_id)
    event = session.scalars(query).first()
    row = _row(event) if event is not None else None
    return row if row is not None and _shaped(row, Filters()) else None


def dags_with_generations(session: Session, dag_ids: set[str]) -> list[str]:
    """Readable DAGs that have provider events, for the DAG filter."""
    from airflow.models.asset import AssetEvent
    from sqlalchemy import select

    if not dag_ids:
        return []
    query = _provider_events_query(dag_ids, Filters()).with_only_columns(AssetEvent.source_dag_id).distinct()
    return sorted(str(dag_id) for dag_id in session.scalars(select(query.subquery().c[0])))


@dataclass
class Page:
    """One page of generations, newest first, and where the next (older) page starts."""

    generations: list[Generation]
    older_than: int | None


def find_generations(
    session: Session, dag_ids: set[str], filters: Filters, *, before: int | None, limit: int
) -> Page:
    """Up to ``limit`` generations, newest first; one file stored by several events is shown once."""
    found: list[Generation] = []
    seen: set[tuple[str, str | None]] = set()
    cursor, scanned, more = before, 0, True
    while len(found) < limit and more and scanned < 20 * limit:
        batch = _newest_rows(session, dag_ids, filters, before=cursor, limit=2 * limit)
        more = len(batch) == 2 * limit
        for row in batch:
            scanned += 1
            cursor = row.id
            if not _shaped(row, filters):
                continue
            for generation in generations_in(row):
                identity = (generation.video.uri, generation.video.sha256)
                if identity not in seen:
                    seen.add(identity)
                    found.append(generation)
            if len(found) >= limit:
                more = True
                break
    return Page(with_details_all(found[:limit]), cursor if more else None)


def find_generation(session: Session, dag_ids: set[str], event_id: int, index: int) -> Generation | None:
    row = provider_event(session, dag_ids, event_id)
    if row is None:
        return None
    generation = generation_at(row, index)
    return with_details(generation) if generation is not None else None


def newest_for_request(session: Session, dag_ids: set[str], request_id: str) -> Generation | None:
    for row in provider_events(session, dag_ids, Filters(request_id=request_id), before=None, limit=20):
        for generation in generations_in(row):
            return with_details(generation)
    return None
