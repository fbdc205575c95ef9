"""A real Airflow (scheduler, triggerer, dag processor, API server) for end-to-end tests and benchmarks.

Importable without pytest: it needs only the standard library, httpx and an Airflow installed in the
running interpreter (every component runs as ``sys.executable -m airflow ...``).

Usage::

    from tests.e2e.harness import run_airflow
    from airflow_provider_dreamina.emulator import run_emulator

    with run_emulator() as emulator, run_airflow(
        ["example_dags"], env={"AIRFLOW_CONN_DREAMINA_DEFAULT": emulator.connection_json()}
    ) as airflow:
        airflow.wait_for_dags(["dreamina_image_to_video"])
        run_id = airflow.trigger_dag("dreamina_image_to_video", {"frames": 121})
        run = airflow.wait_for_run("dreamina_image_to_video", run_id, timeout=120)
        assert run["state"] == "success", airflow.describe_run("dreamina_image_to_video", run_id)

API
---
``run_airflow(dags_folders, *, env=None, home=None, components=COMPONENTS, startup_timeout=120)``
    Context manager. Copies each folder of ``dags_folders`` into ``<home>/dags/<folder name>/``,
    migrates a fresh SQLite database, starts each component in its own process group on free
    ports (API server, worker and trigger log servers) with SQLite and LocalExecutor, waits until
    the API answers and every component heartbeats, and yields an :class:`Airflow`. On exit,
    even when the block raised, it stops every process it started, including task processes that
    left the components' process groups (found by a marker in their environment). ``home``
    defaults to a temporary directory that is removed afterwards; a given ``home`` is kept.
    ``env`` is added to every component's environment (connections, variables, settings that
    override the harness's own ``AIRFLOW__...`` defaults, see ``base_environment``: simple auth
    manager with every user an admin, DAGs paused at creation, parallelism 8, DAG folder
    refreshed every 5 s, trigger timeouts checked every 5 s). Airflow settings from the calling
    shell (``AIRFLOW__*``, ``AIRFLOW_CONN_*``, ``AIRFLOW_VAR_*``, ``AIRFLOW_HOME``) are not passed on.

``Airflow`` attributes
    ``home``, ``dags_folder``, ``logs_dir`` (task and trigger logs), ``process_logs_dir`` (one
    ``<component>.log`` per component), ``db_path`` (the SQLite file), ``api_url``
    (``http://127.0.0.1:<port>``), ``env`` (the components' environment), ``marker``.

``Airflow`` methods (REST calls go to the public API v2 as an admin; each raises
``AirflowHarnessError`` with the response on an unexpected status)
    ``api(method, path, *, expect=(200,), **httpx_kwargs) -> httpx.Response``: any call, path
        under ``/api/v2``.
    ``airflow_command(*arguments, timeout=120) -> CompletedProcess``: the CLI, in this home.
    ``wait_for_dags(dag_ids, timeout=60)``: until each DAG is parsed (raises with import errors).
    ``import_errors() -> list[dict]``.
    ``unpause(dag_id)`` / ``pause(dag_id)``.
    ``set_pool(name, slots, *, include_deferred=False)``.
    ``trigger_dag(dag_id, conf=None, *, unpause=True, logical_date=None) -> run_id``.
    ``dag_runs(dag_id) -> list[dict]``; ``dag_run(dag_id, run_id) -> dict``.
    ``wait_for_run(dag_id, run_id, timeout=120) -> dict``: until the run succeeds or fails.
    ``wait_for_runs(dag_id, count, timeout=120) -> list[dict]``: until ``count`` runs exist.
    ``task_instances(dag_id, run_id, task_id=None) -> list[dict]`` (every map index).
    ``task_instance(dag_id, run_id, task_id, map_index=-1) -> dict``.
    ``wait_for_task_state(dag_id, run_id, task_id, states, timeout=60, map_index=-1) -> dict``.
    ``task_tries(dag_id, run_id, task_id, map_index=-1) -> list[dict]``: every try's final record.
    ``mark_task(dag_id, run_id, task_id, state, map_index=None) -> list[dict]``: as the UI does.
    ``xcom_entries(dag_id, run_id, task_id, map_index=None) -> list[dict]`` (values included).
    ``task_log(dag_id, run_id, task_id, try_number=1, map_index=-1) -> str``: through the API,
        the task's own log merged with its trigger's, one line per entry (its message, then its
        other fields as JSON).
    ``asset_events(**filters) -> list[dict]``: e.g. ``source_dag_id=...``.
    ``login(username, password) -> token``: sign the REST client in as that user (for settings
        where not every user is an admin, e.g. ``AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS``).
    ``jobs(job_type=None) -> list[dict]``: e.g. ``"TriggererJob"``.
    ``describe_run(dag_id, run_id) -> str``: states of every task, for assertion messages.
    ``process_log(component) -> str``; ``log_files() -> list[Path]`` (everything under logs).
    ``database_files() -> list[Path]``; ``database_bytes() -> bytes`` (the DB and its WAL, raw).
    ``restart(component, *, crash=False)``: stop one component's process group (SIGTERM, or
        SIGKILL with ``crash``) and start it again, e.g. ``restart("triggerer", crash=True)``.
    ``wait_until_ready(timeout)``: until the API answers and the components report healthy (health
        comes from heartbeats in the database, so right after a restart it may still reflect the
        stopped process for a few seconds).
    ``stop()``: stop everything; idempotent. Afterwards ``stragglers`` lists the ids of processes
        that had left their component's process group and were killed by the marker sweep.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import httpx

COMPONENTS = ("api-server", "scheduler", "triggerer", "dag-processor")
TERMINAL_RUN_STATES = frozenset({"success", "failed"})
#: Name of the environment variable that tags every process of one harness (for the final sweep).
MARKER_VARIABLE = "DREAMINA_E2E_HARNESS"
STOP_GRACE_SECONDS = 10.0
_HEALTHY_COMPONENTS = ("scheduler", "triggerer", "dag_processor")

T = TypeVar("T")


class AirflowHarnessError(RuntimeError):
    """Airflow did not start, or did not answer or behave as a test waited for."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def base_environment(home: Path, api_port: int, marker: str) -> dict[str, str]:
    """The settings every component runs with: a private home, free ports, short intervals."""
    api_url = f"http://127.0.0.1:{api_port}"
    return {
        "AIRFLOW_HOME": str(home),
        MARKER_VARIABLE: marker,
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__BASE_URL": api_url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "5",
        # A developer's own settings must not leak in; the caller's `env` may set these again.
        "AIRFLOW_CONFIG": str(home / "airflow.cfg"),
        "PYTHONUNBUFFERED": "1",
    }


class Airflow:
    """A running Airflow started by :func:`run_airflow`; see the module docstring for its API."""

    def __init__(self, home: Path, env: dict[str, str], components: Sequence[str]) -> None:
        self.home = home
        self.env = env
        self.marker = env[MARKER_VARIABLE]
        self.dags_folder = Path(env["AIRFLOW__CORE__DAGS_FOLDER"])
        self.logs_dir = Path(env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"])
        self.process_logs_dir = home / "processes"
        self.db_path = Path(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///"))
        self.api_url = env["AIRFLOW__API__BASE_URL"]
        self.components = tuple(components)
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._http = httpx.Client(base_url=self.api_url, timeout=30.0, trust_env=False)
        self._stopped = False
        #: Ids of processes that outlived their component's process group and were killed by stop().
        self.stragglers: list[int] = []

    # -- processes -------------------------------------------------------------------------

    def airflow_command(self, *arguments: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run an ``airflow`` CLI command in this home; raises with its output when it fails."""
        result = subprocess.run(
            [sys.executable, "-m", "airflow", *arguments],
            env=self._full_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise AirflowHarnessError(
                f"`airflow {' '.join(arguments)}` exited with {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def start(self, timeout: float) -> None:
        self.process_logs_dir.mkdir(parents=True, exist_ok=True)
        self.airflow_command("db", "migrate")
        for component in self.components:
            self._start_component(component)
        self.wait_until_ready(timeout)

    def _full_env(self) -> dict[str, str]:
        # Airflow settings from the caller's shell (say AIRFLOW__CORE__DAGS_FOLDER) would point
        # the components elsewhere: only the harness's own and the caller's `env` count.
        inherited = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")) and name != "AIRFLOW_HOME"
        }
        return {**inherited, **self.env}

    def _start_component(self, component: str) -> None:
        command = [sys.executable, "-m", "airflow", component]
        with open(self.process_logs_dir / f"{component}.log", "ab") as output:
            # A process group of its own, so stopping it reaches every child it forked.
            self._processes[component] = subprocess.Popen(
                command,
                env=self._full_env(),
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.home,
            )

    def _stop_components(self, components: Iterable[str]) -> None:
        stop_process_groups([process for name in components if (process := self._processes.pop(name, None))])

    def restart(self, component: str, *, crash: bool = False) -> None:
        """Stop one component (its whole process group; SIGKILL with ``crash``) and start it again."""
        if crash and (process := self._processes.get(component)) is not None:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        self._stop_components([component])
        self._start_component(component)

    def wait_until_ready(self, timeout: float) -> None:
        """Wait until the API answers and every started component reports healthy."""
        deadline = time.monotonic() + timeout
        last_problem = "no answer yet"
        while time.monotonic() < deadline:
            for component, process in self._processes.items():
                if process.poll() is not None:
                    raise AirflowHarnessError(
                        f"{component} exited with {process.returncode} while starting:\n"
                        f"{self.process_log(component)[-4000:]}"
                    )
            try:
                response = self._http.get("/api/v2/monitor/health")
                if response.status_code == 200:
                    health = response.json()
                    unhealthy = [
                        name
                        for name in _HEALTHY_COMPONENTS
                        if name.replace("_", "-") in self.components
                        and (health.get(name) or {}).get("status") != "healthy"
                    ]
                    if not unhealthy:
                        self._authenticate()
                        return
                    last_problem = f"not yet healthy: {', '.join(unhealthy)}"
                else:
                    last_problem = f"health check answered HTTP {response.status_code}"
            except httpx.HTTPError as error:
                last_problem = f"API server not answering ({error})"
            time.sleep(0.5)
        tails = "\n".join(f"--- {name}\n{self.process_log(name)[-2000:]}" for name in self.components)
        raise AirflowHarnessError(f"Airflow was not ready within {timeout} s ({last_problem}):\n{tails}")

    def _authenticate(self) -> None:
        # With simple_auth_manager_all_admins, GET /auth/token hands out an admin token.
        response = self._http.get("/auth/token")
        if response.status_code in (200, 201):
            self._http.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def login(self, username: str, password: str) -> str:
        """Sign in as a user of the simple auth manager (when not every user is an admin); returns the JWT."""
        response = self._http.post("/auth/token", json={"username": username, "password": password})
        if response.status_code not in (200, 201):
            raise AirflowHarnessError(
                f"POST /auth/token answered HTTP {response.status_code}: {response.text}"
            )
        token = str(response.json()["access_token"])
        self._http.headers["Authorization"] = f"Bearer {token}"
        return token

    def stop(self) -> None:
        """Stop every component, then every process that still carries this harness's marker."""
        if self._stopped:
            return
        self._stopped = True
        self._stop_components(list(self._processes))
        self.stragglers = kill_marked_processes(self.marker)
        self._http.close()

    # -- REST API --------------------------------------------------------------------------

    def api(self, method: str, path: str, *, expect: Iterable[int] = (200,), **kwargs: Any) -> httpx.Response:
        """Call the public REST API (``path`` below ``/api/v2``); raises on an unexpected status.

        SQLite takes one writer at a time: while the scheduler writes, the API server may answer
        "Database error" (database is locked). A call that is safe to repeat (not a POST) is sent
        again then, up to :data:`_LOCKED_TRIES` times.
        """
        for attempt in range(1, _LOCKED_TRIES + 1):
            response = self._http.request(method, f"/api/v2{path}", **kwargs)
            locked = response.status_code == 500 and "Database error" in response.text
            if not locked or method.upper() == "POST" or attempt == _LOCKED_TRIES:
                break
            time.sleep(0.5 * attempt)
        if response.status_code not in tuple(expect):
            raise AirflowHarnessError(
                f"{method} /api/v2{path} answered HTTP {response.status_code}: {response.text[:2000]}"
            )
        return response

    def import_errors(self) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = self.api("GET", "/importErrors").json()["import_errors"]
        return errors

    def wait_for_dags(self, dag_ids: Iterable[str], timeout: float = 60.0) -> None:
        """Wait until the DAG processor has stored each DAG; fails early on an import error."""
        missing = set(dag_ids)

        def parsed() -> bool:
            for dag_id in sorted(missing):
                if self.api("GET", f"/dags/{dag_id}", expect=(200, 404)).status_code == 200:
                    missing.discard(dag_id)
            if missing and (errors := self.import_errors()):
                raise AirflowHarnessError(f"DAG import errors: {errors}")
            return not missing

        _poll(parsed, timeout, lambda: f"DAGs not parsed within {timeout} s: {sorted(missing)}")

    def pause(self, dag_id: str) -> None:
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": True})

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def set_pool(self, name: str, slots: int, *, include_deferred: bool = False) -> None:
        body = {
            "name": name,
            "slots": slots,
            "include_deferred": include_deferred,
            "description": "created by the e2e harness",
        }
        if self.api("GET", f"/pools/{name}", expect=(200, 404)).status_code == 200:
            self.api("PATCH", f"/pools/{name}", json=body)
        else:
            self.api("POST", "/pools", json=body, expect=(200, 201))

    def trigger_dag(
        self,
        dag_id: str,
        conf: Mapping[str, Any] | None = None,
        *,
        unpause: bool = True,
        logical_date: str | None = None,
    ) -> str:
        """Start a run (as the UI's Trigger button does); returns its run id."""
        if unpause:
            self.unpause(dag_id)
        body = {"conf": dict(conf or {}), "logical_date": logical_date}
        run = self.api("POST", f"/dags/{dag_id}/dagRuns", json=body).json()
        return str(run["dag_run_id"])

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = self.api(
            "GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100, "order_by": "run_after"}
        ).json()["dag_runs"]
        return runs

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        run: dict[str, Any] = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}").json()
        return run

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until the run succeeds or fails, and return it (the caller checks which)."""
        return _poll(
            lambda: run if (run := self.dag_run(dag_id, run_id))["state"] in TERMINAL_RUN_STATES else None,
            timeout,
            lambda: (
                f"run {dag_id}/{run_id} did not finish within {timeout} s; "
                f"{self.describe_run(dag_id, run_id)}"
            ),
        )

    def wait_for_runs(self, dag_id: str, count: int = 1, timeout: float = 120.0) -> list[dict[str, Any]]:
        """Wait until the DAG has at least ``count`` runs (scheduled, asset-triggered...)."""
        return _poll(
            lambda: runs if len(runs := self.dag_runs(dag_id)) >= count else None,
            timeout,
            lambda: f"{dag_id} did not get {count} run(s) within {timeout} s: {self.dag_runs(dag_id)}",
        )

    def task_instances(self, dag_id: str, run_id: str, task_id: str | None = None) -> list[dict[str, Any]]:
        """Every task instance of the run (every map index), optionally of one task only."""
        params: dict[str, Any] = {"limit": 1000}
        if task_id is not None:
            params["task_id"] = task_id
        instances: list[dict[str, Any]] = self.api(
            "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params=params
        ).json()["task_instances"]
        if task_id is not None:  # older servers ignore the filter
            instances = [ti for ti in instances if ti["task_id"] == task_id]
        return instances

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        if map_index >= 0:
            path += f"/{map_index}"
        instance: dict[str, Any] = self.api("GET", path).json()
        return instance

    def wait_for_task_state(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        states: str | Iterable[str],
        timeout: float = 60.0,
        map_index: int = -1,
    ) -> dict[str, Any]:
        """Wait until the task instance is in one of ``states``; returns it as seen then."""
        wanted = {states} if isinstance(states, str) else set(states)
        seen: list[str | None] = []

        def reached() -> dict[str, Any] | None:
            instance = self.task_instance(dag_id, run_id, task_id, map_index)
            if not seen or seen[-1] != instance["state"]:
                seen.append(instance["state"])
            return instance if instance["state"] in wanted else None

        return _poll(
            reached,
            timeout,
            lambda: (
                f"{dag_id}/{run_id}/{task_id} did not reach {sorted(wanted)} within {timeout} s; "
                f"states seen: {seen}"
            ),
            interval=0.3,
        )

    def task_tries(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[dict[str, Any]]:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        path += f"/{map_index}/tries" if map_index >= 0 else "/tries"
        tries: list[dict[str, Any]] = self.api("GET", path).json()["task_instances"]
        return tries

    def mark_task(
        self, dag_id: str, run_id: str, task_id: str, state: str, map_index: int | None = None
    ) -> list[dict[str, Any]]:
        """Set a task instance's state as a user does in the UI (``failed``, ``success``...)."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        if map_index is not None:
            path += f"/{map_index}"
        instances: list[dict[str, Any]] = self.api("PATCH", path, json={"new_state": state}).json()[
            "task_instances"
        ]
        return instances

    def clear_task(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """Clear a task instance as a user does in the UI, so that it runs again."""
        body = {
            "dry_run": False,
            "task_ids": [task_id],
            "dag_run_id": run_id,
            "only_failed": False,
            "reset_dag_runs": True,
        }
        answer: dict[str, Any] = self.api("POST", f"/dags/{dag_id}/clearTaskInstances", json=body).json()
        instances: list[dict[str, Any]] = answer["task_instances"]
        return instances

    def xcom_entries(
        self, dag_id: str, run_id: str, task_id: str, map_index: int | None = None
    ) -> list[dict[str, Any]]:
        """Every XCom of the task instance, each with its value."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries"
        params: dict[str, Any] = {"limit": 100}
        if map_index is not None:
            params["map_index"] = map_index
        entries = self.api("GET", path, params=params).json()["xcom_entries"]
        values = []
        for entry in entries:
            query: dict[str, Any] = {"map_index": entry["map_index"], "stringify": False}
            values.append(self.api("GET", f"{path}/{entry['key']}", params=query).json())
        return values

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1
    ) -> str:
        """The log of one try as the UI shows it (task and trigger parts), as text."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        query = {"full_content": True, "map_index": map_index}
        content = self.api("GET", path, params=query).json()["content"]
        lines = []
        for entry in content:
            if isinstance(entry, dict):
                details = {key: value for key, value in entry.items() if key != "event"}
                lines.append(f"{entry.get('event', '')} {json.dumps(details, default=str)}")
            else:
                lines.append(str(entry))
        return "\n".join(lines)

    def asset_events(self, **filters: Any) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.api(
            "GET", "/assets/events", params={"limit": 100, **filters}
        ).json()["asset_events"]
        return events

    def jobs(self, job_type: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": 100}
        if job_type is not None:
            params["job_type"] = job_type
        jobs: list[dict[str, Any]] = self.api("GET", "/jobs", params=params).json()["jobs"]
        return jobs

    def describe_run(self, dag_id: str, run_id: str) -> str:
        try:
            run = self.dag_run(dag_id, run_id)
            tasks = ", ".join(
                ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else "") + f"={ti['state']}"
                for ti in self.task_instances(dag_id, run_id)
            )
            return f"run {dag_id}/{run_id} is {run['state']}: {tasks}"
        except (AirflowHarnessError, httpx.HTTPError) as error:
            return f"run {dag_id}/{run_id}: could not describe it ({error})"

    # -- files -----------------------------------------------------------------------------

    def process_log(self, component: str) -> str:
        path = self.process_logs_dir / f"{component}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def database_files(self) -> list[Path]:
        """The SQLite database and its write-ahead log (Airflow runs SQLite in WAL mode)."""
        return sorted(self.db_path.parent.glob(self.db_path.name + "*"))

    def database_bytes(self) -> bytes:
        """Everything the database holds on disk right now, recent writes in the WAL included."""
        chunks = []
        for path in self.database_files():
            with suppress(FileNotFoundError):  # the WAL goes away at a checkpoint on close
                chunks.append(path.read_bytes())
        return b"".join(chunks)

    def log_files(self) -> list[Path]:
        return sorted(path for path in self.logs_dir.rglob("*") if path.is_file())


#: How often a call that is safe to repeat is sent while SQLite answers "Database error".
_LOCKED_TRIES = 6


def _poll(
    check: Callable[[], T | None], timeout: float, message: Callable[[], str], interval: float = 0.5
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        outcome = check()
        if outcome is not None and outcome is not False:
            return outcome
        if time.monotonic() > deadline:
            raise AirflowHarnessError(message())
        time.sleep(interval)


def stop_process_groups(
    processes: Sequence[subprocess.Popen[Any]], grace: float = STOP_GRACE_SECONDS
) -> None:
    """SIGTERM each process's group at once, then SIGKILL whatever outlives the grace period."""
    for process in processes:
        if process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        # Children that outlive their leader still belong to the group.
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def marked_processes(marker: str) -> list[int]:
    """Ids of live processes whose environment carries ``MARKER_VARIABLE=marker``."""
    needle = f"{MARKER_VARIABLE}={marker}".encode()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        if int(entry.name) == os.getpid():
            continue
        try:
            environment = (entry / "environ").read_bytes()
        except OSError:  # gone already, or not ours
            continue
        if needle in environment.split(b"\0"):
            found.append(int(entry.name))
    return found


def kill_marked_processes(marker: str) -> list[int]:
    """SIGKILL every process of one harness (see ``marked_processes``); returns their ids."""
    killed = []
    for pid in marked_processes(marker):
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def _copy_dags(sources: Sequence[str | os.PathLike[str]], target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for source in map(Path, sources):
        if not source.is_dir():
            raise AirflowHarnessError(f"DAG folder {source} does not exist")
        destination = target / source.resolve().name
        if destination.exists():
            raise AirflowHarnessError(f"two DAG folders are named {source.name}; rename one")
        shutil.copytree(source, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


@contextmanager
def run_airflow(
    dags_folders: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    home: str | os.PathLike[str] | None = None,
    components: Sequence[str] = COMPONENTS,
    startup_timeout: float = 120.0,
) -> Iterator[Airflow]:
    """Run Airflow for the duration of the block; see the module docstring."""
    temporary = home is None
    root = Path(tempfile.mkdtemp(prefix="dreamina-airflow-")) if home is None else Path(home)
    root.mkdir(parents=True, exist_ok=True)
    marker = secrets.token_hex(8)
    settings = {**base_environment(root, free_port(), marker), **(env or {})}
    airflow = Airflow(root, settings, components)
    try:
        _copy_dags(dags_folders, airflow.dags_folder)
        airflow.start(startup_timeout)
        yield airflow
    finally:
        airflow.stop()
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
