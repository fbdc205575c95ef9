"""Pipeline at scale: N generations in one DAG run on the production deployment, against Airflow's floor.

Each run starts the distributed deployment of ``tests/distributed/harness.py`` (PostgreSQL, Redis,
the CeleryExecutor with two workers, two triggerers, API server, scheduler, DAG processor, every one
on free 127.0.0.1 ports) with one variant of ``benchmarks/pipeline_dags/dreamina_pipeline_bench.py``
and triggers one run of N rows:

* ``provider``: per row, ``DreaminaImageToVideoOperator`` (deferrable, waits in the ``dreamina``
  pool, polls every 10 s) then ``DreaminaDownloadOperator`` (verified, manifest, asset event);
  the emulator's generations take ``--seconds`` each, with no queue and no limit on how many run
  at once (its jobs are timestamps), so RunComfy is never the bottleneck; outputs are synthetic
  MP4s of ``--output-bytes`` (no render on this machine's cores);
* ``floor``: the same DAG shape built from Airflow's own parts: ``generate`` takes the row's
  prompt and seed, defers to Airflow's ``DateTimeTrigger`` for the same seconds, resumes on a
  worker and returns an id; ``download`` takes that id and writes the same number of bytes, and
  announces the same asset;
* ``provider-lean`` (diagnostic, ``--variants``): the provider's DAG with the operators' two extra
  links switched off, to measure what they cost.

Each ends with one ``publish``. The ``dreamina`` pool has N slots (deferred tasks count), so it
holds every row at once; the deployment's own limits (parallelism 16, two workers of 4 slots)
are the same for every variant. With ``--rounds``, the variants run that many times each,
interleaved (A B, B A, ...), and the tables give medians.

Measured per run, from the trigger to the last publish:

* wall time: from just before the trigger call to the ``publish`` task's end (database clock);
* CPU seconds of each component: user + system time of every process in its tree, children that
  exited included (their parents' cumulative children times, from ``/proc``), sampled every
  ``--sample-interval`` seconds, at the trigger and right after the last publish; the emulator is
  reported but left out of the deployment's total (it stands for RunComfy);
* peak RSS of each component: the highest sum over its process tree among the samples;
* rows written to the metadata database per generation: ``pg_stat_database`` inserts, updates and
  deletes (and per table, ``pg_stat_user_tables``) over the run, the deployment's own background
  (heartbeats) included, read once the server has flushed its counters; statements executed
  (``pg_stat_statements``) and commits the same way;
* XCom rows and bytes, asset events, trigger rows and their kwargs' size, ``task_state_store``
  rows, rendered-field bytes, per generation;
* Execution API calls per generation, by route (the API server's access log): task processes
  reach the database only through it;
* paid submissions and duplicate payments (the emulator's own records), and videos verified (each
  manifest's SHA-256 and size against its file);
* how busy the rest of the machine was (``/proc/stat`` less every measured process), since it is
  shared.

Diagnostics: ``--task-stats`` has each task process record its own CPU seconds (per kind of task
process in the tables), ``--profile-tasks`` a cProfile of each too; ``--keep-home`` keeps logs.

The provider's modules and the DAG file are compiled to bytecode before the run, as a wheel
install has them and as Airflow's own modules are (a checkout run with ``PYTHONDONTWRITEBYTECODE``
would otherwise compile them in every task process).

Targets (at the largest N run, 500 by default): wall time and deployment CPU at most 1.25x the
floor; no duplicate payment; every video verified.

    python benchmarks/pipeline.py                          # N = 100 and 500 (about an hour on 2 cores)
    python benchmarks/pipeline.py --sizes 10 --seconds 20 --no-write
    python benchmarks/pipeline.py --smoke                  # 2 rows of 3 s, both variants; writes nothing
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import _common as common

DAGS = common.ROOT / "benchmarks" / "pipeline_dags"
DAG_IDS = {
    "provider": "dreamina_pipeline_bench",
    "floor": "dreamina_pipeline_floor",
    "provider-lean": "dreamina_pipeline_lean",
}
#: What the targets compare; ``provider-lean`` is a diagnostic (see the DAG file).
VARIANTS = ("floor", "provider")
ALL = (*VARIANTS, "provider-lean")
DEFAULT_SIZES = [100, 500]
IMAGE = common.ROOT / "example_dags" / "data" / "square.png"
#: The figures' components in table order; the emulator stands for RunComfy.
COMPONENTS = (
    "scheduler",
    "triggerer-a",
    "triggerer-b",
    "worker-a",
    "worker-b",
    "api-server",
    "dag-processor",
    "postgres",
    "redis",
    "emulator",
)
OUTSIDE_DEPLOYMENT = frozenset({"emulator"})
RATIO_TARGET = 1.25
#: A 5 s 1080p H.264 video is a few MB.
DEFAULT_OUTPUT_BYTES = 5 * 10**6
#: The metadata database counts statements (``pg_stat_statements``).
POSTGRES_SETTINGS = {"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.max": "2000"}
#: PostgreSQL flushes an idle backend's counters within 10 s (PGSTAT_IDLE_INTERVAL).
STATS_FLUSH_SECONDS = 12.0
TICKS = os.sysconf("SC_CLK_TCK")
PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / 2**20


# -- CPU and memory of process trees -----------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, float, float]]:
    """pid -> (parent pid, CPU seconds of it and its waited-for children, RSS MiB), from /proc."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                text = handle.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields start after the last ")".
        fields = text[text.rindex(b")") + 2 :].split()
        cpu = sum(int(value) for value in fields[11:15]) / TICKS  # utime stime cutime cstime
        table[int(entry.name)] = (int(fields[1]), cpu, int(fields[21]) * PAGE_MIB)
    return table


def _trees(roots: dict[str, int]) -> dict[str, tuple[float, float, int]]:
    """Per component: (CPU seconds, RSS MiB, processes) summed over its process tree.

    A live process's cumulative children times hold every descendant it has waited for, so the
    sum over the live tree counts each exited process once.
    """
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (parent, _cpu, _rss) in table.items():
        children.setdefault(parent, []).append(pid)
    figures = {}
    for name, root in roots.items():
        cpu = rss = 0.0
        count = 0
        pending = [root] if root in table else []
        while pending:
            pid = pending.pop()
            _parent, used, resident = table[pid]
            cpu, rss, count = cpu + used, rss + resident, count + 1
            pending.extend(children.get(pid, []))
        figures[name] = (cpu, rss, count)
    return figures


class Sampler:
    """Samples every component's process tree on a thread: CPU now, and the peak RSS seen."""

    def __init__(self, roots: Callable[[], dict[str, int]], interval: float) -> None:
        self.roots = roots
        self.interval = interval
        self.peak_rss: dict[str, float] = {}
        self.peak_processes: dict[str, int] = {}
        self.series: list[tuple[float, dict[str, float]]] = []
        self.sample_cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> dict[str, float]:
        started = time.thread_time()
        figures = _trees(self.roots())
        for name, (_cpu, rss, count) in figures.items():
            self.peak_rss[name] = max(self.peak_rss.get(name, 0.0), rss)
            self.peak_processes[name] = max(self.peak_processes.get(name, 0), count)
        cpu = {name: used for name, (used, _rss, _count) in figures.items()}
        self.series.append((time.time(), cpu))
        self.sample_cpu += time.thread_time() - started
        return cpu

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields)
    return (user + nice + system + irq + softirq + steal) / TICKS


# -- the metadata database --------------------------------------------------------------------


def _db_counters(postgres: Any) -> dict[str, Any]:
    """Cumulative counters of the ``airflow`` database: totals, per table, statements."""
    (total,) = postgres.query(
        "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted "
        "FROM pg_stat_database WHERE datname = current_database()"
    )
    tables = {
        name: {"ins": ins, "upd": upd, "del": dele}
        for name, ins, upd, dele in postgres.query(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables"
        )
    }
    statements = postgres.query(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )[0][0]
    return {
        "commits": total[0],
        "rollbacks": total[1],
        "rows": total[2] + total[3] + total[4],
        "inserted": total[2],
        "updated": total[3],
        "deleted": total[4],
        "tables": tables,
        "statements": int(statements),
        "at": time.monotonic(),
    }


def _db_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    keys = ("commits", "rollbacks", "rows", "inserted", "updated", "deleted", "statements")
    delta: dict[str, Any] = {key: after[key] - before[key] for key in keys}
    delta["seconds"] = after["at"] - before["at"]
    tables = {}
    for name, counts in after["tables"].items():
        old = before["tables"].get(name, {"ins": 0, "upd": 0, "del": 0})
        changed = {kind: counts[kind] - old[kind] for kind in counts}
        if any(changed.values()):
            tables[name] = changed
    delta["tables"] = tables
    return delta


def _top_statements(postgres: Any, limit: int = 12) -> list[dict[str, Any]]:
    rows = postgres.query(
        "SELECT calls, total_exec_time, rows, regexp_replace(left(query, 160), '\\s+', ' ', 'g') "
        "FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = "
        "current_database()) ORDER BY calls DESC LIMIT %s",
        (limit,),
    )
    return [{"calls": c, "ms": round(ms, 1), "rows": r, "query": q} for c, ms, r, q in rows]


def _run_contents(postgres: Any, dag_id: str, run_id: str) -> dict[str, Any]:
    """What the run left in the database: XComs, asset events, task states, rendered fields."""
    xcom = {
        f"{task_id} {key}": {"rows": rows, "bytes": int(size or 0)}
        for task_id, key, rows, size in postgres.query(
            "SELECT task_id, key, count(*), sum(pg_column_size(value)) FROM xcom "
            "WHERE dag_id = %s AND run_id = %s GROUP BY 1, 2 ORDER BY 1, 2",
            (dag_id, run_id),
        )
    }
    tasks = {
        f"{task_id} {state}": {"count": count, "tries": int(tries), "seconds": float(seconds or 0)}
        for task_id, state, count, tries, seconds in postgres.query(
            "SELECT task_id, state, count(*), sum(try_number), sum(duration) FROM task_instance "
            "WHERE dag_id = %s AND run_id = %s GROUP BY 1, 2 ORDER BY 1, 2",
            (dag_id, run_id),
        )
    }
    events = postgres.query(
        "SELECT count(*), coalesce(sum(pg_column_size(extra)), 0) FROM asset_event "
        "WHERE source_dag_id = %s AND source_run_id = %s",
        (dag_id, run_id),
    )[0]
    rendered = {
        task_id: {"rows": rows, "bytes": int(size or 0)}
        for task_id, rows, size in postgres.query(
            "SELECT task_id, count(*), sum(pg_column_size(rendered_fields)) "
            "FROM rendered_task_instance_fields WHERE dag_id = %s AND run_id = %s GROUP BY 1",
            (dag_id, run_id),
        )
    }
    state_store = postgres.query(
        "SELECT count(*), coalesce(sum(pg_column_size(value)), 0) FROM task_state_store "
        "WHERE dag_id = %s AND run_id = %s",
        (dag_id, run_id),
    )[0]
    next_kwargs = postgres.query(
        "SELECT count(next_kwargs), coalesce(sum(pg_column_size(next_kwargs)), 0) FROM task_instance "
        "WHERE dag_id = %s AND run_id = %s",
        (dag_id, run_id),
    )[0]
    return {
        "xcom": xcom,
        "tasks": tasks,
        "asset_events": {"rows": events[0], "bytes": int(events[1])},
        "rendered_fields": rendered,
        "task_state_store": {"rows": state_store[0], "bytes": int(state_store[1])},
        "next_kwargs": {"rows": next_kwargs[0], "bytes": int(next_kwargs[1])},
    }


# -- the API server's requests ------------------------------------------------------------------

_ACCESS = re.compile(r"^(\S+) .*request finished.* method=(\w+) path=(\S+)")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _api_calls(log: Path, start: float, end: float) -> dict[str, int]:
    """Requests the API server finished between ``start`` and ``end`` (epoch), by method and route.

    Task processes reach the metadata database only through the Execution API (their supervisor
    relays each XCom, task-state and connection call), so this counts what each task asks for.
    """
    calls: dict[str, int] = {}
    if not log.exists():
        return calls
    for line in log.read_text(errors="replace").splitlines():
        found = _ACCESS.match(line)
        if not found:
            continue
        try:
            at = datetime.fromisoformat(found.group(1).replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
        if not start <= at <= end:
            continue
        path = _UUID.sub("{id}", found.group(3))
        if path.startswith("/execution/xcoms/"):
            parts = path.split("/")
            # /execution/xcoms/<dag>/<run>/<task>/<key>[/slice]
            path = "/execution/xcoms/" + "/".join(parts[5:])
        route = f"{found.group(2)} {path}"
        calls[route] = calls.get(route, 0) + 1
    return calls


# -- diagnostics: what each kind of task process costs -----------------------------------------


def _task_processes(directory: Path, dag_id: str) -> dict[str, Any]:
    """CPU per kind of task process, from the records the DAG file's diagnostics wrote (if any).

    A deferred task runs twice: its first process (by start time) submits and defers, its second
    resumes. With profiles, the top functions of each kind, summed over its processes.
    """
    if not directory.is_dir():
        return {}
    records = [{**json.loads(path.read_text()), "pid": int(path.stem)} for path in directory.glob("*.json")]
    records = [record for record in records if record["dag_id"] == dag_id]
    seen: dict[tuple[str, int], int] = {}
    kinds: dict[str, list[dict[str, Any]]] = {}
    for record in sorted(records, key=lambda r: r["started_at"]):
        key = (record["task_id"], record["map_index"])
        seen[key] = seen.get(key, 0) + 1
        kind = record["task_id"]
        if kind.endswith("generate"):
            kind += " (submit, defer)" if seen[key] == 1 else " (resume)"
        kinds.setdefault(kind, []).append(record)
    figures: dict[str, Any] = {}
    for kind, group in sorted(kinds.items()):
        figures[kind] = {
            "processes": len(group),
            "cpu_ms_mean": 1000 * sum(r["cpu"] for r in group) / len(group),
            "cpu_ms_before_parse_mean": 1000 * sum(r["cpu_before_parse"] for r in group) / len(group),
            "seconds_mean": sum(r["seconds"] for r in group) / len(group),
        }
        profiles = [
            directory / f"{r['pid']}.prof" for r in group if (directory / f"{r['pid']}.prof").exists()
        ]
        if profiles:
            figures[kind]["profile"] = _profile_top(profiles)
    return figures


def _profile_top(paths: list[Path], limit: int = 40) -> list[str]:
    """The functions with the most cumulative time over these profiles, per process, as text lines."""
    import io
    import pstats

    buffer = io.StringIO()
    stats = pstats.Stats(str(paths[0]), stream=buffer)
    for path in paths[1:]:
        stats.add(str(path))
    stats.sort_stats("cumulative").print_stats(limit)
    return buffer.getvalue().splitlines()


# -- one run ----------------------------------------------------------------------------------


@dataclass
class Progress:
    """What the run's progress queries saw: task states, and the trigger table at its fullest."""

    states: dict[str, int] = field(default_factory=dict)
    triggers_peak: int = 0
    trigger_kwargs_bytes: float = 0.0
    publish_end: float | None = None
    run_state: str | None = None


def _poll_progress(postgres: Any, dag_id: str, run_id: str, progress: Progress) -> None:
    rows = postgres.query(
        "SELECT task_id, state, count(*) FROM task_instance WHERE dag_id = %s AND run_id = %s GROUP BY 1, 2",
        (dag_id, run_id),
    )
    progress.states = {f"{task_id}={state}": count for task_id, state, count in rows}
    count, size = postgres.query("SELECT count(*), avg(pg_column_size(kwargs)) FROM trigger")[0]
    if count > progress.triggers_peak:
        progress.triggers_peak, progress.trigger_kwargs_bytes = count, float(size or 0)
    (state,) = postgres.query(
        "SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", (dag_id, run_id)
    )[0]
    progress.run_state = state
    ended = postgres.query(
        "SELECT extract(epoch FROM end_date) FROM task_instance "
        "WHERE dag_id = %s AND run_id = %s AND task_id = 'publish' AND state = 'success'",
        (dag_id, run_id),
    )
    if ended:
        progress.publish_end = float(ended[0][0])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(output_dir: Path, variant: str, output_bytes: int) -> dict[str, Any]:
    """Provider: each manifest's SHA-256 and size against its file. Floor: files of the right size."""
    files = sorted(p for p in output_dir.glob("*.mp4")) if output_dir.exists() else []
    leftovers = (
        sorted(p.name for p in output_dir.iterdir() if p.name.startswith(".") or ".partial" in p.name)
        if output_dir.exists()
        else []
    )
    verified, problems = 0, []
    for video in files:
        if variant == "floor":
            ok = video.stat().st_size == output_bytes
        else:
            manifest_path = video.with_name(video.name + ".json")
            if not manifest_path.exists():
                problems.append(f"{video.name}: no manifest")
                continue
            manifest = json.loads(manifest_path.read_text())
            ok = manifest.get("bytes") == video.stat().st_size and manifest.get("sha256") == _sha256(video)
        if ok:
            verified += 1
        else:
            problems.append(f"{video.name}: differs from its manifest")
    return {"files": len(files), "verified": verified, "problems": problems[:10], "leftovers": leftovers[:10]}


@contextmanager
def _deployment(
    variants: list[str], emulator: Any, run_home: Path, args: argparse.Namespace
) -> Iterator[Any]:
    from tests.distributed.harness import run_deployment

    env = {
        # The benchmark DAG's image is a local file: the connection allows its directory.
        "AIRFLOW_CONN_DREAMINA_DEFAULT": emulator.connection_json(allowed_image_roots=[str(IMAGE.parent)]),
        "DREAMINA_PIPELINE_VARIANTS": ",".join(variants),
    }
    if args.task_stats or args.profile_tasks:
        (run_home / "task-stats").mkdir(parents=True, exist_ok=True)
        env["DREAMINA_PIPELINE_TASK_STATS"] = str(run_home / "task-stats")
        if args.profile_tasks:
            env["DREAMINA_PIPELINE_PROFILE"] = "1"
    started = time.monotonic()
    with run_deployment(
        [DAGS],
        env=env,
        home=run_home,
        postgres_settings={
            "shared_preload_libraries": "pg_stat_statements",
            "pg_stat_statements.max": "2000",
        },
    ) as deployment:
        deployment.postgres.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        deployment.wait_for_dags([DAG_IDS[variant] for variant in variants], timeout=180)
        # Task processes parse the DAG file from its bytecode, as they would in production.
        compileall.compile_dir(deployment.dags_folder, quiet=1)
        common.log(f"pipeline: deployment ready after {time.monotonic() - started:.0f} s")
        yield deployment


def _run(deployment: Any, emulator: Any, variant: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    dag_id = DAG_IDS[variant]
    postgres = deployment.postgres
    output_dir = Path(tempfile.mkdtemp(prefix=f"dreamina-pipeline-{variant}-"))
    emulator.reset()
    deployment.set_pool("dreamina", args.pool_slots or n, include_deferred=True)
    roots = lambda: {  # noqa: E731 - the components of this deployment, looked up at each sample
        **deployment.component_pids(),
        "postgres": postgres.process.pid,
        "redis": deployment.redis.process.pid,
        "emulator": emulator.process.pid,
    }
    try:
        with Sampler(roots, args.sample_interval) as sampler:
            # The deployment's own background (heartbeats, DAG parsing), so it can be subtracted.
            time.sleep(args.settle)
            idle_cpu, idle_db = sampler.sample(), _db_counters(postgres)
            time.sleep(args.idle)
            cpu_before, db_before = sampler.sample(), _db_counters(postgres)
            idle = {
                "seconds": db_before["at"] - idle_db["at"],
                "cpu": {name: cpu_before[name] - idle_cpu.get(name, 0.0) for name in cpu_before},
                "db": _db_delta(idle_db, db_before),
            }
            postgres.query("SELECT pg_stat_statements_reset()")
            db_before = _db_counters(postgres)
            common.log(f"pipeline: {variant}, N={n}: trigger")
            machine_before, own_before = _machine_busy_seconds(), time.process_time()
            triggered = time.time()
            conf = {
                "count": n,
                "image": str(IMAGE),
                "output_dir": str(output_dir),
                "seconds": args.seconds,
                "output_bytes": args.output_bytes,
            }
            run_id = deployment.trigger_dag(dag_id, conf)
            progress = Progress()
            deadline = time.monotonic() + args.timeout
            last = ""
            while True:
                _poll_progress(postgres, dag_id, run_id, progress)
                if progress.publish_end is not None or progress.run_state in ("success", "failed"):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{variant} N={n} did not finish in {args.timeout} s: {progress.states}"
                    )
                line = ", ".join(f"{key} {value}" for key, value in sorted(progress.states.items()))
                if line != last:
                    common.log(f"pipeline: {variant}, N={n}: {line}")
                    last = line
                time.sleep(args.poll)
            cpu_after = sampler.sample()
            finished = time.time()
            machine_busy = _machine_busy_seconds() - machine_before
            own_cpu = time.process_time() - own_before
        # The server flushes idle backends' counters within 10 s.
        time.sleep(STATS_FLUSH_SECONDS if n > 2 else 2.0)
        db_after = _db_counters(postgres)
        statements = _top_statements(postgres)
        contents = _run_contents(postgres, dag_id, run_id)
        verification = _verify(output_dir, variant, args.output_bytes)
        task_processes = _task_processes(deployment.home / "task-stats", dag_id)
        api_calls = _api_calls(deployment.process_logs_dir / "api-server.log", triggered, finished)
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)
    jobs = emulator.requests()
    inputs: dict[str, int] = {}
    for job in jobs:
        key = json.dumps(job["input"], sort_keys=True)
        inputs[key] = inputs.get(key, 0) + 1
    end = progress.publish_end or finished
    cpu = {name: cpu_after.get(name, 0.0) - cpu_before.get(name, 0.0) for name in COMPONENTS}
    return {
        "variant": variant,
        "n": n,
        "measured_at": common.stamp(),
        "run_id": run_id,
        "run_state": progress.run_state,
        "published": progress.publish_end is not None,
        "wall_seconds": end - triggered,
        "cpu": cpu,
        # Every other process on this (shared) machine during the run, in cores on average.
        "other_load_cores": max(0.0, machine_busy - sum(cpu.values()) - own_cpu) / (finished - triggered),
        "peak_rss_mib": {name: sampler.peak_rss.get(name, 0.0) for name in COMPONENTS},
        "peak_processes": {name: sampler.peak_processes.get(name, 0) for name in COMPONENTS},
        "idle": idle,
        "db": _db_delta(db_before, db_after),
        "statements": statements,
        "contents": contents,
        "triggers_peak": progress.triggers_peak,
        "trigger_kwargs_bytes": progress.trigger_kwargs_bytes,
        "states": progress.states,
        "verification": verification,
        "submissions": emulator.counters()["submissions"],
        "distinct_inputs": len(inputs),
        "duplicates": sum(count - 1 for count in inputs.values()),
        "emulator_calls": emulator.counters()["calls"],
        "task_processes": task_processes,
        "api_calls": api_calls,
        "sampler_cpu_seconds": sampler.sample_cpu,
        "series": [(round(at - triggered, 1), cpu) for at, cpu in sampler.series if at >= triggered],
    }


# -- report -----------------------------------------------------------------------------------


def _run_line(run: dict[str, Any]) -> str:
    return (
        f"pipeline: {run['variant']}, N={run['n']}, round {run.get('round', 1)}: "
        f"{'published' if run['published'] else 'NOT published (' + str(run['run_state']) + ')'} "
        f"after {run['wall_seconds']:.0f} s, "
        f"deployment CPU {_deployment_cpu(run):.0f} s, verified {run['verification']['verified']}/{run['n']}"
    )


def _deployment_cpu(run: dict[str, Any]) -> float:
    return sum(seconds for name, seconds in run["cpu"].items() if name not in OUTSIDE_DEPLOYMENT)


def _deployment_cpu_net(run: dict[str, Any]) -> float:
    """The deployment's CPU less what it burns idle (heartbeats, parsing) over as long a time."""
    idle = run["idle"]
    rate = sum(v for name, v in idle["cpu"].items() if name not in OUTSIDE_DEPLOYMENT) / idle["seconds"]
    return _deployment_cpu(run) - rate * run["wall_seconds"]


def _ratio(value: Any, floor: Any) -> str:
    if not isinstance(value, int | float) or not isinstance(floor, int | float) or not floor:
        return "-"
    return f"{value / floor:.2f}x"


def _median_of(runs: list[dict[str, Any]], figure: Callable[[dict[str, Any]], Any]) -> Any:
    """The median over rounds of a numeric figure; a text figure joined over rounds."""
    values = [figure(run) for run in runs]
    if all(isinstance(value, int | float) for value in values):
        return common.median(values)
    return " / ".join(str(value) for value in values)


def _xcom(run: dict[str, Any], what: str) -> float:
    return sum(item[what] for item in run["contents"]["xcom"].values()) / run["n"]


#: (label, figure, compared with the floor) of the summary table.
def _table_writes(run: dict[str, Any], table: str) -> float:
    """Rows inserted, updated or deleted in one table per generation (``pg_stat_user_tables``)."""
    return sum(run["db"]["tables"].get(table, {}).values()) / run["n"]


def _api_calls_per_generation(run: dict[str, Any]) -> float | str:
    calls = run.get("api_calls")
    if calls is None:  # a run recorded before the benchmark counted them
        return "-"
    return sum(count for route, count in calls.items() if " /execution/" in route) / run["n"]


FIGURES: list[tuple[str, Callable[[dict[str, Any]], Any], bool]] = [
    ("wall time s, trigger to last publish", lambda r: r["wall_seconds"], True),
    ("deployment CPU s", _deployment_cpu, True),
    ("deployment CPU s, less its idle rate over the run", _deployment_cpu_net, True),
    ("deployment CPU ms per generation", lambda r: 1000 * _deployment_cpu(r) / r["n"], True),
    ("Execution API calls per generation", _api_calls_per_generation, True),
    # Over the whole run, the deployment's own background (heartbeats) included.
    ("DB rows written per generation (all tables)", lambda r: r["db"]["rows"] / r["n"], True),
    ("of which `xcom`", lambda r: _table_writes(r, "xcom"), True),
    ("of which `task_state_store`", lambda r: _table_writes(r, "task_state_store"), False),
    ("of which `task_instance`", lambda r: _table_writes(r, "task_instance"), True),
    ("of which `job` (heartbeats)", lambda r: _table_writes(r, "job"), True),
    ("DB commits per generation", lambda r: r["db"]["commits"] / r["n"], True),
    ("DB statements per generation", lambda r: r["db"]["statements"] / r["n"], True),
    ("XCom rows kept per generation", lambda r: _xcom(r, "rows"), True),
    ("XCom bytes kept per generation", lambda r: _xcom(r, "bytes"), True),
    (
        "rendered-field bytes per generation",
        lambda r: sum(item["bytes"] for item in r["contents"]["rendered_fields"].values()) / r["n"],
        True,
    ),
    ("asset events", lambda r: r["contents"]["asset_events"]["rows"], False),
    ("trigger rows at once (peak seen)", lambda r: r["triggers_peak"], False),
    ("trigger kwargs bytes (mean, at that peak)", lambda r: r["trigger_kwargs_bytes"], False),
    ("paid submissions", lambda r: r["submissions"], False),
    ("duplicate payments", lambda r: r["duplicates"], False),
    (
        "videos verified (manifest SHA-256 = file; floor: size)",
        lambda r: f"{r['verification']['verified']:,} of {r['n']:,}",
        False,
    ),
    ("other processes on the machine, cores (noise)", lambda r: r["other_load_cores"], False),
]


def _tables(runs: list[dict[str, Any]], n: int) -> str:
    by = {variant: [run for run in runs if run["n"] == n and run["variant"] == variant] for variant in ALL}
    shown = [variant for variant in ALL if by[variant]]
    if "floor" not in shown or len(shown) < 2:
        return ""
    rounds = max(len(by[variant]) for variant in shown)
    others = [variant for variant in shown if variant != "floor"]
    headers = [f"N = {n:,}" + (f", median of {rounds} rounds" if rounds > 1 else "")]
    for variant in others:
        headers += [variant, "x floor"]
    headers.append("floor")
    rows = []
    for label, figure, compared in FIGURES:
        floor = _median_of(by["floor"], figure)
        row = [label]
        for variant in others:
            value = _median_of(by[variant], figure)
            row += [value, _ratio(value, floor) if compared else "-"]
        rows.append([*row, floor])
    summary = common.table(headers, rows)

    headers = [f"N = {n:,}: CPU s per component"]
    for variant in others:
        headers += [variant, "x floor"]
    headers += ["floor", *(f"{variant} peak RSS MiB" for variant in shown)]
    rows = []
    for name in (*COMPONENTS, "total"):
        if name == "total":
            label, figure = "**deployment total**", _deployment_cpu
        else:
            label = name + (" (RunComfy; not in the total)" if name in OUTSIDE_DEPLOYMENT else "")
            figure = lambda r, name=name: r["cpu"][name]  # noqa: E731
        floor = _median_of(by["floor"], figure)
        row: list[Any] = [label]
        for variant in others:
            value = _median_of(by[variant], figure)
            row += [value, _ratio(value, floor)]
        row.append(floor)
        for variant in shown:
            peaks = [
                sum(v for k, v in r["peak_rss_mib"].items() if k not in OUTSIDE_DEPLOYMENT)
                if name == "total"
                else r["peak_rss_mib"][name]
                for r in by[variant]
            ]
            row.append(max(peaks))
        rows.append(row)
    return f"{summary}\n\n{common.table(headers, rows)}"


def _task_table(runs: list[dict[str, Any]], n: int) -> str:
    """Diagnostic (``--task-stats``): mean CPU of each kind of task process, per variant."""
    by = {
        variant: [
            run.get("task_processes") or {} for run in runs if run["n"] == n and run["variant"] == variant
        ]
        for variant in ALL
    }
    kinds = sorted({kind for figures in by.values() for each in figures for kind in each})
    if not kinds:
        return ""
    shown = [variant for variant in ALL if any(by[variant])]
    rows = []
    for kind in kinds:
        row: list[Any] = [kind]
        for variant in shown:
            found = [each[kind] for each in by[variant] if kind in each]
            row += [
                common.median([f["cpu_ms_mean"] for f in found]) if found else "-",
                common.median([f["cpu_ms_before_parse_mean"] for f in found]) if found else "-",
            ]
        rows.append(row)
    headers = [f"N = {n:,}: task process, CPU ms (diagnostic)"]
    for variant in shown:
        headers += [f"{variant}, mean", f"{variant}, before the DAG file's parse"]
    return common.table(headers, rows)


def _targets(runs: list[dict[str, Any]]) -> tuple[str, bool]:
    def median(variant: str, n: int, figure: Callable[[dict[str, Any]], float]) -> float:
        return float(_median_of([r for r in runs if r["variant"] == variant and r["n"] == n], figure))

    compared = sorted(
        {run["n"] for run in runs if run["variant"] == "provider"}
        & {run["n"] for run in runs if run["variant"] == "floor"}
    )
    checks = []
    if compared:
        n = compared[-1]
        for label, figure in (
            ("wall time", lambda r: r["wall_seconds"]),
            ("deployment CPU", _deployment_cpu),
        ):
            provider, floor = median("provider", n, figure), median("floor", n, figure)
            rounds = [figure(r) / floor for r in runs if r["variant"] == "provider" and r["n"] == n]
            each = f"; rounds {', '.join(f'{ratio:.2f}x' for ratio in rounds)}" if len(rounds) > 1 else ""
            checks.append(
                (
                    f"N = {n:,}: {label} ≤ {RATIO_TARGET}x the floor",
                    f"{provider / floor:.2f}x ({provider:,.0f} s vs {floor:,.0f} s{each})",
                    provider / floor <= RATIO_TARGET,
                )
            )
    paying = [run for run in runs if run["variant"] != "floor"]
    duplicates = sum(run["duplicates"] for run in paying)
    submissions = sum(run["submissions"] for run in paying)
    checks.append(
        ("no duplicate payment", f"{duplicates} ({submissions:,} paid submissions)", duplicates == 0)
    )
    asked = sum(run["n"] for run in paying)
    good = sum(run["verification"]["verified"] for run in paying)
    checks.append(("every video verified", f"{good:,} of {asked:,}", good == asked))
    text = common.table(
        ["target", "measured", "verdict"], [[name, got, common.verdict(ok)] for name, got, ok in checks]
    )
    return text, all(ok for _, _, ok in checks)


def _report(runs: list[dict[str, Any]], args: argparse.Namespace) -> tuple[str, bool]:
    sizes = sorted({run["n"] for run in runs})
    tables = "\n\n".join(text for n in sizes if (text := _tables(runs, n)))
    diagnostics = "\n\n".join(text for n in sizes if (text := _task_table(runs, n)))
    if diagnostics:
        tables += "\n\n" + diagnostics
    targets, passed = _targets(runs)
    command = (
        "make bench-pipeline"
        if args.sizes == DEFAULT_SIZES and args.rounds == 1
        else f"python benchmarks/pipeline.py --sizes {' '.join(map(str, args.sizes))} --rounds {args.rounds}"
    )
    deployments = "one deployment per N" if args.shared_deployment else "a fresh deployment per run"
    stamps = sorted({run.get("measured_at") or common.stamp() for run in runs})
    measured = stamps[0] if len(stamps) == 1 else f"{stamps[0]} to {stamps[-1]}"
    settings = (
        f"One DAG run of N rows per variant and round ({deployments}: PostgreSQL, Redis, Celery with "
        f"two workers of 4 slots, two triggerers; parallelism 16); rounds interleaved (floor, provider, "
        f"provider, floor, ...). Generations of {args.seconds:g} s, outputs of "
        f"{args.output_bytes / 10**6:g} MB; the `dreamina` pool holds every row (deferred tasks "
        f"count). CPU: every component's process tree, exited children included, sampled every "
        f"{args.sample_interval:g} s; the deployment total leaves out the emulator. Rerun: `{command}`. "
        f"Measured {measured} on {common.machine_line()}."
    )
    return f"{settings}\n\n{tables}\n\n{targets}", passed


def _order(variants: list[str], rounds: int) -> list[tuple[str, int]]:
    """(variant, round) in the order to run them: rounds alternate direction (A B, B A, ...)."""
    order = []
    for number in range(1, rounds + 1):
        order += [(variant, number) for variant in (variants if number % 2 else variants[::-1])]
    return order


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=DEFAULT_SIZES, help="rows per run")
    parser.add_argument("--variants", nargs="+", choices=ALL, default=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=1, help="runs of each variant per N, interleaved")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long each generation takes")
    parser.add_argument("--output-bytes", type=int, default=DEFAULT_OUTPUT_BYTES)
    parser.add_argument("--pool-slots", type=int, help="slots of the dreamina pool (default: N)")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds to wait after start-up")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds the idle deployment is measured")
    parser.add_argument("--sample-interval", type=float, default=2.0)
    parser.add_argument("--poll", type=float, default=3.0, help="seconds between progress queries")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds one run may take")
    parser.add_argument(
        "--shared-deployment", action="store_true", help="one deployment per N for both variants"
    )
    parser.add_argument("--keep-home", type=Path, help="keep each deployment's home (logs) under here")
    parser.add_argument(
        "--task-stats", action="store_true", help="diagnostic: CPU of each kind of task process"
    )
    parser.add_argument(
        "--profile-tasks", action="store_true", help="diagnostic: --task-stats plus a cProfile of each"
    )
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--json", type=Path, help="also write every run's figures to this file")
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        help="run nothing: report the runs --json wrote (of earlier invocations, say one per N)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="2 rows of 3 s, both variants, one deployment; writes nothing"
    )
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.seconds, args.output_bytes, args.no_write = [2], 3.0, 200_000, True
        args.settle, args.idle, args.shared_deployment, args.timeout = 1.0, 2.0, True, 240.0
    # Stopped (SIGTERM, or SIGINT in a background job, which ignores it), it still stops everything
    # it started: SystemExit unwinds the deployment's and the emulator's blocks.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("pipeline: stopped (SIGTERM)"))
    # The harness lives in the test suite: importable from the repository root.
    sys.path.insert(0, str(common.ROOT))
    from airflow_provider_dreamina.emulator import run_emulator

    if args.from_json:
        runs = []
        for path in args.from_json:
            written = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).strftime(
                "%Y-%m-%d %H:%M UTC"
            )
            runs += [{"measured_at": written, **run} for run in json.loads(path.read_text())]
        args.sizes = sorted({run["n"] for run in runs})
        _finish(runs, args)
        return
    variants = [variant for variant in ALL if variant in args.variants]
    # A wheel installs the provider with its bytecode, as Airflow's own modules are here; a checkout
    # run with PYTHONDONTWRITEBYTECODE would compile the provider's modules in every task process.
    compileall.compile_dir(common.ROOT / "airflow_provider_dreamina", quiet=1)
    runs: list[dict[str, Any]] = []
    token = f"pipeline-token-{secrets.token_hex(8)}"
    homes = Path(tempfile.mkdtemp(prefix="dreamina-pipeline-home-"))
    options = {"queue_seconds": 0, "run_seconds": args.seconds, "output_bytes": args.output_bytes}
    try:
        with run_emulator(token=token, **options) as emulator:
            for n in args.sizes:
                order = _order(variants, args.rounds)
                groups = [order] if args.shared_deployment else [[each] for each in order]
                for group in groups:
                    home = homes / f"{group[0][0]}-{n}-{group[0][1]}"
                    with _deployment(sorted({v for v, _ in group}), emulator, home, args) as deployment:
                        for variant, number in group:
                            run = {**_run(deployment, emulator, variant, n, args), "round": number}
                            runs.append(run)
                            common.log(_run_line(run))
                    if args.keep_home:
                        shutil.copytree(home, args.keep_home / home.name, dirs_exist_ok=True)
                    shutil.rmtree(home, ignore_errors=True)
    finally:
        shutil.rmtree(homes, ignore_errors=True)
    _finish(runs, args)


def _finish(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Print the report, write it (unless told not to) and the JSON; fail when a run did not publish."""
    text, passed = _report(runs, args)
    print("## Pipeline at scale\n\n" + text + "\n")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1, default=str))
    failed = [run for run in runs if not run["published"]]
    if not args.no_write:
        common.update_section("pipeline", text)
        common.save_results("pipeline", {"settings": vars(args), "runs": runs, "all_targets_met": passed})
    if failed:
        sys.exit("runs that did not publish: " + ", ".join(f"{r['variant']} N={r['n']}" for r in failed))


if __name__ == "__main__":
    main()
