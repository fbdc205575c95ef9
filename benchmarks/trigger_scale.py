"""Triggerer scale: N concurrent trigger runs in one event loop against the emulator.

For each N and each variant, a fresh child process submits N jobs to the emulator (a separate
process), then runs N waits as concurrent asyncio tasks in one event loop, as the triggerer does,
each starting at a random offset within one poll interval (triggers reach a triggerer as their
tasks defer, not all in the same millisecond). Variants:

* ``provider``         - ``DreaminaRequestTrigger.run()``: the hook's shared client per event loop
                         and connection, requests queued for one of its ``max_connections`` slots;
* ``baseline``         - a trigger that opens a new ``httpx.AsyncClient`` for every poll, the
                         pattern several official providers use (CPU-bound: run up to N=1000, capped);
* ``bare``             - a bare httpx polling loop on one shared client with the same pool size;
* ``bare-gated``       - the bare loop queueing for a slot in an ``asyncio.Semaphore`` of the
                         pool's size, as the provider does. The cheaper bare loop is the CPU floor.

At N = 3000 (``--repeat-sizes``), where each wait makes only about four calls and this shared
machine's slow spells weigh most, provider and bare-gated run two rounds each (``--rounds``),
interleaved A B B A, and the targets compare their medians.

Everything is imported before the measured window, in every variant. The emulator is reset
between runs with the same seed, so every variant waits for the same job durations. Figures: CPU
seconds of the child (user + system) per detected job, from the first poll to the last event;
peak RSS of the child and its growth over the window; TCP connections from the child to the
emulator open at once (its sockets in /proc/net/tcp, sampled every 100 ms) and accepted over the
window (emulator counter); status and result calls per job, and jobs over ceil(duration / poll)
+ 2 calls (emulator per-request counters); detection latency, from the emulator's ``finished_at``
to the event, wall clock; and the emulator's own CPU load, to show it was not the bottleneck.

    python benchmarks/trigger_scale.py                # N = 100, 1000 (poll 2 s) and 3000 (poll 9 s)
    python benchmarks/trigger_scale.py --sizes 100 --variants provider bare --no-write
    python benchmarks/trigger_scale.py --smoke        # every variant at N = 20, jobs of 1-3 s; writes nothing
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as common

VARIANTS = ("provider", "baseline", "bare", "bare-gated")
TERMINAL_STATUS_WORDS = frozenset({"completed", "succeeded", "failed", "cancelled"})
POOL_SIZE = 32


# -- the child: one variant at one N ------------------------------------------------------------


async def _submit_all(base_url: str, token: str, count: int) -> list[str]:
    import httpx

    image = common.png_data_uri()
    headers = {"Authorization": f"Bearer {token}"}
    limit = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60, trust_env=False) as client:

        async def one(index: int) -> str:
            async with limit:
                body = {"prompt": f"benchmark job {index}", "image_urls": [image], "seed": index}
                response = await client.post(common.MODEL_PATH, json=body)
                response.raise_for_status()
                return str(response.json()["request_id"])

        return list(await asyncio.gather(*(one(index) for index in range(count))))


def _counters(base_url: str) -> dict[str, Any]:
    import httpx

    # A fresh connection each time: exactly one connection per snapshot, easy to subtract.
    with httpx.Client(base_url=base_url, timeout=60, trust_env=False) as client:
        answer: dict[str, Any] = client.get("/_emulator/counters").json()
        return answer


def _baseline_trigger_class() -> type:
    """A trigger in the style of providers that build a new HTTP client for every poll."""
    import httpx
    from airflow.sdk import BaseHook
    from airflow.triggers.base import BaseTrigger, TriggerEvent

    class NewClientPerPollTrigger(BaseTrigger):  # type: ignore[misc]
        def __init__(self, request_id: str, conn_id: str, poll_interval: float) -> None:
            super().__init__()
            self.request_id = request_id
            self.conn_id = conn_id
            self.poll_interval = poll_interval

        def serialize(self) -> tuple[str, dict[str, Any]]:
            return (
                "benchmarks.NewClientPerPollTrigger",
                {"request_id": self.request_id, "conn_id": self.conn_id, "poll_interval": self.poll_interval},
            )

        async def _get(self, conn: Any, action: str) -> dict[str, Any]:
            headers = {"Authorization": f"Bearer {conn.password}"}
            async with httpx.AsyncClient(base_url=conn.host, headers=headers, timeout=30) as client:
                response = await client.get(f"/v1/requests/{self.request_id}/{action}")
                response.raise_for_status()
                answer: dict[str, Any] = response.json()
                return answer

        async def run(self) -> Any:
            conn = await BaseHook.aget_connection(self.conn_id)
            while True:
                try:
                    status = await self._get(conn, "status")
                    if status["status"] in TERMINAL_STATUS_WORDS:
                        result = await self._get(conn, "result")
                        yield TriggerEvent({"status": result["status"], "request_id": self.request_id})
                        return
                except httpx.HTTPError as error:
                    self.log.warning("poll failed: %s", error)
                await asyncio.sleep(self.poll_interval)

    return NewClientPerPollTrigger


def _mark(output: str, event: str) -> None:
    """Tell the parent, which samples open connections, where the measured window starts and ends."""
    Path(f"{output}.{event}").touch()


async def _run_child(args: argparse.Namespace) -> dict[str, Any]:
    # Everything is imported first, by every variant: a triggerer has Airflow and the provider
    # loaded before it runs a trigger, so neither import time nor module memory belongs to a wait.
    import httpx
    from airflow.sdk import BaseHook
    from airflow.triggers.base import BaseTrigger  # noqa: F401

    from airflow_provider_dreamina.hooks.dreamina import DreaminaHook
    from airflow_provider_dreamina.triggers.dreamina import DreaminaRequestTrigger

    base_url, token, variant, poll = args.base_url, args.token, args.variant, args.poll
    # A running triggerer has loaded its secrets backends and masked its configuration's secrets
    # (about 0.8 s of CPU here, on the first secret masked in a process): one lookup does both.
    await BaseHook.aget_connection("dreamina_default")
    request_ids = await _submit_all(base_url, token, args.n)
    before = _counters(base_url)
    rss_start = common.current_rss_mib()
    common.reset_peak_rss()

    if variant == "provider":

        async def wait(request_id: str) -> str:
            trigger = DreaminaRequestTrigger(request_id=request_id, poll_interval=poll)
            async for event in trigger.run():
                return str(event.payload["status"])
            raise RuntimeError("the trigger ended without an event")

        async def close() -> None:
            await DreaminaHook.aclose_shared_clients()

    elif variant == "baseline":
        trigger_class = _baseline_trigger_class()

        async def wait(request_id: str) -> str:
            trigger = trigger_class(request_id, "dreamina_default", poll)
            async for event in trigger.run():
                return str(event.payload["status"])
            raise RuntimeError("the trigger ended without an event")

        async def close() -> None:
            return None

    else:
        # bare-gated queues for a pool slot in an asyncio.Semaphore, as the provider does.
        gate: Any = asyncio.Semaphore(POOL_SIZE) if variant == "bare-gated" else contextlib.nullcontext()
        limits = httpx.Limits(max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE)
        shared = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            limits=limits,
            timeout=httpx.Timeout(30, pool=300),
        )

        async def wait(request_id: str) -> str:
            while True:
                try:
                    async with gate:
                        response = await shared.get(f"/v1/requests/{request_id}/status")
                    if response.json()["status"] in TERMINAL_STATUS_WORDS:
                        async with gate:
                            result = await shared.get(f"/v1/requests/{request_id}/result")
                        return str(result.json()["status"])
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(poll)

        async def close() -> None:
            await shared.aclose()

    events: dict[str, tuple[float, str]] = {}
    offsets = random.Random(args.seed)

    async def one(request_id: str, offset: float) -> None:
        await asyncio.sleep(offset)
        status = await wait(request_id)
        events[request_id] = (time.time(), status)

    cpu_start, wall_start = time.process_time(), time.monotonic()
    _mark(args.output, "started")
    tasks = [asyncio.create_task(one(rid, offsets.uniform(0, poll))) for rid in request_ids]
    done, pending = await asyncio.wait(tasks, timeout=args.cap)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    cpu_seconds, wall_seconds = time.process_time() - cpu_start, time.monotonic() - wall_start
    _mark(args.output, "ended")
    await close()
    errors = [repr(task.exception()) for task in done if task.exception() is not None]
    after = _counters(base_url)
    return {
        "variant": variant,
        "n": args.n,
        "cpu_seconds": cpu_seconds,
        "wall_seconds": wall_seconds,
        "rss_start_mib": rss_start,
        "rss_peak_mib": common.peak_rss_hwm_mib(),
        # The snapshot after the run opened one connection of its own.
        "connections": after["connections"] - before["connections"] - 1,
        "events": events,
        "timed_out": len(pending),
        "errors": errors[:5],
    }


# -- the parent: emulator, runs, figures -----------------------------------------------------


def _run_variant(
    emulator: Any,
    variant: str,
    n: int,
    poll: float,
    durations: list[float],
    args: argparse.Namespace,
    log_dir: Path,
    round_number: int = 1,
) -> dict[str, Any]:
    # The reset restores the seed: every variant at this N waits for the same job durations.
    emulator.reset()
    emulator.configure(run_seconds_range=durations)
    env = {**os.environ, "AIRFLOW_CONN_DREAMINA_DEFAULT": emulator.connection_json(max_connections=POOL_SIZE)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(common.ROOT), env.get("PYTHONPATH")]))
    cap = args.cap_baseline if variant == "baseline" else durations[1] + 4 * poll + 60
    command = [
        sys.executable,
        __file__,
        "--child",
        "--variant",
        variant,
        "--n",
        str(n),
        "--poll",
        str(poll),
        "--base-url",
        emulator.base_url,
        "--token",
        emulator.token,
        "--cap",
        str(cap),
    ]
    emulator_cpu_before = common.process_cpu_seconds(emulator.process.pid)
    log_path = log_dir / f"{variant}-{n}-{round_number}.log"
    output = log_dir / f"{variant}-{n}-{round_number}.json"
    started, ended = Path(f"{output}.started"), Path(f"{output}.ended")
    peak_open = 0
    with log_path.open("w") as trigger_log:
        # Trigger log lines (stdout) go to a file, as a triggerer writes them to its task logs.
        child_process = subprocess.Popen(
            [*command, "--output", str(output)], env=env, stdout=trigger_log, stderr=subprocess.STDOUT
        )
        while child_process.poll() is None:
            if started.exists() and not ended.exists():
                peak_open = max(peak_open, _open_connections(child_process.pid, emulator.port))
            time.sleep(0.1)
    if child_process.returncode != 0:
        raise RuntimeError(f"{variant} at N={n} exited with {child_process.returncode}; see {log_path}")
    child = json.loads(output.read_text())
    child["peak_open_connections"] = peak_open
    emulator_cpu = common.process_cpu_seconds(emulator.process.pid) - emulator_cpu_before
    jobs = {job["request_id"]: job for job in emulator.requests()}
    figures = _figures(child, jobs, emulator_cpu, poll)
    figures["durations"] = durations
    figures["round"] = round_number
    return figures


def _open_connections(pid: int, port: int) -> int:
    """Established TCP connections from process ``pid`` to ``port`` (the emulator), from /proc."""
    inodes = set()
    try:
        for descriptor in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(descriptor)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    except OSError:  # the process has just exited
        return 0
    count = 0
    for table_path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table_path).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if fields[3] == "01" and remote_port == port and fields[9] in inodes:
                count += 1
    return count


def _figures(child: dict[str, Any], jobs: dict[str, Any], emulator_cpu: float, poll: float) -> dict[str, Any]:
    events = child["events"]
    latencies, calls, over_bound = [], [], 0
    for request_id, (event_time, _status) in events.items():
        job = jobs[request_id]
        latencies.append(event_time - job["finished_at"])
        job_calls = job["calls"]["status"] + job["calls"]["result"]
        calls.append(job_calls)
        duration = job["finished_at"] - job["created_at"]
        if job_calls > math.ceil(duration / poll) + 2:
            over_bound += 1
    completed = len(events)
    calls_total = sum(job["calls"]["status"] + job["calls"]["result"] for job in jobs.values())
    return {
        "variant": child["variant"],
        "n": child["n"],
        "poll": poll,
        "completed": completed,
        "timed_out": child["timed_out"],
        "errors": child["errors"],
        "cpu_seconds": child["cpu_seconds"],
        "cpu_ms_per_job": 1000 * child["cpu_seconds"] / completed if completed else float("nan"),
        "wall_seconds": child["wall_seconds"],
        "rss_start_mib": child["rss_start_mib"],
        "rss_peak_mib": child["rss_peak_mib"],
        "connections": child["connections"],
        "peak_open_connections": child["peak_open_connections"],
        "calls_per_job_mean": sum(calls) / len(calls) if calls else float("nan"),
        "calls_per_job_max": max(calls) if calls else 0,
        "calls_total": calls_total,
        "cpu_ms_per_call": 1000 * child["cpu_seconds"] / calls_total if calls_total else float("nan"),
        "jobs_over_call_bound": over_bound,
        "latency_p50": common.percentile(latencies, 0.5),
        "latency_p99": common.percentile(latencies, 0.99),
        "latency_max": max(latencies) if latencies else float("nan"),
        "emulator_cpu_seconds": emulator_cpu,
    }


def _run_order(variants: list[str], n: int, args: argparse.Namespace) -> list[tuple[str, int]]:
    """(variant, round) in the order to run them at this N.

    At the sizes in ``--repeat-sizes``, the provider and the gated bare loop run ``--rounds``
    times each, interleaved A B B A ..., so that a slow spell of this shared machine lands on both;
    their medians are compared.
    """
    paired = [variant for variant in ("bare-gated", "provider") if variant in variants]
    if n not in args.repeat_sizes or len(paired) < 2:
        return [(variant, 1) for variant in variants]
    order: list[tuple[str, int]] = []
    for round_number in range(1, args.rounds + 1):
        pair = paired if round_number % 2 else paired[::-1]
        order += [(variant, round_number) for variant in pair]
    return order + [(variant, 1) for variant in variants if variant not in paired]


def _median(runs: list[dict[str, Any]], variant: str, n: int, key: str) -> float | None:
    values = [run[key] for run in runs if run["variant"] == variant and run["n"] == n]
    return statistics.median(values) if values else None


def _floor(runs: list[dict[str, Any]], n: int) -> tuple[str, float] | None:
    """The cheaper bare loop at this N (median over its rounds): the CPU floor a trigger is compared with."""
    medians = [(variant, _median(runs, variant, n, "cpu_ms_per_job")) for variant in ("bare", "bare-gated")]
    known = [(variant, value) for variant, value in medians if value is not None]
    return min(known, key=lambda item: item[1]) if known else None


def _report(runs: list[dict[str, Any]], args: argparse.Namespace) -> tuple[str, bool]:
    rows, checks = [], []
    for run in runs:
        floor = _floor(runs, run["n"])
        ratio = run["cpu_ms_per_job"] / floor[1] if floor else float("nan")
        # CPU per job means something only when every job was detected (the baseline may not be).
        per_job = run["cpu_ms_per_job"] if run["completed"] == run["n"] else float("nan")
        if run["completed"] != run["n"]:
            ratio = float("nan")
        repeated = sum(other["variant"] == run["variant"] and other["n"] == run["n"] for other in runs) > 1
        rows.append(
            [
                run["variant"] + (f" (round {run['round']})" if repeated else ""),
                f"{run['n']:,}",
                f"{run['poll']:g}",
                f"{run['durations'][0]:g}-{run['durations'][1]:g}",
                f"{run['completed']:,}",
                per_job,
                run["cpu_ms_per_call"],
                ratio,
                run["rss_peak_mib"],
                run["rss_peak_mib"] - run["rss_start_mib"],
                run["peak_open_connections"],
                run["connections"],
                run["calls_per_job_mean"],
                f"{run['jobs_over_call_bound']}",
                run["latency_p50"],
                run["latency_p99"],
                run["emulator_cpu_seconds"] / run["wall_seconds"] if run["wall_seconds"] else float("nan"),
            ]
        )
    for n in dict.fromkeys(run["n"] for run in runs if run["variant"] == "provider"):
        rounds = [run for run in runs if run["variant"] == "provider" and run["n"] == n]
        poll, floor = rounds[0]["poll"], _floor(runs, n)
        cpu = _median(runs, "provider", n, "cpu_ms_per_job")
        p99 = _median(runs, "provider", n, "latency_p99")
        assert cpu is not None and p99 is not None
        ratio = cpu / floor[1] if floor else float("nan")
        detected = min(run["completed"] for run in rounds)
        open_peak = max(run["peak_open_connections"] for run in rounds)
        accepted = max(run["connections"] for run in rounds)
        over = max(run["jobs_over_call_bound"] for run in rounds)
        most_calls = max(run["calls_per_job_max"] for run in rounds)
        median_of = f", median of {len(rounds)} rounds" if len(rounds) > 1 else ""
        each_ratio = (
            " (rounds: " + ", ".join(f"{run['cpu_ms_per_job'] / floor[1]:.2f}x" for run in rounds) + ")"
            if floor and len(rounds) > 1
            else ""
        )
        each_p99 = (
            " (rounds: " + ", ".join(f"{run['latency_p99']:.2f} s" for run in rounds) + ")"
            if len(rounds) > 1
            else ""
        )
        checks += [
            (f"N={n:,}: every job detected", f"{detected:,} of {n:,}", detected == n),
            (
                f"N={n:,}: TCP connections open at once ≤ pool size ({POOL_SIZE})",
                f"{open_peak:,} (accepted over the run: {accepted:,})",
                open_peak <= POOL_SIZE,
            ),
            (
                f"N={n:,}: calls per job ≤ ceil(duration / poll) + 2",
                f"{over} jobs over (max {most_calls} calls)",
                over == 0,
            ),
            (
                f"N={n:,}: CPU per job ≤ 1.5x the bare loop{median_of}",
                f"{ratio:.2f}x ({floor[0] if floor else '-'}){each_ratio}",
                ratio <= 1.5,
            ),
            (
                f"N={n:,}: p99 detection latency ≤ poll + 1 s ({poll + 1:g} s){median_of}",
                f"{p99:.2f} s{each_p99}",
                p99 <= poll + 1,
            ),
        ]
    figures = common.table(
        [
            "variant",
            "N",
            "poll s",
            "jobs s",
            "detected",
            "CPU ms / job",
            "CPU ms / call",
            "x floor",
            "peak RSS MiB",
            "RSS growth MiB",
            "TCP conns open (peak)",
            "TCP conns accepted",
            "calls / job",
            "jobs over call bound",
            "latency p50 s",
            "latency p99 s",
            "emulator CPU (cores)",
        ],
        rows,
    )
    targets = common.table(
        ["target (provider)", "measured", "verdict"],
        [[name, measured, common.verdict(passed)] for name, measured, passed in checks],
    )
    settings = (
        f"Job durations uniform in the range shown (no queueing); pool "
        f"size {POOL_SIZE}; start offsets uniform within one poll interval; baseline capped at "
        f"{args.cap_baseline:g} s per run; x floor = CPU per job over the cheaper bare loop at that N "
        f"(median of its rounds). At N = {', '.join(f'{n:,}' for n in args.repeat_sizes)}, provider and "
        f"bare-gated ran {args.rounds} rounds each, interleaved, and the targets use their medians. "
        f"Measured {common.stamp()}."
    )
    return f"{settings}\n\n{figures}\n\n{targets}", all(passed for _, _, passed in checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 3000])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument(
        "--baseline-max-n", type=int, default=1000, help="skip the baseline above this N (it is CPU-bound)"
    )
    parser.add_argument(
        "--gated-min-n", type=int, default=1000, help="run bare-gated from this N (below, it equals bare)"
    )
    parser.add_argument(
        "--polls",
        type=float,
        nargs="+",
        default=[2.0, 2.0, 9.0],
        help="poll interval for each size, in order (the last one repeats)",
    )
    parser.add_argument(
        "--durations",
        type=float,
        nargs="+",
        default=[5.0, 15.0, 5.0, 15.0, 10.0, 30.0],
        help="shortest and longest job for each size, in pairs, in order (the last pair repeats)",
    )
    parser.add_argument(
        "--repeat-sizes",
        type=int,
        nargs="*",
        default=[3000],
        help="sizes at which provider and bare-gated run --rounds times, interleaved (medians compared)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds at --repeat-sizes")
    parser.add_argument("--cap-baseline", type=float, default=45.0, help="seconds a baseline run may take")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    parser.add_argument("--keep-logs", action="store_true", help="keep each child's log and events")
    parser.add_argument(
        "--smoke", action="store_true", help="every variant at N = 20, jobs of 1-3 s; writes nothing"
    )
    # Child mode (internal).
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--poll", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--cap", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        result = asyncio.run(_run_child(args))
        Path(args.output).write_text(json.dumps(result))
        return
    if args.smoke:
        args.sizes, args.polls, args.durations, args.no_write = [20], [1.0], [1.0, 3.0], True
        args.gated_min_n, args.repeat_sizes, args.cap_baseline = 0, [], 20.0

    from airflow_provider_dreamina.emulator import run_emulator

    runs: list[dict[str, Any]] = []
    log_dir = Path(tempfile.mkdtemp(prefix="trigger-scale-"))
    options = {"queue_seconds": 0, "seed": args.seed}
    pairs = [args.durations[i : i + 2] for i in range(0, len(args.durations) - 1, 2)]
    with run_emulator(**options) as emulator:
        for index, n in enumerate(args.sizes):
            poll = args.polls[min(index, len(args.polls) - 1)]
            durations = pairs[min(index, len(pairs) - 1)]
            for variant, round_number in _run_order(args.variants, n, args):
                if variant == "baseline" and n > args.baseline_max_n:
                    continue
                if variant == "bare-gated" and n < args.gated_min_n:
                    continue
                common.log(f"trigger_scale: {variant} at N={n:,} (round {round_number})")
                run = _run_variant(emulator, variant, n, poll, durations, args, log_dir, round_number)
                common.log(
                    f"  {run['completed']}/{n} in {run['wall_seconds']:.1f} s, "
                    f"{run['cpu_ms_per_job']:.2f} ms CPU/job, p99 {run['latency_p99']:.2f} s"
                )
                runs.append(run)
    if args.keep_logs:
        common.log(f"trigger_scale: child logs and events kept in {log_dir}")
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
    text, passed = _report(runs, args)
    print("## Triggerer scale\n\n" + text + "\n")
    if not args.no_write:
        common.update_section("trigger_scale", text)
        results = {"settings": vars(args), "runs": runs, "all_targets_met": passed}
        common.save_results("trigger_scale", results)


if __name__ == "__main__":
    main()
