"""Scenario h's first part, begun before the other scenarios: RunComfy down for five minutes.

The outage lasts five minutes, and scenario h spends them waiting. So that ``make test-distributed``
stays short, the session begins it before its first scenario (``conftest.py``, fixture
``runcomfy_outage``) and the scenarios that run meanwhile are those that neither stop PostgreSQL or
Redis nor depend on scenario h's RunComfy (it has its own emulator, the connection
``dreamina_outage``; the waits hold no worker slot while deferred, and have no retry to take one).
``test_runcomfy_outage.py`` then waits for the rest and
asserts. Run alone, the test begins and ends it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from tests.distributed.chaos import Chaos, patiently, wait_for

WAITS_DAG_ID, SUBMITS_DAG_ID = "dreamina_chaos_outage_waits", "dreamina_chaos_outage_submits"
WAITING_GENERATE, SUBMITTED_GENERATE = "waiting_video.generate", "submitted_video.generate"
RUNNING, SUBMITTED = 10, 5
PHASES = [("503", 100.0), ("reset", 100.0), ("refused", 100.0)]
# The 10 are still rendering when RunComfy goes down, and finish during the outage.
RUN_SECONDS = 90
FOLDER = "runcomfy-outage"


@dataclass
class RunComfyOutage:
    """Ten generations waiting, then the outage; the five submits begin once connections are refused."""

    chaos: Chaos
    running_run_id: str = ""
    submitted_run_id: str = ""
    outage: dict[str, object] = field(default_factory=dict)
    #: Seconds into the refused phase at which the five submits' run was triggered.
    submits_began: float | None = None
    #: Epoch seconds, to compare with the runs' end dates.
    began_epoch: float = 0.0
    _submitter: threading.Thread | None = None
    _problem: BaseException | None = None

    def begin(self) -> None:
        self.began_epoch = time.time()
        emulator = self.chaos.outage_emulator
        emulator.reset()
        emulator.configure(queue_seconds=0.5, output_bytes=5_000_000)
        emulator.script_jobs(count=RUNNING, run_seconds=RUN_SECONDS)
        emulator.script_jobs(count=SUBMITTED, run_seconds=5)
        self.running_run_id, _ = self.chaos.trigger(WAITS_DAG_ID, FOLDER, count=RUNNING)

        def all_waiting() -> bool:
            deferred = self.chaos.states(WAITS_DAG_ID, self.running_run_id, WAITING_GENERATE).count(
                "deferred"
            )
            polled = [calls["status"] for calls in emulator.counters()["calls_per_request"].values()]
            return deferred == RUNNING and len(polled) == RUNNING and min(polled) >= 1

        wait_for(all_waiting, "10 generations deferred and polled", timeout=180, interval=0.5)
        self.outage = emulator.start_outage(PHASES)
        self._submitter = threading.Thread(
            target=self._submit_when_refused, name="runcomfy-outage", daemon=True
        )
        self._submitter.start()

    def _submit_when_refused(self) -> None:
        try:
            refused = float(self.outage["phases"][-1]["starts_at"])  # type: ignore[index]
            time.sleep(max(0.0, refused + 1 - time.time()))
            self.submitted_run_id = patiently(
                lambda: self.chaos.trigger(SUBMITS_DAG_ID, FOLDER, count=SUBMITTED, first_row=RUNNING)[0],
                "the five submits' run to be triggered",
                timeout=120,
            )
            self.submits_began = round(time.time() - refused, 1)
        except BaseException as error:  # reported by finish(), in the test
            self._problem = error

    def wait_until_over(self) -> None:
        """Wait for the outage to end and the emulator to answer."""
        assert self._submitter is not None, "the scenario was not begun"
        time.sleep(max(0.0, float(self.outage["ends_at"]) - time.time()))  # type: ignore[arg-type]
        self._submitter.join(timeout=180)
        if self._problem is not None:
            raise self._problem
        self.chaos.outage_emulator.wait_until_up(timeout=60)
