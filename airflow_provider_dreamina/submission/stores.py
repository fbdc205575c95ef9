"""Where a submit task's record lives: Airflow's ``task_state_store``, or a ledger of files.

``task_state_store`` (Airflow 3.3+) is used by default; otherwise, or when the operator forces
it, a ledger of small JSON files under ``state_path`` (a local directory or any object-storage
URI), one per dag id, run id, task id and map index, each written atomically. Reading a record
fails closed (see ``records.parse``): an unreadable record stops the task, it is never "none".
"""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import quote

from airflow_provider_dreamina.defaults import STATE_KEY
from airflow_provider_dreamina.exceptions import DreaminaStateError, DreaminaStateWriteError
from airflow_provider_dreamina.locations import Location, NotOnThisMachine, locate, write_atomically
from airflow_provider_dreamina.submission.records import SubmitRecord, parse

#: A ledger record is a few hundred bytes; anything much larger is not one.
_LEDGER_READ_LIMIT = 64 * 1024


class TaskState(Protocol):
    """Where one task instance's record lives."""

    description: str

    def read(self) -> SubmitRecord | None: ...

    def write(self, record: SubmitRecord) -> None: ...


class StoreState:
    """The record in Airflow's ``task_state_store`` (Airflow 3.3+)."""

    def __init__(self, store: Any, address: str) -> None:
        self.store = store
        self.description = f"task_state_store (key {STATE_KEY!r} of {address})"

    def read(self) -> SubmitRecord | None:
        try:
            value = self.store.get(STATE_KEY)
        except Exception as error:  # AirflowRuntimeError and whatever the API server answered
            raise DreaminaStateError(
                f"could not read {self.description} ({type(error).__name__}: {error}); nothing was submitted"
            ) from None
        return parse(value, self.description)

    def write(self, record: SubmitRecord) -> None:
        try:
            self.store.set(STATE_KEY, record.to_json())
        except Exception as error:
            raise DreaminaStateWriteError(
                f"could not write {self.description} ({type(error).__name__}: {error})"
            ) from None


class LedgerState:
    """The record as one JSON file under ``state_path``, written atomically."""

    def __init__(self, state_path: str, dag_id: str, run_id: str, task_id: str, map_index: int) -> None:
        parts = [
            _key_part(name, value)
            for name, value in (("dag_id", dag_id), ("run_id", run_id), ("task_id", task_id))
        ]
        self.relative = "/".join(parts) + f"/{int(map_index)}.json"
        self.state_path = state_path.rstrip("/")
        try:
            self.location: Location = locate(self.state_path)
        except NotOnThisMachine as error:
            raise DreaminaStateError(f"state_path {error}") from None
        self.description = f"the ledger at {self.state_path} ({self.relative})"

    def read(self) -> SubmitRecord | None:
        try:
            if self.location.path is not None:
                path = self.location.path / self.relative
                if not path.exists():
                    return None
                with path.open("rb") as handle:
                    raw = handle.read(_LEDGER_READ_LIMIT + 1)
            else:
                target = self.location.storage_path() / self.relative
                if not target.exists():
                    return None
                with target.open("rb") as handle:
                    raw = handle.read(_LEDGER_READ_LIMIT + 1)
        except OSError as error:
            raise DreaminaStateError(
                f"could not read {self.description}: {error}; nothing was submitted"
            ) from None
        if len(raw) > _LEDGER_READ_LIMIT:
            raise DreaminaStateError(
                f"the record in {self.description} is larger than {_LEDGER_READ_LIMIT} bytes: it is not one "
                "this provider wrote; nothing was submitted"
            )
        return parse(raw, self.description)

    def write(self, record: SubmitRecord) -> None:
        data = record.model_dump_json().encode()
        try:
            if self.location.path is not None:
                write_atomically(self.location.path / self.relative, data)
            else:
                # One PUT: an object store shows either the old object or the new one, never half.
                target = self.location.storage_path() / self.relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        except OSError as error:
            raise DreaminaStateWriteError(f"could not write {self.description}: {error}") from None


def _key_part(name: str, value: str) -> str:
    """One path segment of a ledger key; a part that could name another place is refused."""
    text = str(value)
    if text in ("", ".", ".."):
        raise DreaminaStateError(f"cannot keep a ledger record for a task whose {name} is {text!r}")
    return quote(text, safe="")


def task_state(context: Any, *, state_path: str | None, force_ledger: bool = False) -> TaskState | None:
    """Where this task's record lives: ``task_state_store`` unless forced to (or only able to) use
    the ledger under ``state_path``; None when neither is available."""
    ti = context["ti"]
    map_index = getattr(ti, "map_index", -1)
    map_index = -1 if map_index is None else int(map_index)
    dag_id, run_id, task_id = (str(getattr(ti, name, "")) for name in ("dag_id", "run_id", "task_id"))
    store = context.get("task_state_store")
    if store is not None and not (force_ledger and state_path):
        return StoreState(store, f"{dag_id}/{run_id}/{task_id}[{map_index}]")
    if not state_path:
        return None
    return LedgerState(state_path, dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index)
