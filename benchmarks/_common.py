"""Helpers shared by the benchmark scripts: machine facts, tables, BENCHMARKS.md sections, RSS.

Every script prints its table and, unless told not to, writes it (with the raw figures as JSON in
``benchmarks/results/``) into its own marked section of BENCHMARKS.md, so the file always holds the
numbers of the last complete run.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import os
import platform
import re
import resource
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
RESULTS_DIR = ROOT / "benchmarks" / "results"
MODEL_PATH = "/v1/models/bytedance/dreamina-3-0/pro/image-to-video"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# -- machine ----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    from importlib.metadata import version

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = os.sysconf("SC_PHYS_PAGES") * PAGE_SIZE / 2**30
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(ram_gib, 1),
        "python": platform.python_version(),
        "airflow": version("apache-airflow"),
        "httpx": version("httpx"),
        "pydantic": version("pydantic"),
        "kernel": platform.release(),
    }


def machine_line(info: dict[str, Any] | None = None) -> str:
    info = info or machine()
    return (
        f"{info['nproc']} cores ({info['cpu'] or 'unknown CPU'}), {info['ram_gib']} GiB RAM, "
        f"Python {info['python']}, Airflow {info['airflow']}, httpx {info['httpx']}, "
        f"pydantic {info['pydantic']}, Linux {info['kernel']}"
    )


# -- memory and CPU ---------------------------------------------------------------------------


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib(pid: int | str = "self") -> float:
    fields = Path(f"/proc/{pid}/statm").read_text().split()
    return int(fields[1]) * PAGE_SIZE / 2**20


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of another process (from /proc)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces: fields start after its closing parenthesis.
    fields = text[text.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def reset_peak_rss() -> None:
    """Reset this process's peak RSS (Linux >= 4.0), so a later peak covers only what follows."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_hwm_mib(pid: int | str = "self") -> float:
    """VmHWM: the peak RSS since the process started or since :func:`reset_peak_rss`."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- statistics -------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


# -- inputs -----------------------------------------------------------------------------------


def png_data_uri(width: int = 640, height: int = 480) -> str:
    """A small valid input image as a data: URI, so submissions need no image fetch."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (width, height), 128).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# -- tables and BENCHMARKS.md -----------------------------------------------------------------


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if value and abs(value) < 10 ** (-digits):
            return f"{value:.{digits}g}"
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; cells are formatted with :func:`fmt` unless already strings."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(cell if isinstance(cell, str) else fmt(cell) for cell in row) + " |")
    return "\n".join(lines)


def verdict(passed: bool | None) -> str:
    if passed is None:
        return "n/a"
    return "**pass**" if passed else "**MISS**"


def update_section(name: str, text: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace what lies between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    document = path.read_text() if path.exists() else ""
    block = f"{start}\n{text.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(document):
        document = pattern.sub(lambda _match: block, document)
    else:
        document = document.rstrip() + "\n\n" + block + "\n"
    path.write_text(document)


def save_results(name: str, results: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    stamped = {
        "benchmark": name,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        **results,
    }
    path.write_text(json.dumps(stamped, indent=2, default=str) + "\n")
    return path


def stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def log(message: str) -> None:
    """Progress lines go to stderr, so stdout holds only the tables."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
