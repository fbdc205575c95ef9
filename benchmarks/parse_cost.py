"""DAG parse cost: what importing the provider costs a DAG file, in fresh interpreters.

Each sample is a new interpreter that first imports ``airflow.sdk`` and resolves the names every DAG
file uses (the DAG processor has them loaded before it parses a file), then times one of:

* ``provider modules`` - importing the modules a DAG file imports (the provider's operators and
                         sensors modules), with their bytecode cached (as after installing the
                         wheel), and again compiled from source (no ``.pyc``, a fresh checkout);
* ``HITL operators``   - Airflow's own ``airflow.providers.standard.operators.hitl``, the same way;
* ``PythonOperator``   - Airflow's own ``airflow.providers.standard.operators.python``, the same way;
* ``example DAG``      - executing ``example_dags/dreamina_image_to_video.py``;
* ``EmptyOperator DAG`` - executing ``benchmarks/dags/empty_image_to_video.py``, the same DAG (same
                         arguments, params, task ids and dependencies) built from EmptyOperators.

Bytecode of what is imported after ``airflow.sdk`` lives under a prefix in the temp directory,
so the checkout gets no ``__pycache__``. Samples of all kinds are interleaved so that machine noise
spreads over all of them; medians are reported. A ``python -X importtime`` run then shows where
the provider's import time goes.

    python benchmarks/parse_cost.py [--runs 11] [--no-write]
    python benchmarks/parse_cost.py --smoke     # one interpreter per kind; writes nothing
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import _common as common

EXAMPLE_DAG = common.ROOT / "example_dags" / "dreamina_image_to_video.py"
EMPTY_DAG = common.ROOT / "benchmarks" / "dags" / "empty_image_to_video.py"
# What a DAG file imports; the hook, models and trigger load when a task runs.
PROVIDER_MODULES = (
    "airflow_provider_dreamina.operators.dreamina",
    "airflow_provider_dreamina.sensors.dreamina",
)
# Airflow's own modules, measured the same way, for scale.
AIRFLOW_MODULES = {
    "HITL operators": "airflow.providers.standard.operators.hitl",
    "PythonOperator": "airflow.providers.standard.operators.python",
}
TARGET_MS = 20.0
# What airflow.sdk gives a DAG file; it loads these lazily, so they are resolved before timing.
PRELUDE = """
import json, sys, time
t0 = time.perf_counter()
import airflow.sdk
from airflow.sdk import DAG, BaseHook, BaseOperator, BaseSensorOperator, Param
t1 = time.perf_counter()
loaded_before = set(sys.modules)
# Only what is imported from here on reads (and writes) bytecode under this prefix: a fresh prefix
# forces a compile from source, the benchmark's own prefix holds the bytecode of earlier runs.
sys.pycache_prefix = {prefix!r}
sys.dont_write_bytecode = {dont_write!r}
"""
PROBES = {
    # Import statements, not importlib.import_module: -X importtime sees only the former.
    "provider modules": "{imports}",
    "example DAG": (
        "import importlib.util\n"
        "spec = importlib.util.spec_from_file_location('dag_under_test', {path!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "assert module.dag.task_ids\n"
    ),
}
PROBES["EmptyOperator DAG"] = PROBES["example DAG"]
for _kind, _module in AIRFLOW_MODULES.items():
    PROBES[_kind] = f"import {_module}\n"
PROBES["provider modules, no bytecode cache"] = PROBES["provider modules"]
CACHE_PREFIX = Path(tempfile.gettempdir()) / "dreamina-bench-pycache"
SUFFIX = """
t2 = time.perf_counter()
heavy = [
    name for name in ("PIL", "fsspec", "fastapi", "uvicorn", "httpx", "pydantic")
    if name in sys.modules and name not in loaded_before
]
print(json.dumps({"sdk": t1 - t0, "target": t2 - t1, "heavy": heavy}))
"""


def _imports() -> str:
    return "".join(f"import {name}\n" for name in PROVIDER_MODULES)


def _prelude(kind: str) -> str:
    if kind.endswith("no bytecode cache"):
        # Nothing is ever written there (dont_write_bytecode), so it stays empty.
        return PRELUDE.format(prefix=str(CACHE_PREFIX) + "-empty", dont_write=True)
    return PRELUDE.format(prefix=str(CACHE_PREFIX), dont_write=False)


def _probe_code(kind: str) -> str:
    path = str(EXAMPLE_DAG if kind == "example DAG" else EMPTY_DAG)
    body = PROBES[kind].format(imports=_imports(), path=path)
    return _prelude(kind) + body + SUFFIX


def _sample(kind: str) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-c", _probe_code(kind)],
        cwd=common.ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    answer: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return answer


def _import_breakdown() -> list[tuple[str, float, float]]:
    """(module, self ms, cumulative ms) of what the provider modules import beyond airflow.sdk."""
    code = _prelude("provider modules") + "print('--- provider ---', file=sys.stderr, flush=True)\n"
    code += PROBES["provider modules"].format(imports=_imports())
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        cwd=common.ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = completed.stderr.split("--- provider ---", 1)[1].splitlines()
    rows = []
    for line in lines:
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
        rows.append((name, int(own) / 1000, int(cumulative) / 1000))
    return rows


def _grouped(rows: list[tuple[str, float, float]]) -> list[tuple[str, float, int]]:
    """Self time per provider module, and per outside package the provider pulled in."""
    groups: dict[str, list[float]] = defaultdict(list)
    for name, own, _cumulative in rows:
        key = name if name.startswith("airflow_provider_dreamina") else name.split(".")[0] + " (outside)"
        if name.startswith("airflow.") or name == "airflow":
            key = ".".join(name.split(".")[:2]) + " (Airflow, not loaded by airflow.sdk)"
        groups[key].append(own)
    return sorted(((key, sum(times), len(times)) for key, times in groups.items()), key=lambda g: -g[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="fresh interpreters per kind")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="one interpreter per kind; writes nothing")
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.no_write = 1, True

    kinds = [
        "provider modules",
        "provider modules, no bytecode cache",
        *AIRFLOW_MODULES,
        "example DAG",
        "EmptyOperator DAG",
    ]
    samples: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    # Installed from a wheel, the provider has its bytecode: one untimed run of each kind writes it.
    shutil.rmtree(CACHE_PREFIX, ignore_errors=True)
    for kind in kinds:
        _sample(kind)
    for run in range(args.runs):
        common.log(f"parse_cost: round {run + 1} of {args.runs}")
        for kind in kinds:
            samples[kind].append(_sample(kind))
    breakdown = _import_breakdown()

    medians = {kind: 1000 * common.median([s["target"] for s in samples[kind]]) for kind in kinds}
    spread = {
        kind: (
            1000 * common.percentile([s["target"] for s in samples[kind]], 0.1),
            1000 * common.percentile([s["target"] for s in samples[kind]], 0.9),
        )
        for kind in kinds
    }
    sdk_ms = 1000 * common.median([s["sdk"] for kinds_samples in samples.values() for s in kinds_samples])
    heavy = sorted({name for s in samples["example DAG"] for name in s["heavy"]})
    provider_ms = medians["provider modules"]
    extra_ms = medians["example DAG"] - medians["EmptyOperator DAG"]

    labels = {
        "provider modules": "provider's operators + sensors modules over airflow.sdk",
        "HITL operators": "Airflow's HITL operators module, the same way",
        "PythonOperator": "Airflow's PythonOperator module, the same way",
        "provider modules, no bytecode cache": "the same, compiled from source (no .pyc)",
        "example DAG": "example DAG file (`dreamina_image_to_video.py`)",
        "EmptyOperator DAG": "same DAG from EmptyOperators",
    }
    rows: list[list[Any]] = [
        ["`import airflow.sdk` + DAG, BaseOperator, BaseHook, ... (before timing)", sdk_ms, "-"]
    ]
    for kind in kinds:
        rows.append([labels[kind], medians[kind], f"{spread[kind][0]:.1f}-{spread[kind][1]:.1f}"])
    rows.append(["example DAG minus EmptyOperator DAG", extra_ms, "-"])
    figures = common.table(["measured (median of fresh interpreters)", "ms", "p10-p90 ms"], rows)
    targets = common.table(
        ["target", "measured", "verdict"],
        [
            [
                f"operators + sensors modules add < {TARGET_MS:.0f} ms over airflow.sdk",
                f"{provider_ms:.1f} ms",
                common.verdict(provider_ms < TARGET_MS),
            ],
            [
                "the DAG file loads no heavy package airflow.sdk has not (PIL, fsspec, FastAPI, ...)",
                ", ".join(heavy) or "none",
                common.verdict(not heavy),
            ],
        ],
    )
    top = common.table(
        ["where the provider's import time goes (`-X importtime`, one run)", "self ms", "modules"],
        [[name, own, count] for name, own, count in _grouped(breakdown)[:10]],
    )
    text = (
        f"{args.runs} fresh interpreters per kind, interleaved. Measured {common.stamp()}.\n\n"
        f"{figures}\n\n{targets}\n\n{top}"
    )
    print("## DAG parse cost\n\n" + text + "\n")
    if not args.no_write:
        common.update_section("parse_cost", text)
        common.save_results(
            "parse_cost",
            {
                "runs": args.runs,
                "median_ms": medians,
                "sdk_ms": sdk_ms,
                "example_minus_empty_ms": extra_ms,
                "heavy_modules_loaded": heavy,
                "importtime": breakdown,
                "samples": samples,
            },
        )


if __name__ == "__main__":
    main()
