"""Run every benchmark in turn (``make bench``), print every table, and record the run in BENCHMARKS.md.

Each benchmark runs as its own process and writes its own section of BENCHMARKS.md; this script then
writes the summary section: the machine, when, and how long each benchmark and the whole run took.

With ``--smoke`` (``make bench-smoke``, run by CI) every benchmark script, the pipeline benchmark
included, runs its tiny ``--smoke`` size instead and nothing is written: a check that each one still
starts and finishes, not a measurement.

    python benchmarks/run_all.py [--only trigger_scale download ...] [--smoke]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import _common as common

# Cheapest first, so a broken setup shows early; the soak, which starts Airflow, last.
BENCHMARKS = ("parse_cost", "download", "video", "trigger_scale", "soak")
BUDGET_SECONDS = 15 * 60
# Outside `make bench` and its budget (it runs for about an hour): `make bench-pipeline`.
SMOKE_ONLY = ("pipeline",)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS + SMOKE_ONLY)
    parser.add_argument("--smoke", action="store_true", help="each script's --smoke size; writes nothing")
    args = parser.parse_args()
    names = args.only or list(BENCHMARKS + SMOKE_ONLY if args.smoke else BENCHMARKS)

    started = time.monotonic()
    durations: dict[str, float] = {}
    failed = []
    for name in names:
        common.log(f"bench: {name}" + (" --smoke" if args.smoke else ""))
        command = [sys.executable, str(common.ROOT / "benchmarks" / f"{name}.py")]
        began = time.monotonic()
        if args.smoke:  # the tables of a tiny run mean nothing: only whether it finished
            completed = subprocess.run([*command, "--smoke"], stdout=subprocess.DEVNULL)
        else:
            completed = subprocess.run(command)
        durations[name] = time.monotonic() - began
        if completed.returncode != 0:
            failed.append(name)
    total = time.monotonic() - started

    rows = [[f"`benchmarks/{name}.py`", f"{seconds:.0f} s"] for name, seconds in durations.items()]
    if args.smoke:
        rows.append(["**total**", f"**{total / 60:.1f} min**"])
        table = common.table(["benchmark --smoke", "wall time"], rows)
        print(f"## Smoke run ({common.stamp()})\n\n{table}\n")
    else:
        rows.append(["**total**", f"**{total / 60:.1f} min** (budget {BUDGET_SECONDS // 60} min)"])
        text = f"Last `make bench`: {common.stamp()} on {common.machine_line()}.\n\n" + common.table(
            ["benchmark", "wall time"], rows
        )
        print("## Run\n\n" + text + "\n")
        if names == list(BENCHMARKS) and not failed:
            common.update_section("summary", text)
    if failed:
        sys.exit(f"benchmarks that failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
