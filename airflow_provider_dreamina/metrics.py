"""Metrics: what the provider counts and times, under ``dreamina.``, through Airflow's own stats.

Every name is here and only here (``docs/metrics.rst`` lists them), and so is every emission, so a
dashboard built on them has one place to check. They go wherever Airflow sends its own metrics
(``[metrics] statsd_on``, ``statsd_datadog_enabled`` or ``otel_on``), from whichever process
follows the request: a worker, or the triggerer for a deferred wait. StatsD's types fit them:
counters for how often and how much, timers (milliseconds) for how long; the cost is a counter of
micro-dollars, since StatsD counters are whole numbers and summing them must stay exact.

Emitting never fails or slows a task: StatsD is a UDP datagram, and any error here is logged at
debug level and dropped. Airflow's ``Stats`` is imported at the first emission, never while a DAG
file is parsed.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any, Literal

log = logging.getLogger(__name__)

PREFIX = "dreamina"

#: How a task's decision to pay ended (``submission.reattach``): ``succeeded`` (RunComfy accepted a
#: new request, and its id was recorded), ``reattached`` (an earlier request is followed instead),
#: ``refused`` (nothing was paid: a check or RunComfy refused it), ``uncertain`` (the submit may
#: have been paid but its answer was lost) or ``orphaned`` (a paid submit whose request id is not
#: recorded: found from an earlier try, or not recordable now).
SubmitOutcome = Literal["succeeded", "reattached", "refused", "uncertain", "orphaned"]
SUBMIT = PREFIX + ".submit.{outcome}"
#: How a followed request ended, counted when a wait sees it end: succeeded, failed or cancelled.
REQUEST_ENDED = PREFIX + ".request.{state}"
#: Timer: how long a wait saw the request queued (from its first poll that saw it queued to the
#: first that saw it running or ended); as fine as the poll interval.
QUEUE_DURATION = PREFIX + ".request.queue_duration"
#: Timer: RunComfy's own ``created_at`` to ``finished_at`` of an ended request.
GENERATION_DURATION = PREFIX + ".request.generation_duration"
#: Counter: the cost RunComfy reported for an ended request, in millionths of a US dollar.
COST_MICRO_USD = PREFIX + ".request.cost_micro_usd"
#: Counter: a failed poll while waiting, by the error's ``code`` (``rate_limited``, ``server``,
#: ``connection``, ...), and a wait that gave up (``transient_wait``, ``timeout``).
WAIT_ERROR = PREFIX + ".wait.error.{code}"
#: Counter and timer of each output transferred (not of one kept by ``if_exists="skip"``).
DOWNLOAD_BYTES = PREFIX + ".download.bytes"
DOWNLOAD_DURATION = PREFIX + ".download.duration"
#: Counter: an output refused by the video check (``DreaminaInvalidVideoError``).
VIDEO_INVALID = PREFIX + ".video.invalid"

MICRO_USD_PER_USD = 1_000_000
_UNSAFE = re.compile(r"[^a-z0-9_]")


def submitted(outcome: SubmitOutcome) -> None:
    """Count one submit decision by its outcome."""
    _emit("incr", SUBMIT.format(outcome=outcome))


def request_ended(state: str, generation_seconds: float | None, cost_usd: float | None) -> None:
    """Count a request a wait saw end, with its generation time and its cost when reported."""
    _emit("incr", REQUEST_ENDED.format(state=_part(state)))
    if generation_seconds is not None and generation_seconds >= 0:
        _emit("timing", GENERATION_DURATION, timedelta(seconds=generation_seconds))
    if cost_usd is not None and cost_usd > 0:
        _emit("incr", COST_MICRO_USD, round(cost_usd * MICRO_USD_PER_USD))


def queued_for(seconds: float) -> None:
    """Time a request spent queued, as a wait saw it."""
    _emit("timing", QUEUE_DURATION, timedelta(seconds=max(seconds, 0.0)))


def wait_error(code: str) -> None:
    """Count a failed poll, or a wait that gave up, by its error code."""
    _emit("incr", WAIT_ERROR.format(code=_part(code)))


def downloaded(size_bytes: int, seconds: float) -> None:
    """Count the bytes of one transferred output and time its transfer."""
    _emit("incr", DOWNLOAD_BYTES, size_bytes)
    _emit("timing", DOWNLOAD_DURATION, timedelta(seconds=max(seconds, 0.0)))


def invalid_video() -> None:
    """Count an output the video check refused."""
    _emit("incr", VIDEO_INVALID)


def _part(word: str) -> str:
    """A word from an error or a state as one safe segment of a metric name."""
    return _UNSAFE.sub("_", str(word).lower())[:64] or "unknown"


def _stats() -> Any:
    try:  # Airflow 3.3: the Task SDK's stats, set up by the task runner
        from airflow.sdk.observability.stats import Stats
    except ImportError:  # Airflow 3.1 and 3.2
        from airflow.stats import Stats
    return Stats


def _emit(kind: str, name: str, *value: Any) -> None:
    try:
        getattr(_stats(), kind)(name, *value)
    except Exception as error:  # a metric is never worth a failed task
        log.debug("Could not emit metric %s: %s", name, error)
