"""Assertions that a hostile answer was survived within bounded memory and bounded time."""

from __future__ import annotations

import gc
import os
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

#: What one hostile answer may cost: RSS growth and Python allocations at their peak.
MEMORY_LIMIT = 64 * 1024 * 1024
#: Seconds a bounded call may overrun its deadline: scheduling on a loaded machine, one drip.
TIME_MARGIN = 5.0


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Cost:
    seconds: float = 0.0
    peak_allocated: int = 0
    rss_growth: int = 0


@contextmanager
def bounded(deadline: float | None = None, memory: int = MEMORY_LIMIT) -> Iterator[Cost]:
    """Run the block, then assert it stayed within ``memory`` and ``deadline`` plus a margin.

    These are bounds, not speed measurements: the unbounded behaviour they guard against takes
    hundreds of MiB or never ends.
    """
    cost = Cost()
    gc.collect()
    rss_before = rss_bytes()
    tracemalloc.start()
    started = time.monotonic()
    try:
        yield cost
    finally:
        cost.seconds = time.monotonic() - started
        cost.peak_allocated = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        gc.collect()
        cost.rss_growth = rss_bytes() - rss_before
    assert cost.peak_allocated < memory, f"allocated up to {cost.peak_allocated / 2**20:.0f} MiB"
    assert cost.rss_growth < memory, f"RSS grew by {cost.rss_growth / 2**20:.0f} MiB"
    if deadline is not None:
        assert cost.seconds < deadline + TIME_MARGIN, (
            f"took {cost.seconds:.1f} s; the deadline is {deadline} s"
        )


def gzip_bomb_ready() -> None:
    """Compress the hostile server's gzip bomb now, outside the block whose memory is measured."""
    from tests.hostile_server import gzip_bomb

    gzip_bomb()
