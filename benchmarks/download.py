"""Download: DreaminaDownloadOperator beside curl and plain httpx loops, server and client on their own cores.

The emulator (the server) is pinned to one core, every client to the other (``os.sched_setaffinity``
on every thread of the emulator, and on this process, whose children inherit it), so the server
never takes the client's core. For each size, one emulator job serves a synthetic MP4 of that
many bytes (``output_bytes``). Then, in rounds that each start with another method:

* ``curl -sS -o FILE URL`` (wall time around the process; CPU from its rusage);
* in a long-lived client process (``_download_client.py``, so interpreter start-up and imports are
  never timed), each timed inside that process: a plain httpx stream-to-file loop; that loop with
  SHA-256, fsync and a rename (the least any verified download must do); the same with the hash on a
  second thread (report only); ``DreaminaDownloadOperator.execute()`` (result lookup, stream,
  SHA-256, the video check, temporary file, fsync, rename, manifest, asset event); the operator
  with the video check off; and, as a diagnostic, the operator with httpcore's 64 KiB reads.

At 100 MB, 21 more alternating pairs of the operator with and without the video check follow (the
check's share is the median of every pair's CPU ratio), then 5 runs that time the check from inside
(CPU seconds in ``VideoInspector.feed`` and ``finish``), kept out of the table.

Every stored file's SHA-256 must be the same, and each file is deleted once checked, so the page
cache holds one output at a time. Medians of the rounds are reported, with client and server CPU
seconds per GiB, the client's peak RSS growth, and how much of the client's core other work took
while each method ran (the machine may be shared).

    python benchmarks/download.py                       # 100 MB (11 rounds) and 1 GiB (3 rounds)
    python benchmarks/download.py --sizes 104857600 --rounds 9 --no-write
    python benchmarks/download.py --smoke               # one round of a 4 MB output; writes nothing
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common as common

MIB, GIB = 2**20, 2**30
DEFAULT_SIZES = [100 * 10**6, GIB]
WARM_UP_BYTES = 2 * 10**6
#: A small output, whose download time is nearly all fixed costs (clients, result lookup, manifest).
FIXED_COST_BYTES = 2 * 10**6
FIXED_COST_ROUNDS = 9
RSS_TARGET_MIB = 64
#: The operator, video check included, against the loop with SHA-256 and fsync.
THROUGHPUT_TARGET = 0.95
CHECK_OVERHEAD_TARGET = 0.05
CHECK_OVERHEAD_SIZE = 100 * 10**6
#: Extra alternating pairs (check on, check off) at that size: the difference is small beside the
#: noise of one 0.2 s run, so it takes more pairs than the other comparisons.
CHECK_EXTRA_PAIRS = 21
#: Runs that time the check from inside (``operator_probe``), kept out of the table's rows.
CHECK_PROBES = 5
#: ``--smoke``: one round at this size checks that every method still runs.
SMOKE_BYTES = 4 * 10**6

METHODS = {
    "curl": "`curl -o`",
    "loop": "httpx loop",
    "loop_verified": "httpx loop + SHA-256 + fsync",
    "loop_threaded": "httpx loop + SHA-256 on a 2nd thread + fsync (report only)",
    "operator": "**operator** (video check on)",
    "operator_unchecked": "operator, video check off",
    "operator_64k": "operator, 64 KiB reads (diagnostic)",
}
OPERATOR_METHODS = ("operator", "operator_unchecked", "operator_64k", "operator_probe")


# -- cores and load ---------------------------------------------------------------------------


def _pin(emulator_pid: int) -> tuple[int, int] | None:
    """The emulator (every thread) on the first core, this process and its children on the second."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None
    server, client = cores[0], cores[1]
    for task in os.listdir(f"/proc/{emulator_pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task), {server})
    os.sched_setaffinity(0, {client})
    return server, client


def _core_busy_seconds() -> dict[int, float]:
    """CPU seconds each core has spent busy since boot (/proc/stat, all processes)."""
    ticks = os.sysconf("SC_CLK_TCK")
    busy = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in values[:8])
            busy[int(name[3:])] = (user + nice + system + irq + softirq + steal) / ticks
    return busy


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- one run ----------------------------------------------------------------------------------


@dataclass
class _Runs:
    """Every run of one method at one size."""

    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)
    others: list[float] = field(default_factory=list)  # share of the client core other work took
    rss_growth: list[float] = field(default_factory=list)


class _Client:
    """The long-lived client process (``_download_client.py``)."""

    def __init__(self, env: dict[str, str]) -> None:
        # Airflow's and the operator's log lines go to a file, shown if the process fails.
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self.process = subprocess.Popen(
            [sys.executable, str(common.ROOT / "benchmarks" / "_download_client.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
            cwd=common.ROOT,
            text=True,
        )

    def run(self, command: dict[str, Any]) -> dict[str, Any]:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps(command) + "\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            self.stderr.seek(0)
            tail = self.stderr.read().decode(errors="replace")[-4000:]
            raise RuntimeError(f"the client process exited with {self.process.wait()}:\n{tail}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.stderr.close()


def _curl(url: str, target: Path) -> dict[str, Any]:
    started = time.perf_counter()
    command = ["curl", "-sS", "--fail", "--noproxy", "*", "-o", str(target), url]
    process = subprocess.Popen(command)
    _pid, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"curl exited with {process.returncode}")
    return {"seconds": seconds, "cpu": usage.ru_utime + usage.ru_stime, "stored": str(target), "sha256": None}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def _submit_finished(emulator: Any, size: int) -> tuple[str, str]:
    """A request that finished at once with an output of ``size`` bytes: (request id, output URL)."""
    from airflow_provider_dreamina.hooks.dreamina import DreaminaHook
    from airflow_provider_dreamina.models import ImageToVideoInput

    emulator.script_jobs(queue_seconds=0, run_seconds=0, output_bytes=size)
    with DreaminaHook() as hook:
        request = ImageToVideoInput(prompt="benchmark download", image_urls=[common.png_data_uri()])
        request_id = hook.submit(request).request_id
        url = hook.get_result(request_id).output_urls[0]
    return request_id, url


@dataclass
class _Setup:
    emulator: Any
    env: dict[str, str]
    workdir: Path
    client_core: int | None


@contextlib.contextmanager
def _client(setup: _Setup, warm_request: str, warm_url: str, methods: list[str]) -> Iterator[_Client]:
    """A client process, warmed up with a small download through each kind of method it will run."""
    client = _Client(setup.env)
    try:
        target = setup.workdir / "warm-up"
        if any(method.startswith("loop") for method in methods):
            client.run({"method": "loop_verified", "url": warm_url, "target": str(target)})
            target.unlink()
        if any(method in OPERATOR_METHODS for method in methods):
            client.run({"method": "operator", "request_id": warm_request, "target": str(target)})
            shutil.rmtree(target)
        yield client
    finally:
        client.close()


def _measure(setup: _Setup, size: int, rounds: int, methods: list[str]) -> dict[str, Any]:
    emulator = setup.emulator
    request_id, url = _submit_finished(emulator, size)
    warm_request, warm_url = _submit_finished(emulator, WARM_UP_BYTES)
    runs = {method: _Runs() for method in methods}
    expected: str | None = None
    mismatches: list[str] = []
    leftovers: list[str] = []
    started_load = _load()
    check_pairs: list[tuple[float, float]] = []
    check_probes: list[tuple[float, float]] = []
    with _client(setup, warm_request, warm_url, methods) as client:

        def run(method: str, label: str, record: _Runs | None = None) -> dict[str, Any]:
            nonlocal expected
            target = setup.workdir / f"{method}-{label}"
            server_before = common.process_cpu_seconds(emulator.process.pid)
            busy_before = _core_busy_seconds()
            if method == "curl":
                answer = _curl(url, target)
            else:
                answer = client.run(
                    {"method": method, "url": url, "request_id": request_id, "target": str(target)}
                )
            busy = _core_busy_seconds()
            server_cpu = common.process_cpu_seconds(emulator.process.pid) - server_before
            if record is not None:
                record.seconds.append(answer["seconds"])
                record.cpu.append(answer["cpu"])
                record.server_cpu.append(server_cpu)
                if setup.client_core is not None:
                    core_busy = busy[setup.client_core] - busy_before[setup.client_core]
                    record.others.append(max(0.0, core_busy - answer["cpu"]) / answer["seconds"])
                if "rss_peak" in answer:
                    record.rss_growth.append(answer["rss_peak"] - answer["rss_before"])
            stored = Path(answer["stored"])
            digest = _sha256(stored)
            expected = expected or digest
            if digest != expected or answer["sha256"] not in (None, digest):
                mismatches.append(f"{method} {label}")
            if method in OPERATOR_METHODS:
                leftovers.extend(p.name for p in target.iterdir() if ".partial-" in p.name)
                shutil.rmtree(target)
            else:
                stored.unlink()
            return answer

        for attempt in range(rounds):
            common.log(f"download: {_size_label(size)}, round {attempt + 1} of {rounds} (load {_load()})")
            shift = attempt % len(methods)
            cpu: dict[str, float] = {}
            for method in methods[shift:] + methods[:shift]:
                cpu[method] = run(method, f"round-{attempt}", runs[method])["cpu"]
            if "operator" in cpu and "operator_unchecked" in cpu:
                check_pairs.append((cpu["operator"], cpu["operator_unchecked"]))
        if size == CHECK_OVERHEAD_SIZE and "operator" in runs and "operator_unchecked" in runs:
            common.log(
                f"download: {_size_label(size)}, {CHECK_EXTRA_PAIRS} more pairs with and without the check"
            )
            for attempt in range(CHECK_EXTRA_PAIRS):
                order = ["operator", "operator_unchecked"][:: 1 if attempt % 2 else -1]
                cpu = {method: run(method, f"pair-{attempt}")["cpu"] for method in order}
                check_pairs.append((cpu["operator"], cpu["operator_unchecked"]))
            for attempt in range(CHECK_PROBES):
                answer = run("operator_probe", f"probe-{attempt}")
                check_probes.append((answer["check_cpu"], answer["cpu"]))
    return {
        "size_bytes": size,
        "rounds": rounds,
        "load_before": started_load,
        "load_after": _load(),
        "runs": {method: vars(record) for method, record in runs.items()},
        "check_pairs": check_pairs,
        "check_probes": check_probes,
        "mismatches": mismatches,
        "partial_files_left": leftovers,
    }


def _fixed_costs(setup: _Setup, rounds: int = FIXED_COST_ROUNDS) -> dict[str, Any]:
    """Milliseconds the operator and the verified loop take for a small output, and one SSL context."""
    import httpx

    request_id, url = _submit_finished(setup.emulator, FIXED_COST_BYTES)
    methods = ["loop_verified", "operator"]
    seconds: dict[str, list[float]] = {method: [] for method in methods}
    cpu: dict[str, list[float]] = {method: [] for method in methods}
    with _client(setup, request_id, url, methods) as client:
        for attempt in range(rounds):
            for method in methods if attempt % 2 else methods[::-1]:
                target = setup.workdir / f"fixed-{method}-{attempt}"
                answer = client.run(
                    {"method": method, "url": url, "request_id": request_id, "target": str(target)}
                )
                seconds[method].append(answer["seconds"])
                cpu[method].append(answer["cpu"])
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink()
    ssl_cpu = []
    for _ in range(rounds):
        started = time.process_time()
        httpx.create_ssl_context()
        ssl_cpu.append(time.process_time() - started)
    return {
        "bytes": FIXED_COST_BYTES,
        "rounds": rounds,
        "ms": {method: common.median(values) * 1000 for method, values in seconds.items()},
        "cpu_ms": {method: common.median(values) * 1000 for method, values in cpu.items()},
        "ssl_context_cpu_ms": common.median(ssl_cpu) * 1000,
    }


# -- report -----------------------------------------------------------------------------------


def _hash_seconds_per_gib() -> float:
    """CPU seconds SHA-256 takes per GiB over bytes already in memory, on this (the client's) core."""
    block = os.urandom(MIB)
    digest = hashlib.sha256()
    started = time.process_time()
    for _ in range(256):
        digest.update(block)
    return (time.process_time() - started) * 4


def _size_label(size: int) -> str:
    if size % GIB == 0:
        return f"{size // GIB} GiB"
    return f"{size / 10**6:,.0f} MB" if size % 10**6 == 0 else f"{size / MIB:,.0f} MiB"


def _summary(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Medians per method: MB/s, CPU s per GiB (client and server), RSS growth, others' share."""
    size = result["size_bytes"]
    medians = {}
    for method, runs in result["runs"].items():
        seconds = common.median(runs["seconds"])
        medians[method] = {
            "seconds": seconds,
            "mb_s": size / seconds / 1e6,
            "cpu_s_per_gib": common.median(runs["cpu"]) * GIB / size,
            "server_cpu_s_per_gib": common.median(runs["server_cpu"]) * GIB / size,
            "rss_growth_mib": max(runs["rss_growth"]) if runs["rss_growth"] else float("nan"),
            "others": common.median(runs["others"]) if runs["others"] else float("nan"),
        }
    return medians


def _check_overhead(result: dict[str, Any]) -> float | None:
    """What the video check adds to the operator's CPU seconds: the median of the pairs' ratios."""
    pairs = result.get("check_pairs") or []
    if not pairs:
        return None
    return common.median([checked / unchecked - 1 for checked, unchecked in pairs])


def _report(
    results: list[dict[str, Any]], fixed: dict[str, Any], pinned: bool, hash_s_per_gib: float
) -> tuple[str, bool]:
    sections, checks = [], []
    for result in results:
        size = _size_label(result["size_bytes"])
        medians = _summary(result)
        floor = medians.get("loop_verified", {}).get("mb_s")
        curl = medians.get("curl", {}).get("mb_s")
        rows = []
        for method, figures in medians.items():
            rows.append(
                [
                    METHODS[method],
                    figures["mb_s"],
                    f"{figures['mb_s'] / floor:.2f}" if floor else "-",
                    f"{figures['mb_s'] / curl:.2f}" if curl else "-",
                    figures["cpu_s_per_gib"],
                    figures["server_cpu_s_per_gib"],
                    figures["rss_growth_mib"],
                    f"{figures['others']:.0%}",
                ]
            )
        headers = [
            f"{size}, {result['rounds']} rounds",
            "MB/s",
            "x loop + SHA-256 + fsync",
            "x curl",
            "client CPU s/GiB",
            "server CPU s/GiB",
            "RSS growth MiB",
            "other work on the client core",
        ]
        sections.append(
            common.table(headers, rows)
            + f"\n\nLoad average {result['load_before']} before, {result['load_after']} after."
        )
        if "operator" in medians and floor:
            ratio = medians["operator"]["mb_s"] / floor
            checks.append(
                (
                    f"{size}: operator ≥ {THROUGHPUT_TARGET}x the loop with SHA-256 and fsync",
                    f"{ratio:.2f}x ({medians['operator']['mb_s']:,.0f} vs {floor:,.0f} MB/s)",
                    ratio >= THROUGHPUT_TARGET,
                )
            )
        overhead = _check_overhead(result)
        if overhead is not None and result["size_bytes"] == CHECK_OVERHEAD_SIZE:
            pairs = result["check_pairs"]
            with_check = common.median([checked for checked, _ in pairs])
            without = common.median([unchecked for _, unchecked in pairs])
            measured = (
                f"{overhead:+.1%} (median of {len(pairs)} alternating pairs' ratios; medians "
                f"{with_check:.3f} s with, {without:.3f} s without)"
            )
            if result.get("check_probes"):
                inside = common.median([check for check, _ in result["check_probes"]])
                share = common.median([check / total for check, total in result["check_probes"]])
                measured += f"; timed inside the check: {inside * 1000:.1f} ms, {share:.1%} of the run"
            checks.append(
                (
                    f"{size}: the video check adds < {CHECK_OVERHEAD_TARGET:.0%} to the client CPU",
                    measured,
                    overhead < CHECK_OVERHEAD_TARGET,
                )
            )
        if "operator" in medians:
            growth = medians["operator"]["rss_growth_mib"]
            checks.append(
                (
                    f"{size}: operator RSS growth < {RSS_TARGET_MIB} MiB",
                    f"{growth:.1f} MiB",
                    growth < RSS_TARGET_MIB,
                )
            )
    growths = [_summary(r)["operator"]["rss_growth_mib"] for r in results if "operator" in r["runs"]]
    if len(growths) > 1:
        checks.append(
            (
                "operator RSS growth independent of the size",
                f"{min(growths):.1f}-{max(growths):.1f} MiB across sizes",
                max(growths) - min(growths) < 16,
            )
        )
    clean = all(not r["mismatches"] and not r["partial_files_left"] for r in results)
    checks.append(
        ("every stored file identical (SHA-256), no partial file left", "yes" if clean else "NO", clean)
    )
    targets = common.table(
        ["target", "measured", "verdict"],
        [[name, measured, common.verdict(passed)] for name, measured, passed in checks],
    )
    where = (
        "emulator pinned to one core, every client to the other"
        if pinned
        else "NOT pinned (fewer than 2 cores)"
    )
    text = (
        f"Medians of interleaved rounds; {where}; MB = 10^6 bytes; the operator's and the loops' "
        f"times are measured inside a warmed-up client process, curl's around its process. "
        f"Measured {common.stamp()} on {common.machine_line()}.\n\n"
        + "\n\n".join(sections)
        + f"\n\n{targets}\n\nSHA-256 alone, over bytes already in memory, costs {hash_s_per_gib:.2f} CPU s "
        "per GiB on the client's core: the least a verified download adds to a plain loop. "
        f"Fixed costs, from a {_size_label(fixed['bytes'])} output (median of {fixed['rounds']} "
        f"alternating rounds): the operator {fixed['ms']['operator']:.0f} ms "
        f"({fixed['cpu_ms']['operator']:.0f} ms CPU), the loop with SHA-256 and fsync "
        f"{fixed['ms']['loop_verified']:.0f} ms ({fixed['cpu_ms']['loop_verified']:.0f} ms CPU). Every "
        f"new httpx client builds an SSL context (it loads the CA bundle), even for http URLs: "
        f"{fixed['ssl_context_cpu_ms']:.0f} ms of CPU here; the loop builds one client (and its context) per "
        "run; the operator's two clients share one context per process (`runcomfy/clients.tls_context`), "
        "built before these rounds."
    )
    return text, all(passed for _, _, passed in checks)


def main() -> None:
    global CHECK_OVERHEAD_SIZE, CHECK_EXTRA_PAIRS, CHECK_PROBES
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=DEFAULT_SIZES, help="output sizes in bytes")
    parser.add_argument(
        "--rounds", type=int, help="rounds per size (default: 11 up to 256 MB, 3 above, where runs are long)"
    )
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--smoke", action="store_true", help="one round of a small output, every method; writes nothing"
    )
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.rounds, args.no_write = [SMOKE_BYTES], 1, True
        # The check's extra pairs and probes run at the smoke size too, once each.
        CHECK_OVERHEAD_SIZE, CHECK_EXTRA_PAIRS, CHECK_PROBES = SMOKE_BYTES, 1, 1
    if shutil.which("curl") is None and "curl" in args.methods:
        sys.exit("curl is not installed: apt-get install -y curl")

    from airflow_provider_dreamina.emulator import run_emulator

    # The hook's info lines would land among the tables on stdout.
    logging.getLogger("airflow_provider_dreamina").setLevel(logging.WARNING)
    results = []
    workdir = Path(tempfile.mkdtemp(prefix="dreamina-download-bench-"))
    try:
        with run_emulator() as emulator:
            cores = _pin(emulator.process.pid)
            env = {**os.environ, "AIRFLOW_CONN_DREAMINA_DEFAULT": emulator.connection_json()}
            env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(common.ROOT), str(common.ROOT / "benchmarks"), env.get("PYTHONPATH")])
            )
            os.environ["AIRFLOW_CONN_DREAMINA_DEFAULT"] = env["AIRFLOW_CONN_DREAMINA_DEFAULT"]
            setup = _Setup(emulator, env, workdir, cores[1] if cores else None)
            common.log("download: fixed costs, from a small output")
            fixed = _fixed_costs(setup, 1 if args.smoke else FIXED_COST_ROUNDS)
            for size in args.sizes:
                rounds = args.rounds or (11 if size <= 256 * 10**6 else 3)
                results.append(_measure(setup, size, rounds, list(args.methods)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for result in results:
        for method, runs in result["runs"].items():
            seconds = ", ".join(f"{s:.2f}" for s in runs["seconds"])
            cpu = ", ".join(f"{s:.2f}" for s in runs["cpu"])
            common.log(f"download: {_size_label(result['size_bytes'])} {method}: s {seconds}; CPU {cpu}")
    hash_s_per_gib = _hash_seconds_per_gib()
    text, passed = _report(results, fixed, cores is not None, hash_s_per_gib)
    print("## Download\n\n" + text + "\n")
    if not args.no_write:
        common.update_section("download", text)
        summary = {
            "pinned": cores is not None,
            "all_targets_met": passed,
            "sha256_cpu_s_per_gib": hash_s_per_gib,
            "fixed_costs": fixed,
        }
        common.save_results("download", {**summary, "results": results})


if __name__ == "__main__":
    main()
