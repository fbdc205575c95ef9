"""A production-shaped Airflow on one machine: PostgreSQL, Redis, CeleryExecutor, two workers, two triggerers.

Built on ``tests/e2e/harness.py``: :class:`Deployment` is its :class:`~tests.e2e.harness.Airflow`
(the same REST helpers, process-group control and marker sweep) with other components and a real
database. Everything comes from pip (``make test-distributed`` installs the ``distributed`` extra)
and listens on free 127.0.0.1 ports.

Usage::

    from tests.distributed.harness import run_deployment

    with run_deployment([dags], env={"AIRFLOW_CONN_DREAMINA_DEFAULT": ...}) as deployment:
        run_id = deployment.trigger_dag("my_dag")
        deployment.crash("triggerer-a")  # SIGKILL it and everything it started

API beyond the e2e harness's ``Airflow``
----------------------------------------
``run_deployment(dags_folders, *, env=None, home=None, startup_timeout=240, postgres_settings=None)``
    Context manager: PostgreSQL and Redis (``tests/distributed/services.py``), ``airflow db
    migrate``, then the API server, the scheduler, the DAG processor, Celery workers ``worker-a``
    and ``worker-b`` and triggerers ``triggerer-a`` and ``triggerer-b``; yields when the API
    answers, the scheduler and DAG processor are healthy, both workers said ready and both
    triggerers heartbeat. On exit, even when the block raised, it stops every Airflow process
    (also task processes that left their group, by the e2e marker sweep), then Redis and PostgreSQL.
    ``postgres_settings`` adds server settings (``benchmarks/pipeline.py`` loads
    ``pg_stat_statements`` this way).
``Deployment.postgres`` / ``.redis``: the servers (``postgres.query(sql)``, ``postgres.dump()``).
``Deployment.triggerer_job_ids``: component name -> id of its current ``TriggererJob`` row;
    ``scheduler_job_ids`` the same for schedulers started by ``start_component``.
``Deployment.triggerer_running(trigger_id) -> str | None``: the triggerer component that the
    database says runs a trigger (``trigger.triggerer_id``).
``Deployment.component_of(pid) -> str | None``: the component whose process tree holds ``pid``;
    ``component_pids()``: component name -> id of its first process (for CPU and memory sampling).
``Deployment.crash(component)``: SIGKILL the component's whole process tree (what a lost machine
    or an OOM kill does; nothing runs its shutdown code) and leave it down;
    ``start_component(component)`` brings it back (for a triggerer, once its new job row exists; for
    a worker, once Celery says it is ready). ``restart(component, crash=...)`` does both, and
    ``ensure_running()`` starts whatever is down and stops any component beyond the standard ones.
``start_component("scheduler-b")``: any name that starts with ``scheduler`` is one more scheduler
    (Airflow's HA scheduler: they share the work through row locks in PostgreSQL);
    ``stop_component(name)`` stops one gracefully.
``Deployment.supervised()``: context manager; while it is open, a component whose process ends is
    started again once PostgreSQL and Redis are up, as an orchestrator would (systemd's
    ``Restart=always``, a Kubernetes pod's restart policy). Yields the list of :class:`Restart` so far.
``Deployment.health()``: the API server's ``/monitor/health`` answer, or None while it cannot answer.
``database_bytes()``: the whole database as ``pg_dump`` SQL text, to search for secrets.

The timing settings (``DEPLOYMENT_SETTINGS``) make failures show up in seconds rather than the
defaults' minutes; RELIABILITY.md gives the measured takeover times.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.distributed.services import Postgres, Redis, run_postgres, run_redis
from tests.e2e.harness import (
    Airflow,
    AirflowHarnessError,
    _copy_dags,
    _poll,
    base_environment,
    free_port,
)

WORKERS = ("worker-a", "worker-b")
TRIGGERERS = ("triggerer-a", "triggerer-b")
CORE_COMPONENTS = ("api-server", "scheduler", "dag-processor")
COMPONENTS = (*CORE_COMPONENTS, *WORKERS, *TRIGGERERS)
WORKER_CONCURRENCY = 4

#: Settings that make crashes visible within seconds (defaults in brackets).
DEPLOYMENT_SETTINGS = {
    # A triggerer heartbeats every second [5 s]; one silent for 6 s [30 s] is dead, and another
    # takes its triggers over at its next loop (about once a second).
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "6",
    # A task whose worker died is failed (and retried) once its heartbeat is 20 s old [300 s],
    # looked for every 2 s [10 s]. Task processes heartbeat every 5 s.
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
    # A scheduler silent for 20 s [30 s] is dead; its queued and running tasks are adopted by the
    # one alive, looked for every 10 s [300 s].
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "20",
    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "10",
    # A task queued for 60 s [600 s] whose message no worker took (a broker that lost it) is
    # queued again, looked for every 5 s [120 s].
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "60",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "5",
}


@dataclass(frozen=True)
class Restart:
    """A component that ended on its own and was started again by :meth:`Deployment.supervised`."""

    component: str
    exit_code: int | None
    #: Seconds since the block opened at which it was seen gone, and at which it ran again.
    ended_after: float
    running_after: float


class Deployment(Airflow):
    """The e2e harness's Airflow with a PostgreSQL database, Celery workers and two triggerers."""

    def __init__(self, home: Path, env: dict[str, str], postgres: Postgres, redis: Redis) -> None:
        super().__init__(home, env, COMPONENTS)
        self.postgres = postgres
        self.redis = redis
        self.db_path = home / "no-sqlite-here"
        self.triggerer_job_ids: dict[str, int] = {}
        # Schedulers started by ``start_component`` (not the first one, started with the others).
        self.scheduler_job_ids: dict[str, int] = {}
        # How many "ready" lines each worker's log held when it last became ready.
        self._ready_lines: dict[str, int] = {}

    # -- processes -------------------------------------------------------------------------

    def start(self, timeout: float) -> None:
        self.process_logs_dir.mkdir(parents=True, exist_ok=True)
        self.airflow_command("db", "migrate", timeout=300)
        for component in (*CORE_COMPONENTS, *WORKERS):
            self._start_component(component)
        # One at a time, so that each new TriggererJob row is known to belong to the one just started.
        for component in TRIGGERERS:
            self.start_component(component, timeout)
        self.wait_until_ready(timeout)

    def _command(self, component: str) -> list[str]:
        # Airflow's log servers listen on every interface; every component here shares one log
        # folder, so the workers and triggerers serve none.
        if component in WORKERS:
            return [
                "celery",
                "worker",
                "--celery-hostname",
                f"{component}@%h",
                "--concurrency",
                str(WORKER_CONCURRENCY),
                "--without-gossip",
                "--without-mingle",
                "--skip-serve-logs",
            ]
        if component in TRIGGERERS:
            return ["triggerer", "--skip-serve-logs"]
        if component.startswith("scheduler"):
            return ["scheduler"]
        return [component]

    def _start_component(self, component: str) -> None:
        with open(self.process_logs_dir / f"{component}.log", "ab") as output:
            self._processes[component] = subprocess.Popen(
                [sys.executable, "-m", "airflow", *self._command(component)],
                env=self._full_env(),
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.home,
            )

    def start_component(self, component: str, timeout: float = 120.0) -> None:
        """Start one component; for a triggerer or a scheduler, wait for its job row and remember its id."""
        job_type = _job_type(component)
        known = self._running_jobs(job_type) if job_type else set()
        self._start_component(component)
        if job_type:
            job_id = _poll(
                lambda: next(iter(self._running_jobs(job_type) - known), None),
                timeout,
                lambda: (
                    f"{component} registered no job within {timeout} s:\n"
                    + self.process_log(component)[-3000:]
                ),
                interval=0.3,
            )
            ids = self.triggerer_job_ids if component in TRIGGERERS else self.scheduler_job_ids
            ids[component] = job_id
        elif component in WORKERS:
            self._wait_for_worker(component, timeout)

    def _running_jobs(self, job_type: str) -> set[int]:
        rows = self.postgres.query(
            "SELECT id FROM job WHERE job_type = %s AND state = 'running'", (job_type,)
        )
        return {row[0] for row in rows}

    def _wait_for_worker(self, component: str, timeout: float) -> None:
        # Celery logs "<name>@<host> ready." once it consumes from the queue; a restarted worker's log
        # already holds that line from its earlier life, so count them.
        ready_line = re.compile(rf"{re.escape(component)}@\S+ ready\.")
        before = self._ready_lines.get(component, 0)

        def ready() -> bool:
            process = self._processes[component]
            if process.poll() is not None:
                raise AirflowHarnessError(
                    f"{component} exited with {process.returncode}:\n{self.process_log(component)[-3000:]}"
                )
            count = len(ready_line.findall(self.process_log(component)))
            if count > before:
                self._ready_lines[component] = count
                return True
            return False

        _poll(ready, timeout, lambda: f"{component} was not ready within {timeout} s", interval=0.3)

    def wait_until_ready(self, timeout: float) -> None:
        super().wait_until_ready(timeout)
        for component in WORKERS:
            if component in self._processes:
                self._wait_for_worker(component, timeout)

    def _process_tree(self, root: int) -> list[int]:
        """``root`` and every descendant, found through /proc (task processes may leave the group)."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").glob("[0-9]*"):
            with suppress(OSError, ValueError, IndexError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
        tree, pending = [], [root]
        while pending:
            pid = pending.pop()
            tree.append(pid)
            pending.extend(children.get(pid, []))
        return tree

    def component_pids(self) -> dict[str, int]:
        """Process id of each running component's first process; its process tree holds the rest."""
        return {name: process.pid for name, process in self._processes.items() if process.poll() is None}

    def component_of(self, pid: int) -> str | None:
        for name, process in list(self._processes.items()):
            if process.poll() is None and pid in self._process_tree(process.pid):
                return name
        return None

    def crash(self, component: str) -> None:
        """SIGKILL the component and every process it started; it stays down until ``start_component``."""
        process = self._processes.pop(component)
        for pid in self._process_tree(process.pid):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        self._forget_job(component)

    def _forget_job(self, component: str) -> None:
        self.triggerer_job_ids.pop(component, None)
        self.scheduler_job_ids.pop(component, None)

    def ensure_running(self) -> None:
        """Start every component that is down (say, left crashed by a scenario that failed), and stop
        any beyond the standard ones (a second scheduler)."""
        self._stop_components([name for name in list(self._processes) if name not in COMPONENTS])
        for component in COMPONENTS:
            process = self._processes.get(component)
            if process is None or process.poll() is not None:
                self._processes.pop(component, None)
                self.start_component(component)

    def stop_component(self, component: str) -> None:
        """Stop one component gracefully (SIGTERM to its process group, then SIGKILL after a grace)."""
        self._stop_components([component])
        self._forget_job(component)

    def exited(self) -> dict[str, int | None]:
        """Components whose process has ended, with its exit code."""
        return {
            name: process.poll()
            for name, process in list(self._processes.items())
            if process.poll() is not None
        }

    @contextmanager
    def supervised(self, interval: float = 1.0) -> Iterator[list[Restart]]:
        """Start again any component that ends while the block runs (see the module docstring)."""
        restarts: list[Restart] = []
        opened = time.monotonic()
        done = threading.Event()

        def watch() -> None:
            gone: dict[str, tuple[int | None, float]] = {}
            while not done.wait(interval):
                for name, code in self.exited().items():
                    gone.setdefault(name, (code, time.monotonic() - opened))
                if not gone or not (self.postgres.running and self.redis.running):
                    continue
                # All at once, as an orchestrator would; the triggerers last and one after the
                # other, so that each new job row is known to be whose (start_component waits).
                for name in sorted(gone, key=lambda name: name in TRIGGERERS):
                    code, ended = gone[name]
                    self._processes.pop(name, None)
                    self._forget_job(name)
                    try:
                        if name in TRIGGERERS:
                            self.start_component(name)
                        else:
                            self._start_component(name)
                    except Exception as error:  # it may end again: the next round starts it again
                        print(f"supervisor: {name} did not start ({error})"[:2000], file=sys.stderr)
                        continue
                    del gone[name]
                    restarts.append(Restart(name, code, round(ended, 1), round(time.monotonic() - opened, 1)))

        watcher = threading.Thread(target=watch, name="deployment-supervisor", daemon=True)
        watcher.start()
        try:
            yield restarts
        finally:
            done.set()
            watcher.join(timeout=300)

    def health(self) -> dict[str, Any] | None:
        try:
            response = self._http.get("/api/v2/monitor/health", timeout=10)
        except httpx.HTTPError:
            return None
        answer: dict[str, Any] | None = response.json() if response.status_code == 200 else None
        return answer

    def restart(self, component: str, *, crash: bool = False) -> None:
        if crash:
            self.crash(component)
        else:
            self._stop_components([component])
            self._forget_job(component)
        self.start_component(component)

    def triggerer_running(self, trigger_id: int) -> str | None:
        rows = self.postgres.query("SELECT triggerer_id FROM trigger WHERE id = %s", (trigger_id,))
        if not rows or rows[0][0] is None:
            return None
        owners = [name for name, job_id in self.triggerer_job_ids.items() if job_id == rows[0][0]]
        return owners[0] if owners else f"job {rows[0][0]}"

    # -- files -----------------------------------------------------------------------------

    def database_files(self) -> list[Path]:
        return []

    def database_bytes(self) -> bytes:
        return self.postgres.dump()


def _job_type(component: str) -> str | None:
    """The job row a component registers in the database, if the harness tracks it."""
    if component in TRIGGERERS:
        return "TriggererJob"
    if component.startswith("scheduler"):
        return "SchedulerJob"
    return None


def deployment_environment(home: Path, marker: str, postgres: Postgres, redis: Redis) -> dict[str, str]:
    """The e2e harness's settings, moved onto PostgreSQL, Redis and Celery."""
    settings = base_environment(home, free_port(), marker)
    settings.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": "16",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres.sqlalchemy_url,
            "AIRFLOW__CELERY__BROKER_URL": redis.url,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + postgres.sqlalchemy_url,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
            **DEPLOYMENT_SETTINGS,
        }
    )
    return settings


@contextmanager
def run_deployment(
    dags_folders: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    home: str | os.PathLike[str] | None = None,
    startup_timeout: float = 240.0,
    postgres_settings: Mapping[str, str] | None = None,
) -> Iterator[Deployment]:
    """Run the deployment for the duration of the block; see the module docstring."""
    temporary = home is None
    root = Path(tempfile.mkdtemp(prefix="dreamina-distributed-")) if home is None else Path(home)
    root.mkdir(parents=True, exist_ok=True)
    marker = secrets.token_hex(8)
    process_logs = root / "processes"
    process_logs.mkdir(parents=True, exist_ok=True)
    try:
        with ExitStack() as stack:
            # The servers carry a marker of their own: Airflow's sweep must not SIGKILL the database
            # under components that are still shutting down.
            postgres = stack.enter_context(
                run_postgres(process_logs, f"{marker}-services", postgres_settings)
            )
            redis = stack.enter_context(run_redis(process_logs, f"{marker}-services"))
            settings = {**deployment_environment(root, marker, postgres, redis), **(env or {})}
            deployment = Deployment(root, settings, postgres, redis)
            stack.callback(deployment.stop)
            _copy_dags(dags_folders, deployment.dags_folder)
            deployment.start(startup_timeout)
            yield deployment
    finally:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)


def running_services(marker: str) -> list[int]:
    """Ids of live processes of one deployment's servers (for a test that nothing is left)."""
    from tests.e2e.harness import marked_processes

    return marked_processes(f"{marker}-services")


__all__ = ["COMPONENTS", "DEPLOYMENT_SETTINGS", "Deployment", "Restart", "run_deployment", "running_services"]
