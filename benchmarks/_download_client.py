"""The client side of ``benchmarks/download.py``: one long-lived process that downloads on command.

``download.py`` starts this process pinned to the client's core, so interpreter start-up and imports
are never timed. It reads one JSON command per line on stdin and answers one JSON line on the
original stdout (anything else that prints goes to stderr). Each command runs one method, timed
inside this process from just before the download starts to just after it is complete on disk:

* ``loop``: a plain httpx stream-to-file loop (a new ``httpx.Client``, ``iter_bytes``, ``write``),
  as peers such as RunComfy's own ComfyUI nodes save outputs; no hash, no fsync.
* ``loop_verified``: the same loop, with SHA-256 over every piece, then ``fsync`` and a rename from
  a temporary name: the least any verified download must do.
* ``loop_threaded``: ``loop_verified`` with the hash on a second thread (report only: it pays off
  only where the process has a free core).
* ``operator``: ``DreaminaDownloadOperator(...).execute(context)``: result lookup, stream with SHA-256
  and the video check, temporary file, fsync, rename, manifest, asset event.
* ``operator_unchecked``: the same with the video check switched off (``transfer.claims_video``
  answers False, so no ``VideoInspector`` is fed and no video facts are read): only the check
  differs.
* ``operator_64k``: the same as ``operator`` with httpcore's own 64 KiB reads (diagnostic: what the
  larger reads of ``transfer.READ_SIZE`` bring).
* ``operator_probe``: ``operator`` with the CPU time spent inside the check (``VideoInspector.feed``
  and ``finish``, by ``time.thread_time``) added up and answered as ``check_cpu``.

Each answer holds wall and CPU seconds (``time.process_time``: user and system time of every
thread), the RSS before, and the peak RSS during the download (VmHWM, reset just before it).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

import _common as common
import httpx


def _loop(url: str, target: Path, *, verified: bool, threaded: bool = False) -> str | None:
    """Stream ``url`` into ``target``; with ``verified``, hash, fsync and rename as well."""
    digest = hashlib.sha256() if verified else None
    pieces: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
    hasher = None
    if digest is not None and threaded:

        def hash_pieces() -> None:
            while (piece := pieces.get()) is not None:
                digest.update(piece)  # hashlib releases the GIL for pieces over 2 KiB

        hasher = threading.Thread(target=hash_pieces)
        hasher.start()
    temporary = target.with_name(f".{target.name}.partial") if verified else target
    with httpx.Client(timeout=60, trust_env=False) as client, client.stream("GET", url) as response:
        response.raise_for_status()
        with temporary.open("wb") as handle:
            for piece in response.iter_bytes():
                handle.write(piece)
                if hasher is not None:
                    pieces.put(piece)
                elif digest is not None:
                    digest.update(piece)
            if hasher is not None:
                pieces.put(None)
                hasher.join()
            if verified:
                handle.flush()
                os.fsync(handle.fileno())
    if verified:
        os.replace(temporary, target)
    return digest.hexdigest() if digest is not None else None


class _TaskInstance:
    """What the operator asks of its task instance: somewhere to push the output URL."""

    def xcom_push(self, key: str, value: object) -> None:
        pass


class _Operator:
    """Runs ``DreaminaDownloadOperator.execute`` with the check on or off and reads of either size."""

    #: CPU seconds spent inside the check during the last probed run.
    check_cpu = 0.0

    def __init__(self) -> None:
        from airflow.sdk.lineage import get_hook_lineage_collector

        from airflow_provider_dreamina.outputs import transfer

        # Airflow loads plugins and provider asset factories when the hook-lineage collector is
        # first used (about 0.5 s and 15 MiB, once per task process): no part of a download.
        get_hook_lineage_collector()
        self.transfer = transfer
        self.claims_video = transfer.claims_video
        self.inspector = transfer.VideoInspector
        self.read_size = getattr(transfer, "READ_SIZE", None)
        owner = self

        class TimedInspector(transfer.VideoInspector):  # type: ignore[name-defined,misc]
            def feed(self, chunk: Any) -> None:
                started = time.thread_time()
                try:
                    super().feed(chunk)
                finally:
                    owner.check_cpu += time.thread_time() - started

            def finish(self) -> Any:
                started = time.thread_time()
                try:
                    return super().finish()
                finally:
                    owner.check_cpu += time.thread_time() - started

        self.timed_inspector = TimedInspector

    def run(
        self, request_id: str, destination: Path, *, check: bool, wide_reads: bool, probe: bool = False
    ) -> str:
        from airflow.sdk.execution_time.context import OutletEventAccessors

        from airflow_provider_dreamina.operators.download import DreaminaDownloadOperator

        self.transfer.claims_video = self.claims_video if check else (lambda **_: False)  # type: ignore[assignment]
        self.transfer.VideoInspector = self.timed_inspector if probe else self.inspector  # type: ignore[misc]
        self.check_cpu = 0.0
        if self.read_size is not None:
            self.transfer.READ_SIZE = self.read_size if wide_reads else 0  # type: ignore[attr-defined]
        operator = DreaminaDownloadOperator(
            task_id="download", request_id=request_id, destination=str(destination)
        )
        context = {"outlet_events": OutletEventAccessors(), "ti": _TaskInstance()}
        uris = operator.execute(context)  # type: ignore[arg-type]
        return str(uris[0]).removeprefix("file://")


def main() -> None:
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints (Airflow's, the provider's) must not mix with the answers
    sys.stdout = sys.stderr
    operator: _Operator | None = None
    for line in sys.stdin:
        command: dict[str, Any] = json.loads(line)
        method, url, target = command["method"], command.get("url"), Path(command["target"])
        if method.startswith("operator") and operator is None:
            operator = _Operator()
        rss_before = common.current_rss_mib()
        common.reset_peak_rss()
        started, cpu_started = time.perf_counter(), time.process_time()
        if method == "loop":
            digest = _loop(url, target, verified=False)
            stored = str(target)
        elif method in ("loop_verified", "loop_threaded"):
            digest = _loop(url, target, verified=True, threaded=method == "loop_threaded")
            stored = str(target)
        else:
            assert operator is not None
            stored = operator.run(
                command["request_id"],
                target,
                check=method != "operator_unchecked",
                wide_reads=method != "operator_64k",
                probe=method == "operator_probe",
            )
            digest = None
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        answer = {
            "seconds": seconds,
            "cpu": cpu,
            "rss_before": rss_before,
            "rss_peak": common.peak_rss_hwm_mib(),
            "stored": stored,
            "sha256": digest,
            "check_cpu": operator.check_cpu if method == "operator_probe" and operator else None,
        }
        answers.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
