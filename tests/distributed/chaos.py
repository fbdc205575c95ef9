"""The deployment and the emulator as one scenario sees them, with the waits the scenarios share."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from airflow_provider_dreamina.emulator import EmulatorHandle
from tests.distributed.harness import Deployment
from tests.e2e.harness import AirflowHarnessError

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 60.0, interval: float = 0.2) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = check()
        if outcome:
            return outcome
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def _unanswered() -> tuple[type[BaseException], ...]:
    """What a call raises while the API server, the database or the broker cannot answer."""
    import psycopg2

    return (AirflowHarnessError, httpx.HTTPError, psycopg2.Error, OSError)


def patiently(check: Callable[[], T | None], what: str, timeout: float = 60.0, interval: float = 0.5) -> T:
    """:func:`wait_for`, counting a call that cannot be answered yet (a service down) as "not yet"."""
    unanswered = _unanswered()

    def tolerant() -> T | None:
        try:
            return check()
        except unanswered:
            return None

    return wait_for(tolerant, what, timeout, interval)


@dataclass
class Chaos:
    """One deployment and one emulator (reset before each scenario), and where videos are saved.

    ``outage_emulator`` is the RunComfy of the connection ``dreamina_outage`` (scenario h), reset
    by that scenario only.
    """

    deployment: Deployment
    emulator: EmulatorHandle
    token: str
    output_root: Path
    outage_emulator: EmulatorHandle

    def trigger(self, dag_id: str, folder: str, **conf: Any) -> tuple[str, Path]:
        """Start a run saving into its own folder; returns the run id and that folder."""
        run_id = self.deployment.trigger_dag(dag_id, {"folder": folder, **conf})
        return run_id, self.output_root / folder

    def finished_run(self, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
        run = self.deployment.wait_for_run(dag_id, run_id, timeout=timeout)
        return run

    def finished_run_patiently(self, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
        """The run once it has ended, asking through a service outage (see :func:`patiently`)."""

        def ended() -> dict[str, Any] | None:
            run = self.deployment.dag_run(dag_id, run_id)
            return run if run["state"] in ("success", "failed") else None

        try:
            return patiently(ended, f"run {dag_id}/{run_id} to end", timeout, interval=1.0)
        except AssertionError as error:
            raise AssertionError(f"{error}; {self.deployment.describe_run(dag_id, run_id)}") from None

    def states(self, dag_id: str, run_id: str, task_id: str) -> list[str | None]:
        """The state of each (mapped) instance of a task."""
        return [ti["state"] for ti in self.deployment.task_instances(dag_id, run_id, task_id)]

    def run_figures(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """Tries used by a run's tasks, and whether any task ended otherwise than in success (a person
        would have to look: clear it, or mark it)."""
        instances = self.deployment.task_instances(dag_id, run_id)
        unfinished = sorted(
            ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else "") + f"={ti['state']}"
            for ti in instances
            if ti["state"] not in ("success", "skipped")
        )
        return {
            "tasks": len(instances),
            "tries": sum(ti["try_number"] for ti in instances),
            "retried_tries": sum(max(0, ti["try_number"] - 1) for ti in instances),
            "human_needed": bool(unfinished),
            "tasks_not_successful": unfinished,
        }

    def task_state(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str | None:
        state: str | None = self.deployment.task_instance(dag_id, run_id, task_id, map_index)["state"]
        return state

    def running_task_pid(self, dag_id: str, run_id: str, task_id: str, timeout: float = 120.0) -> int:
        """The process id of a running task, as the task instance records it."""

        def pid() -> int | None:
            instance = self.deployment.task_instance(dag_id, run_id, task_id)
            return instance["pid"] if instance["state"] == "running" and instance.get("pid") else None

        return wait_for(pid, f"{dag_id}.{task_id} to run", timeout)

    def trigger_id(self, dag_id: str, run_id: str, task_id: str, timeout: float = 120.0) -> int:
        """The id of the trigger a deferred task waits on, once a triggerer has picked it up."""

        def assigned() -> int | None:
            rows = self.deployment.postgres.query(
                "SELECT ti.trigger_id FROM task_instance ti JOIN trigger t ON t.id = ti.trigger_id "
                "WHERE ti.dag_id = %s AND ti.run_id = %s AND ti.task_id = %s AND t.triggerer_id IS NOT NULL",
                (dag_id, run_id, task_id),
            )
            return rows[0][0] if rows else None

        return wait_for(assigned, f"a triggerer to pick up {dag_id}.{task_id}", timeout)

    def tries(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[tuple[int, str]]:
        """(try number, state) of every try of a task, oldest first."""
        tries = self.deployment.task_tries(dag_id, run_id, task_id, map_index)
        return sorted((entry["try_number"], entry["state"]) for entry in tries)

    def log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        return self.deployment.task_log(dag_id, run_id, task_id, try_number)
