"""What a submit task remembers about its paid request, across tries, crashes and clears.

RunComfy has no idempotency key, so the provider keeps a two-phase record itself: an *intent*
(input fingerprint, time, try number) is written before the paid POST, and the request id right
after it. The next run of the same task reads it back: a request id means reattach; an intent
without one means an earlier try may have paid for a request whose id was lost (an *orphaned
submit*), which is detected instead of silently paid for again.

Where the record lives: Airflow's ``task_state_store`` (3.3+) by default; otherwise, or when the
operator forces it, a ledger of small JSON files under ``state_path`` (a local directory or any
object-storage URI), one per dag id, run id, task id and map index, each written atomically.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, ValidationError

from airflow_provider_dreamina.exceptions import DreaminaStateError

log = logging.getLogger(__name__)

#: Key under which the submit operator keeps its record in ``task_state_store``.
STATE_KEY = "dreamina_request"
_LEDGER_READ_LIMIT = 64 * 1024


class SubmitRecord(BaseModel):
    """The two-phase record of one task's paid submit."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    fingerprint: str
    #: When the intent was written, just before the paid POST; None once nothing is pending.
    intent_at: datetime | None = None
    try_number: int | None = None
    #: ``max_tries`` when the record was written: Airflow raises it when a user clears the task.
    max_tries: int | None = None
    request_id: str | None = None
    submitted_at: datetime | None = None

    @property
    def orphaned(self) -> bool:
        """An intent without a request id: an earlier try may have paid for a request it lost."""
        return self.intent_at is not None and self.request_id is None

    def cleared_since(self, max_tries: int | None) -> bool:
        """Whether a user cleared the task since this record was written."""
        return max_tries is not None and self.max_tries is not None and max_tries > self.max_tries

    def intent_window(self) -> str:
        start = self.intent_at.isoformat(timespec="seconds") if self.intent_at else "an unknown time"
        return f"from {start} (try {self.try_number})"


def now() -> datetime:
    return datetime.now(timezone.utc)


class TaskState(Protocol):
    """Where one task instance's record lives."""

    description: str

    def read(self) -> SubmitRecord | None: ...

    def write(self, record: SubmitRecord) -> None: ...


class StoreState:
    """The record in Airflow's ``task_state_store`` (Airflow 3.3+)."""

    description = "task_state_store"

    def __init__(self, store: Any) -> None:
        self.store = store

    def read(self) -> SubmitRecord | None:
        return _parse(self.store.get(STATE_KEY))

    def write(self, record: SubmitRecord) -> None:
        try:
            self.store.set(STATE_KEY, record.model_dump(mode="json"))
        except Exception as error:  # AirflowRuntimeError and whatever the API server answered
            raise DreaminaStateError(
                f"could not write the task's record to task_state_store ({type(error).__name__}: {error})"
            ) from None


class LedgerState:
    """The record as one JSON file under ``state_path``, written atomically."""

    def __init__(self, state_path: str, dag_id: str, run_id: str, task_id: str, map_index: int) -> None:
        parts = [quote(str(part), safe="") for part in (dag_id, run_id, task_id)]
        self.relative = "/".join(parts) + f"/{map_index}.json"
        self.state_path = state_path.rstrip("/")
        self.description = f"the ledger at {self.state_path}"

    def _local(self) -> Path | None:
        if "://" not in self.state_path:
            return Path(self.state_path).expanduser()
        if self.state_path.startswith("file://"):
            return Path(self.state_path.removeprefix("file://"))
        return None

    def read(self) -> SubmitRecord | None:
        try:
            local = self._local()
            if local is not None:
                path = local / self.relative
                if not path.exists():
                    return None
                with path.open("rb") as handle:
                    raw = handle.read(_LEDGER_READ_LIMIT)
            else:
                target = _storage_path(self.state_path) / self.relative
                if not target.exists():
                    return None
                with target.open("rb") as handle:
                    raw = handle.read(_LEDGER_READ_LIMIT)
        except OSError as error:
            raise DreaminaStateError(
                f"could not read {self.description} ({self.relative}): {error}"
            ) from None
        try:
            return _parse(json.loads(raw))
        except ValueError:
            log.warning("Ignoring an unreadable record in %s (%s)", self.description, self.relative)
            return None

    def write(self, record: SubmitRecord) -> None:
        data = record.model_dump_json().encode()
        try:
            local = self._local()
            if local is not None:
                _write_atomically(local / self.relative, data)
            else:
                # One PUT: an object store shows either the old object or the new one, never half.
                target = _storage_path(self.state_path) / self.relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        except OSError as error:
            raise DreaminaStateError(
                f"could not write {self.description} ({self.relative}): {error}"
            ) from None


def _storage_path(uri: str) -> Any:
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(uri)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _parse(value: Any) -> SubmitRecord | None:
    if not isinstance(value, dict) or not value.get("fingerprint"):
        return None
    try:
        return SubmitRecord.model_validate(value)
    except ValidationError:
        return None


def task_state(context: Any, *, state_path: str | None, force_ledger: bool = False) -> TaskState | None:
    """Where this task's record lives: ``task_state_store`` unless forced to (or only able to) use
    the ledger under ``state_path``; None when neither is available."""
    store = context.get("task_state_store")
    if store is not None and not (force_ledger and state_path):
        return StoreState(store)
    if not state_path:
        return None
    ti = context["ti"]
    map_index = getattr(ti, "map_index", -1)
    return LedgerState(
        state_path,
        dag_id=str(getattr(ti, "dag_id", "dag")),
        run_id=str(getattr(ti, "run_id", "run")),
        task_id=str(getattr(ti, "task_id", "task")),
        map_index=-1 if map_index is None else int(map_index),
    )
