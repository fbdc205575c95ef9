"""Fault soak: N generations through a real Airflow while the emulator fails 20% of the calls.

A real Airflow (API server, scheduler, triggerer, DAG processor; SQLite, LocalExecutor) started by
``tests/e2e/harness.py`` runs ``benchmarks/soak_dags/dreamina_soak.py``: a mapped task group per
row, ``DreaminaImageToVideoOperator`` (deferred to the triggerer) then ``DreaminaDownloadOperator``,
one row per generation, each with its own prompt and seed. The emulator injects faults on 20% of
the calls of each endpoint, in equal shares:

* submit: 429 with ``Retry-After: 1``, slow answer (2 s). Only kinds after which resending is safe:
  after a 500 or a reset the provider cannot know whether RunComfy created (and charged) the
  request, so it refuses to resend by design (``DreaminaSubmitUncertainError``, the task fails
  without retries) - a designed refusal, counted apart, never a duplicate;
* status and result: 429 with ``Retry-After: 1``, 500, connection reset, slow answer (2 s);
* download: 500, connection reset, slow answer (2 s), body truncated halfway.

Afterwards, with faults off: every stored file's SHA-256 against the emulator's own copy, partial
files left in the output directory, paid submissions against distinct inputs (``submit_count``),
and the token searched in every log file, in every XCom row and in the metadata database's bytes
(Fernet off, so trigger kwargs and connection-like values would be readable).

    python benchmarks/soak.py [--count 100] [--no-write]
    python benchmarks/soak.py --smoke       # 3 generations, no second soak; writes nothing
"""

from __future__ import annotations

import argparse
import hashlib
import re
import secrets
import shutil
import sqlite3
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

try:
    import _common as common
except ImportError:  # imported as benchmarks.soak by the test suite
    from benchmarks import _common as common

DAG_ID = "dreamina_soak"
SOAK_DAGS = common.ROOT / "benchmarks" / "soak_dags"
IMAGE = common.ROOT / "example_dags" / "data" / "square.png"
FAULT_RATE = 0.2
# (kind, options): each kind gets an equal share of FAULT_RATE on its endpoint.
FAULTS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "submit": [("429", {"retry_after": 1}), ("slow", {"delay": 2})],
    "status": [("429", {"retry_after": 1}), ("500", {}), ("reset", {}), ("slow", {"delay": 2})],
    "result": [("429", {"retry_after": 1}), ("500", {}), ("reset", {}), ("slow", {"delay": 2})],
    "download": [("500", {}), ("reset", {}), ("slow", {"delay": 2}), ("truncate", {})],
}
EMULATOR_OPTIONS = {"queue_seconds": 0.5, "run_seconds_range": [3, 8], "output_bytes": 2 * 2**20, "seed": 11}
# Kinds after which the provider refuses to resend a submit, by design (opt-in: --unsafe-submit-faults).
UNSAFE_SUBMIT_FAULTS: list[tuple[str, dict[str, Any]]] = [("500", {}), ("reset_after_send", {})]
REFUSAL_MARKER = b"may have created a paid request"
# The tasks of the DAG's mapped task group "video".
GENERATE, DOWNLOAD = "video.generate", "video.download"
_MAP_INDEX = re.compile(r"map_index=(\d+)")


def fault_plan(*, unsafe_submit: bool = False) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    plan = dict(FAULTS)
    if unsafe_submit:
        plan["submit"] = FAULTS["submit"] + UNSAFE_SUBMIT_FAULTS
    return plan


def inject_faults(emulator: Any, rate: float = FAULT_RATE, *, unsafe_submit: bool = False) -> None:
    """Equal shares of ``rate`` per kind: the emulator tries faults in order, so later rates are scaled."""
    for endpoint, kinds in fault_plan(unsafe_submit=unsafe_submit).items():
        share = rate / len(kinds)
        for position, (kind, options) in enumerate(kinds):
            emulator.inject_fault(endpoint, kind, rate=share / (1 - position * share), **options)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _source_digests(emulator: Any) -> dict[str, str]:
    """SHA-256 of every succeeded request's output, fetched from the emulator with faults off."""
    import httpx

    digests = {}
    headers = {"Authorization": f"Bearer {emulator.token}"}
    with httpx.Client(base_url=emulator.base_url, headers=headers, timeout=60, trust_env=False) as client:
        for job in emulator.requests():
            if job["state"] != "succeeded":
                continue
            result = client.get(f"/v1/requests/{job['request_id']}/result").json()
            url = result["output"]["video"]
            digests[job["request_id"]] = _sha256(client.get(url).content)
    return digests


def _xcom_rows_with(db_path: Path, needle: str) -> tuple[int, int]:
    """(XCom rows holding ``needle``, XCom rows searched), read straight from the SQLite file."""
    with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        values = [str(row[0]) for row in db.execute("SELECT value FROM xcom")]
    return sum(needle in value for value in values), len(values)


def _task_instances(db_path: Path, run_id: str) -> list[dict[str, Any]]:
    """Every task instance of the run (the REST API pages at 100), from the SQLite file."""
    query = "SELECT task_id, map_index, state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ?"
    with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        rows = db.execute(query, (DAG_ID, run_id)).fetchall()
    return [
        {"task_id": t, "map_index": m, "state": state, "try_number": tries} for t, m, state, tries in rows
    ]


def run_soak(
    count: int,
    *,
    fault_rate: float = FAULT_RATE,
    unsafe_submit_faults: bool = False,
    timeout: float = 900.0,
    keep_home: Path | None = None,
) -> dict[str, Any]:
    """Run the soak and return its figures (see the module docstring)."""
    from airflow_provider_dreamina.emulator import run_emulator
    from tests.e2e.harness import run_airflow

    token = f"soak-token-{secrets.token_hex(16)}"
    workdir = Path(tempfile.mkdtemp(prefix="dreamina-soak-"))
    output_dir = workdir / "videos"
    home = keep_home or workdir / "airflow"
    started = time.monotonic()
    with run_emulator(token=token, **EMULATOR_OPTIONS) as emulator:
        env = {
            # The soak DAG reads a local image from a param: the connection allows its directory.
            "AIRFLOW_CONN_DREAMINA_DEFAULT": emulator.connection_json(
                allowed_image_roots=[str(IMAGE.parent)]
            ),
            # No Fernet encryption: the database search then reads trigger kwargs and rendered
            # values in plain text.
            "AIRFLOW__CORE__FERNET_KEY": "",
        }
        with run_airflow([SOAK_DAGS], env=env, home=home) as airflow:
            airflow.wait_for_dags([DAG_ID], timeout=120)
            ready = time.monotonic()
            emulator.reset()
            if fault_rate > 0:
                inject_faults(emulator, fault_rate, unsafe_submit=unsafe_submit_faults)
            common.log(f"soak: Airflow ready after {ready - started:.0f} s; {count} generations")
            run_id = airflow.trigger_dag(
                DAG_ID, {"count": count, "image": str(IMAGE), "output_dir": str(output_dir)}
            )
            run = _wait_logging_progress(airflow, run_id, count, timeout)
            finished = time.monotonic()
            emulator.clear_faults()
            counters = emulator.counters()
            jobs = emulator.requests()
            sources = _source_digests(emulator)
            instances = _task_instances(airflow.db_path, run_id)
            logs = airflow.log_files() + sorted(airflow.process_logs_dir.glob("*.log"))
            log_bytes = {path: path.read_bytes() for path in logs}
            database = airflow.database_bytes()
            xcom_hits, xcom_rows = _xcom_rows_with(airflow.db_path, token)
    figures = _figures(
        count=count,
        run=run,
        instances=instances,
        jobs=jobs,
        counters=counters,
        sources=sources,
        output_dir=output_dir,
        token=token.encode(),
        log_bytes=log_bytes,
        database=database,
        xcom=(xcom_hits, xcom_rows),
    )
    figures["unsafe_submit_faults"] = unsafe_submit_faults
    figures["fault_rate"] = fault_rate
    figures["seconds_to_ready"] = ready - started
    figures["seconds_run"] = finished - ready
    if keep_home is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return figures


def _wait_logging_progress(airflow: Any, run_id: str, count: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        run = airflow.dag_run(DAG_ID, run_id)
        if run["state"] in ("success", "failed"):
            return run  # type: ignore[no-any-return]
        states: dict[str, int] = {}
        for instance in airflow.task_instances(DAG_ID, run_id, DOWNLOAD):
            states[str(instance["state"])] = states.get(str(instance["state"]), 0) + 1
        progress = ", ".join(f"{state} {number}" for state, number in sorted(states.items()))
        if progress != last:
            common.log(f"soak: downloads: {progress or 'not expanded yet'}")
            last = progress
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the soak run did not finish within {timeout} s: {airflow.describe_run(DAG_ID, run_id)}"
            )
        time.sleep(5)


def _figures(
    *,
    count: int,
    run: dict[str, Any],
    instances: list[dict[str, Any]],
    jobs: list[dict[str, Any]],
    counters: dict[str, Any],
    sources: dict[str, str],
    output_dir: Path,
    token: bytes,
    log_bytes: dict[Path, bytes],
    database: bytes,
    xcom: tuple[int, int],
) -> dict[str, Any]:
    prompt_of = {job["request_id"]: job["input"]["prompt"] for job in jobs}
    files = sorted(output_dir.iterdir()) if output_dir.exists() else []
    videos = [path for path in files if path.suffix == ".mp4" and not path.name.startswith(".")]
    partial = [path.name for path in files if ".partial-" in path.name or path.name.startswith(".")]
    corrupt, verified_prompts = [], set()
    for video in videos:
        request_id = video.stem
        if sources.get(request_id) == _sha256(video.read_bytes()):
            verified_prompts.add(prompt_of.get(request_id))
        else:
            corrupt.append(video.name)
    tasks: dict[str, dict[str, Any]] = {}
    for instance in instances:
        task = tasks.setdefault(instance["task_id"], {"states": {}, "retried": 0, "tries": 0})
        task["states"][instance["state"]] = task["states"].get(instance["state"], 0) + 1
        task["retried"] += instance["try_number"] > 1
        task["tries"] += instance["try_number"]
    distinct_inputs = len({json_key(job["input"]) for job in jobs})
    return {
        "count": count,
        "run_state": run["state"],
        "completed": len(verified_prompts - {None}),
        "submissions": counters["submissions"],
        "distinct_inputs": distinct_inputs,
        "duplicate_submissions": counters["submissions"] - distinct_inputs,
        "max_submit_count": max((job["submit_count"] for job in jobs), default=0),
        "files": len(videos),
        "jobs_succeeded": len(sources),
        "corrupt_files": corrupt,
        "partial_files": partial,
        "token_in_logs": sum(content.count(token) for content in log_bytes.values()),
        "log_files_searched": len(log_bytes),
        "log_bytes_searched": sum(len(content) for content in log_bytes.values()),
        "token_in_xcom_rows": xcom[0],
        "xcom_rows_searched": xcom[1],
        "token_in_database": database.count(token),
        "database_bytes_searched": len(database),
        # Generations whose submit was not resent after an unknown outcome (by design).
        "designed_refusals": len(
            {
                match.group(1)
                for path, content in log_bytes.items()
                if f"task_id={GENERATE}" in str(path) and REFUSAL_MARKER in content
                for match in [_MAP_INDEX.search(str(path))]
                if match
            }
        ),
        "faults_injected": counters["faults_injected"],
        "calls": counters["calls"],
        "tasks": tasks,
    }


def json_key(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True)


def _report(figures: dict[str, Any]) -> tuple[str, bool]:
    count, refused = figures["count"], figures["designed_refusals"]
    leaks = figures["token_in_logs"] + figures["token_in_xcom_rows"] + figures["token_in_database"]
    checks = [
        (
            f"completed generations = {count}" + (f" - {refused} designed refusals" if refused else ""),
            f"{figures['completed']}",
            figures["completed"] == count - refused,
        ),
        (
            "duplicate paid submissions = 0",
            f"{figures['duplicate_submissions']} ({figures['submissions']} submissions, "
            f"{figures['distinct_inputs']} distinct inputs)",
            figures["duplicate_submissions"] == 0,
        ),
        (
            "files whose SHA-256 differs from the source = 0",
            f"{len(figures['corrupt_files'])} of {figures['files']}",
            not figures["corrupt_files"],
        ),
        ("partial files left = 0", f"{len(figures['partial_files'])}", not figures["partial_files"]),
        (
            "token occurrences in logs, XComs, metadata DB = 0",
            f"{figures['token_in_logs']} / {figures['token_in_xcom_rows']} / {figures['token_in_database']}",
            leaks == 0,
        ),
    ]
    tasks = figures["tasks"]
    calls = figures["calls"]
    details = common.table(
        ["figure", "value"],
        [
            ["DAG run state", figures["run_state"]],
            [
                "wall time: Airflow start / the run",
                f"{figures['seconds_to_ready']:.0f} s / {figures['seconds_run']:.0f} s",
            ],
            ["faults injected (all endpoints)", f"{figures['faults_injected']:,}"],
            [
                "API calls: submit / status / result / download",
                f"{calls['submit']:,} / {calls['status']:,} / {calls['result']:,} / {calls['download']:,}",
            ],
            *[
                [
                    f"task `{task_id}`: final states; tasks retried by Airflow",
                    ", ".join(f"{state} {number}" for state, number in sorted(info["states"].items()))
                    + f"; {info['retried']} retried",
                ]
                for task_id, info in sorted(tasks.items())
            ],
            [
                "designed refusals (submit not resent: DreaminaSubmitUncertainError)",
                f"{figures['designed_refusals']}",
            ],
            [
                "searched for the token",
                f"{figures['log_files_searched']} log files "
                f"({figures['log_bytes_searched'] / 2**20:.1f} MiB), {figures['xcom_rows_searched']} XCom "
                f"rows, {figures['database_bytes_searched'] / 2**20:.1f} MiB of database",
            ],
        ],
    )
    targets = common.table(
        ["target", "measured", "verdict"],
        [[name, measured, common.verdict(passed)] for name, measured, passed in checks],
    )
    plan = fault_plan(unsafe_submit=figures["unsafe_submit_faults"])
    kinds = "; ".join(f"{endpoint}: {', '.join(kind for kind, _ in plan[endpoint])}" for endpoint in plan)
    text = (
        f"{count} generations, faults on {figures['fault_rate']:.0%} of the calls of each endpoint, in "
        f"equal shares ({kinds}). Measured {common.stamp()}.\n\n{targets}\n\n{details}"
    )
    return text, all(passed for _, _, passed in checks)


def _refusals_report(figures: dict[str, Any]) -> str:
    """What submits that must not be resent cost: refusals, and what the DAG's shape makes of them."""
    generate = figures["tasks"].get(GENERATE, {"states": {}})
    download = figures["tasks"].get(DOWNLOAD, {"states": {}})
    rows = [
        ["generations asked for", figures["count"]],
        [
            "designed refusals (generate failed without retry, submit not resent)",
            figures["designed_refusals"],
        ],
        ["paid submissions / distinct inputs", f"{figures['submissions']} / {figures['distinct_inputs']}"],
        ["duplicate paid submissions", figures["duplicate_submissions"]],
        ["requests RunComfy finished (paid for)", figures["jobs_succeeded"]],
        ["videos stored and verified", figures["completed"]],
        ["finished requests whose video was not stored", figures["jobs_succeeded"] - figures["completed"]],
        [
            "task states: generate / download",
            ", ".join(f"{state} {number}" for state, number in sorted(generate["states"].items()))
            + " / "
            + ", ".join(f"{state} {number}" for state, number in sorted(download["states"].items())),
        ],
        ["corrupt or partial files", len(figures["corrupt_files"]) + len(figures["partial_files"])],
        [
            "token occurrences in logs, XComs, metadata DB",
            f"{figures['token_in_logs']} / {figures['token_in_xcom_rows']} / {figures['token_in_database']}",
        ],
    ]
    plan = fault_plan(unsafe_submit=True)
    return (
        f"The same soak with {figures['count']} generations and submit faults that are not safe to "
        f"resend added ({', '.join(kind for kind, _ in plan['submit'])} on submit, "
        f"{figures['fault_rate']:.0%} in all). Measured {common.stamp()}.\n\n"
        + common.table(["figure", "value"], rows)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--fault-rate", type=float, default=FAULT_RATE)
    parser.add_argument(
        "--unsafe-count",
        type=int,
        default=30,
        help="generations of a second soak that also fails submits with 500 and resets after sending, "
        "which the provider refuses to resend (0 skips it)",
    )
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--keep-home", type=Path, help="keep Airflow's home (logs, database) here")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="3 generations, no second soak; writes nothing")
    args = parser.parse_args()
    if args.smoke:
        args.count, args.unsafe_count, args.timeout, args.no_write = 3, 0, 180.0, True
    # The harness lives in the test suite: importable from the repository root.
    sys.path.insert(0, str(common.ROOT))
    figures = run_soak(args.count, fault_rate=args.fault_rate, timeout=args.timeout, keep_home=args.keep_home)
    text, passed = _report(figures)
    print("## Fault soak\n\n" + text + "\n")
    results: dict[str, Any] = {"figures": figures, "all_targets_met": passed}
    if args.unsafe_count:
        unsafe = run_soak(
            args.unsafe_count, fault_rate=args.fault_rate, unsafe_submit_faults=True, timeout=args.timeout
        )
        unsafe_text = _refusals_report(unsafe)
        print("## Fault soak with submit faults that must not be resent\n\n" + unsafe_text + "\n")
        results["unsafe_submit_faults"] = unsafe
        text += "\n\n**With submit faults that must not be resent.** " + unsafe_text
    if not args.no_write:
        common.update_section("soak", text)
        common.save_results("soak", results)


if __name__ == "__main__":
    main()
