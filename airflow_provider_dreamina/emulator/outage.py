"""RunComfy down for a while: which phase of an outage is on, as a plain function of the time.

An outage is a list of phases that follow each other from the moment it is asked for. During a
phase every endpoint of RunComfy's (submit, status, result, cancel, the model entry, the balance
and output downloads) fails the same way:

* ``503``: an answer ``503`` with RunComfy's error body (``error_code`` 500001), as a load balancer
  in front of a dead service gives;
* ``reset``: the request is read, then the connection is reset (TCP RST) without an answer;
* ``refused``: the emulator closes its listening socket, so the kernel refuses every new
  connection (``ECONNREFUSED``: a client knows the request was never sent), and it closes every
  open connection once the answer in progress on it (if any) is sent. The control plane shares
  the port, so it is out of reach too until the phase ends; the emulator listens again by itself.

The I/O (answers, the listening socket) is in ``server``; this module only keeps time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airflow_provider_dreamina.emulator.settings import OutageKind, OutageRequest


@dataclass(frozen=True)
class ScheduledPhase:
    kind: OutageKind
    starts_at: float
    ends_at: float


@dataclass(frozen=True)
class Outage:
    """Phases at epoch times, one after the other."""

    phases: tuple[ScheduledPhase, ...]

    @classmethod
    def starting(cls, request: OutageRequest, now: float) -> Outage:
        phases, start = [], now
        for phase in request.phases:
            phases.append(ScheduledPhase(phase.kind, start, start + phase.seconds))
            start += phase.seconds
        return cls(tuple(phases))

    @property
    def ends_at(self) -> float:
        return self.phases[-1].ends_at

    def kind_at(self, now: float) -> OutageKind | None:
        """How RunComfy fails at ``now``; None before and after the outage."""
        for phase in self.phases:
            if phase.starts_at <= now < phase.ends_at:
                return phase.kind
        return None

    def describe(self, now: float) -> dict[str, Any]:
        """What `GET /_emulator/outage` reports: epoch times, and the phase on now (None when over)."""
        return {
            "started_at": self.phases[0].starts_at,
            "ends_at": self.ends_at,
            "kind": self.kind_at(now),
            "phases": [
                {"kind": phase.kind, "starts_at": phase.starts_at, "ends_at": phase.ends_at}
                for phase in self.phases
            ],
        }
