"""Run every benchmark in turn (``make bench``), print every table, and record the run in BENCHMARKS.md.

Each benchmark runs as its own process and writes its own section of BENCHMARKS.md; this script then
writes the summary section: the machine, when, and how long each benchmark and the whole run took.

    python benchmarks/run_all.py [--only trigger_scale download ...]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    args = parser.parse_args()

    started = time.monotonic()
    durations: dict[str, float] = {}
    failed = []
    for name in args.only:
        common.log(f"bench: {name}")
        began = time.monotonic()
        completed = subprocess.run([sys.executable, str(common.ROOT / "benchmarks" / f"{name}.py")])
        durations[name] = time.monotonic() - began
        if completed.returncode != 0:
            failed.append(name)
    total = time.monotonic() - started

    rows = [[f"`benchmarks/{name}.py`", f"{seconds:.0f} s"] for name, seconds in durations.items()]
    rows.append(["**total**", f"**{total / 60:.1f} min** (budget {BUDGET_SECONDS // 60} min)"])
    text = f"Last `make bench`: {common.stamp()} on {common.machine_line()}.\n\n" + common.table(
        ["benchmark", "wall time"], rows
    )
    print("## Run\n\n" + text + "\n")
    if args.only == list(BENCHMARKS) and not failed:
        common.update_section("summary", text)
    if failed:
        sys.exit(f"benchmarks that failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
