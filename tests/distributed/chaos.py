"""The deployment and the emulator as one scenario sees them, with the waits the scenarios share."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from airflow_provider_dreamina.emulator import EmulatorHandle
from tests.distributed.harness import Deployment

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


@dataclass
class Chaos:
    """One deployment and one emulator (reset before each scenario), and where videos are saved."""

    deployment: Deployment
    emulator: EmulatorHandle
    token: str
    output_root: Path

    def trigger(self, dag_id: str, folder: str, **conf: Any) -> tuple[str, Path]:
        """Start a run saving into its own folder; returns the run id and that folder."""
        run_id = self.deployment.trigger_dag(dag_id, {"folder": folder, **conf})
        return run_id, self.output_root / folder

    def finished_run(self, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
        run = self.deployment.wait_for_run(dag_id, run_id, timeout=timeout)
        return run

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
