"""Download: an emulator output saved by DreaminaDownloadOperator, beside ``curl -o`` of the same URL.

For each size, one emulator job produces an output of that many bytes. Then, in rounds that each
start with another method: ``curl -sS -o FILE URL``; curl followed by an fsync of its file (curl
does not fsync, the operator does before it renames); and a child process running
``DreaminaDownloadOperator.execute()`` (result lookup, streaming, SHA-256, temporary file, fsync,
rename, manifest) into a local directory. The child measures its own wall time and peak RSS growth
(VmHWM, reset just before ``execute``, minus the RSS at that point), after initializing Airflow's
hook-lineage collector, which loads plugins on first use once per process. Medians of the rounds
are reported; every file's SHA-256 must be the same, and each file is deleted once checked.

    python benchmarks/download.py                       # 100 MB and 1 GiB
    python benchmarks/download.py --sizes 2147483648 --repeat 1 --no-write
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as common

MIB = 2**20
DEFAULT_SIZES = [100 * 10**6, 2**30]
RSS_TARGET_MIB = 64
THROUGHPUT_TARGET = 0.8

CHILD = """
import json, sys, time
sys.path.insert(0, {benchmarks!r})
import _common as common
from airflow_provider_dreamina.operators.dreamina import DreaminaDownloadOperator
from airflow.sdk.execution_time.context import OutletEventAccessors
from airflow.sdk.lineage import get_hook_lineage_collector

# Airflow loads plugins and provider asset factories when the hook-lineage collector is first
# used (about 0.5 s and 15 MiB here, once per process): not part of any download, so done first.
get_hook_lineage_collector()

operator = DreaminaDownloadOperator(
    task_id="download", request_id={request_id!r}, destination={destination!r}
)
context = {{"outlet_events": OutletEventAccessors()}}
rss_before = common.current_rss_mib()
common.reset_peak_rss()
started, cpu_started = time.perf_counter(), time.process_time()
uris = operator.execute(context)
seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
peak = common.peak_rss_hwm_mib()
answer = {{"seconds": seconds, "cpu": cpu, "rss_before": rss_before, "rss_peak": peak, "uris": uris}}
print(json.dumps(answer))
"""


def _submit_finished(emulator: Any, size: int) -> tuple[str, str]:
    """A request that finished at once with an output of ``size`` bytes: (request id, output URL)."""
    from airflow_provider_dreamina.hooks.dreamina import DreaminaHook
    from airflow_provider_dreamina.models import ImageToVideoInput

    # The hook's info lines would land among the tables on stdout.
    logging.getLogger("airflow_provider_dreamina").setLevel(logging.WARNING)

    emulator.script_jobs(queue_seconds=0, run_seconds=0, output_bytes=size)
    with DreaminaHook() as hook:
        request = ImageToVideoInput(prompt="benchmark download", image_urls=[common.png_data_uri()])
        request_id = hook.submit(request).request_id
        url = hook.get_result(request_id).output_urls[0]
    return request_id, url


def _curl(url: str, target: Path, *, fsync: bool) -> float:
    started = time.perf_counter()
    subprocess.run(["curl", "-sS", "--fail", "--noproxy", "*", "-o", str(target), url], check=True)
    if fsync:
        descriptor = os.open(target, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    return time.perf_counter() - started


def _provider(request_id: str, destination: Path, env: dict[str, str]) -> dict[str, Any]:
    code = CHILD.format(
        benchmarks=str(common.ROOT / "benchmarks"), request_id=request_id, destination=str(destination)
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=common.ROOT
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the download child failed:\n{completed.stderr[-4000:]}")
    answer: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return answer


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def _drop_file(path: Path) -> None:
    path.unlink(missing_ok=True)


def _measure(emulator: Any, size: int, repeat: int, workdir: Path, env: dict[str, str]) -> dict[str, Any]:
    request_id, url = _submit_finished(emulator, size)
    times: dict[str, list[float]] = {"curl": [], "curl + fsync": [], "operator": []}
    provider_runs: list[dict[str, Any]] = []
    expected: str | None = None
    matches, leftovers, size_on_disk = True, [], 0
    curl_file = workdir / "curl.mp4"
    methods = list(times)
    for attempt in range(repeat):
        common.log(f"download: {_size_label(size)}, round {attempt + 1} of {repeat}")
        # Each round starts with another method; every file is deleted once checked, so the page
        # cache holds no more than one output at a time.
        for method in methods[attempt % 3 :] + methods[: attempt % 3]:
            if method == "operator":
                destination = workdir / f"operator-{attempt}"
                run = _provider(request_id, destination, env)
                provider_runs.append(run)
                times[method].append(run["seconds"])
                stored = Path(run["uris"][0].removeprefix("file://"))
                size_on_disk = stored.stat().st_size
                digest = _sha256(stored)
                expected = expected or digest
                matches = matches and digest == expected
                leftovers += [path.name for path in destination.iterdir() if ".partial-" in path.name]
                shutil.rmtree(destination)
            else:
                times[method].append(_curl(url, curl_file, fsync=method == "curl + fsync"))
                digest = _sha256(curl_file)
                expected = expected or digest
                matches = matches and digest == expected
                _drop_file(curl_file)
    curl_s, synced_s = common.median(times["curl"]), common.median(times["curl + fsync"])
    provider_s = common.median(times["operator"])
    return {
        "size_bytes": size,
        "size_on_disk": size_on_disk,
        "curl_seconds": times["curl"],
        "curl_fsync_seconds": times["curl + fsync"],
        "provider_seconds": times["operator"],
        "provider_cpu_seconds": [run["cpu"] for run in provider_runs],
        "curl_mb_s": size / curl_s / 1e6,
        "curl_fsync_mb_s": size / synced_s / 1e6,
        "provider_mb_s": size / provider_s / 1e6,
        "ratio": curl_s / provider_s,
        "ratio_fsync": synced_s / provider_s,
        "rss_before_mib": min(run["rss_before"] for run in provider_runs),
        "rss_growth_mib": max(run["rss_peak"] - run["rss_before"] for run in provider_runs),
        "sha256_matches": matches,
        "partial_files_left": leftovers,
    }


def _hash_speed(total: int = 2**30) -> float:
    """MB/s of SHA-256 over bytes already in memory: the floor any verified download pays on this CPU."""
    block = os.urandom(MIB)
    digest = hashlib.sha256()
    started = time.perf_counter()
    for _ in range(total // MIB):
        digest.update(block)
    return total / (time.perf_counter() - started) / 1e6


def _size_label(size: int) -> str:
    return f"{size / 10**6:,.0f} MB" if size % 10**6 == 0 else f"{size / MIB:,.0f} MiB"


def _report(results: list[dict[str, Any]], repeat: int, hash_mb_s: float) -> tuple[str, bool]:
    rows, checks = [], []
    for result in results:
        size = _size_label(result["size_bytes"])
        rows.append(
            [
                size,
                result["curl_mb_s"],
                result["curl_fsync_mb_s"],
                result["provider_mb_s"],
                f"{result['ratio']:.2f}",
                f"{result['ratio_fsync']:.2f}",
                result["rss_growth_mib"],
                "yes" if result["sha256_matches"] else "NO",
                str(len(result["partial_files_left"])),
            ]
        )
        checks += [
            (
                f"{size}: throughput ≥ {THROUGHPUT_TARGET}x curl",
                f"{result['ratio']:.2f}x",
                result["ratio"] >= THROUGHPUT_TARGET,
            ),
            (
                f"{size}: RSS growth < {RSS_TARGET_MIB} MiB",
                f"{result['rss_growth_mib']:.1f} MiB",
                result["rss_growth_mib"] < RSS_TARGET_MIB,
            ),
        ]
    growths = [result["rss_growth_mib"] for result in results]
    if len(results) > 1:
        spread = max(growths) - min(growths)
        checks.append(
            (
                "RSS growth independent of file size",
                f"{min(growths):.1f}-{max(growths):.1f} MiB across sizes",
                spread < 16,
            )
        )
    checks.append(
        (
            "stored files identical to curl's, no partial files left",
            "yes" if all(r["sha256_matches"] and not r["partial_files_left"] for r in results) else "NO",
            all(r["sha256_matches"] and not r["partial_files_left"] for r in results),
        )
    )
    figures = common.table(
        [
            "output",
            "curl MB/s",
            "curl + fsync MB/s",
            "operator MB/s",
            "operator / curl",
            "operator / (curl + fsync)",
            "operator RSS growth MiB",
            "SHA-256 = curl's",
            "partial files left",
        ],
        rows,
    )
    targets = common.table(
        ["target", "measured", "verdict"],
        [[name, measured, common.verdict(passed)] for name, measured, passed in checks],
    )
    largest = max(results, key=lambda result: result["size_bytes"])
    context = (
        f"For scale: SHA-256 alone, over bytes already in memory, runs at {hash_mb_s:,.0f} MB/s on "
        f"this CPU, so hashing {_size_label(largest['size_bytes'])} takes "
        f"{largest['size_bytes'] / hash_mb_s / 1e6:.2f} s where curl needs "
        f"{common.median(largest['curl_seconds']):.2f} s for the whole transfer."
    )
    text = (
        f"Median of {repeat} interleaved rounds per size; MB = 10^6 bytes. Measured {common.stamp()}.\n\n"
        f"{figures}\n\n{targets}\n\n{context}"
    )
    return text, all(passed for _, _, passed in checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=DEFAULT_SIZES, help="output sizes in bytes")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        sys.exit("curl is not installed: apt-get install -y curl")

    from airflow_provider_dreamina.emulator import run_emulator

    results = []
    workdir = Path(tempfile.mkdtemp(prefix="dreamina-download-bench-"))
    try:
        with run_emulator() as emulator:
            env = {**os.environ, "AIRFLOW_CONN_DREAMINA_DEFAULT": emulator.connection_json()}
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(common.ROOT), env.get("PYTHONPATH")]))
            os.environ["AIRFLOW_CONN_DREAMINA_DEFAULT"] = env["AIRFLOW_CONN_DREAMINA_DEFAULT"]
            for size in args.sizes:
                results.append(_measure(emulator, size, args.repeat, workdir, env))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for result in results:
        common.log(
            f"download: {result['size_bytes']:,} bytes: curl {result['curl_seconds']}, "
            f"operator {result['provider_seconds']} (CPU {result['provider_cpu_seconds']})"
        )
    hash_mb_s = _hash_speed()
    text, passed = _report(results, args.repeat, hash_mb_s)
    print("## Download\n\n" + text + "\n")
    if not args.no_write:
        common.update_section("download", text)
        summary = {"repeat": args.repeat, "sha256_mb_s": hash_mb_s, "all_targets_met": passed}
        common.save_results("download", {**summary, "results": results})


if __name__ == "__main__":
    main()
