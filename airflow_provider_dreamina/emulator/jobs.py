"""The emulator's state: jobs, scripted behaviours, injected faults and counters.

Job states are derived from timestamps when asked, so thousands of jobs cost no tasks or timers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pydantic import JsonValue

from airflow_provider_dreamina.defaults import FRAMES_PER_SECOND
from airflow_provider_dreamina.emulator.media import (
    RenderedFile,
    ServedVideo,
    VideoFile,
    build_video,
    output_dimensions,
)
from airflow_provider_dreamina.emulator.outage import Outage
from airflow_provider_dreamina.emulator.render import RenderCache, RenderRequest
from airflow_provider_dreamina.emulator.settings import (
    EmulatorConfig,
    Endpoint,
    FaultSpec,
    JobScript,
    OutageKind,
    OutageRequest,
    ScriptRequest,
)
from airflow_provider_dreamina.emulator.validation import SubmittedInput

# Dreamina renders 24 frames per second; a price per second is charged per frames / 24.
JobState = Literal["in_queue", "in_progress", "succeeded", "failed", "cancelled"]

# The status endpoint says `completed` where the result endpoint says `succeeded`.
STATUS_WORD: dict[JobState, str] = {
    "in_queue": "in_queue",
    "in_progress": "in_progress",
    "succeeded": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
}
DEFAULT_FAILURE: JsonValue = {"type": "generation_failed", "message": "The video generation failed."}
PER_REQUEST_ENDPOINTS: tuple[Endpoint, ...] = ("status", "result", "cancel", "download")
FINISHED: frozenset[JobState] = frozenset({"succeeded", "failed", "cancelled"})


@dataclass
class Job:
    """One accepted submission; `started_at` and `finished_at` are scheduled when it is created."""

    request_id: str
    model_id: str
    sequence: int
    submit_count: int
    input: SubmittedInput
    script: JobScript
    created_at: float
    started_at: float
    finished_at: float
    # None: rendered from the input image; a size: a synthetic MP4 of that size.
    output_bytes: int | None
    output_long_side: int
    # The submitted seed, or the one drawn for it when the submission asked for a random one (-1).
    render_seed: int
    # What the job costs when it succeeds; failed and cancelled jobs cost nothing.
    cost_usd: float
    cancelled_at: float | None = None
    calls: Counter[str] = field(default_factory=Counter)

    def state(self, now: float) -> JobState:
        if self.cancelled_at is not None:
            return "cancelled"
        if now < self.started_at:
            return "in_queue"
        if now < self.finished_at:
            return "in_progress"
        return self.script.outcome

    def status_word(self, now: float) -> str:
        """The state as the status endpoint words it, after the job's scripted renames."""
        word = STATUS_WORD[self.state(now)]
        return self.script.status_words.get(word, word)

    def result_word(self, now: float) -> str:
        """The state as the result endpoint words it, after the job's scripted renames."""
        word = self.state(now)
        return self.script.status_words.get(word, word)

    def finished_time(self, now: float) -> float | None:
        state = self.state(now)
        if state == "cancelled":
            return self.cancelled_at
        return self.finished_at if state in FINISHED else None

    def charged(self, now: float) -> bool:
        return self.state(now) == "succeeded"

    def in_flight(self, now: float) -> bool:
        return self.state(now) in ("in_queue", "in_progress")

    @property
    def output_names(self) -> list[str]:
        if self.script.outputs == 1:
            return ["output.mp4"]
        return [f"output-{index}.mp4" for index in range(1, self.script.outputs + 1)]

    @property
    def error(self) -> JsonValue:
        return DEFAULT_FAILURE if self.script.error is None else self.script.error

    def render_request(self, name: str) -> RenderRequest:
        return RenderRequest(
            image=self.input.image,
            prompt=self.input.prompt,
            seed=self.render_seed,
            frames=self.input.frames,
            long_side=self.output_long_side,
            variant=self.output_names.index(name),
        )

    def synthetic_video(self, name: str, total_bytes: int) -> VideoFile:
        width, height = output_dimensions(
            self.input.image_width, self.input.image_height, self.output_long_side
        )
        seed = int.from_bytes(hashlib.sha256(f"{self.request_id}/{name}".encode()).digest()[:8], "big")
        return build_video(
            total_bytes=total_bytes,
            frames=self.input.frames,
            width=width,
            height=height,
            created_at=self.created_at,
            seed=seed,
        )

    def describe(self, now: float) -> dict[str, Any]:
        """What `GET /_emulator/requests` reports: times as epoch floats, never the token."""
        state = self.state(now)
        return {
            "request_id": self.request_id,
            "model_id": self.model_id,
            "state": state,
            "sequence": self.sequence,
            "submit_count": self.submit_count,
            "created_at": self.created_at,
            "started_at": self.started_at if state not in ("in_queue", "cancelled") else None,
            "finished_at": self.finished_time(now),
            "cancelled_at": self.cancelled_at,
            "input": {
                "prompt": self.input.prompt,
                "seed": self.input.seed,
                "frames": self.input.frames,
                "image_width": self.input.image_width,
                "image_height": self.input.image_height,
            },
            "calls": {endpoint: self.calls[endpoint] for endpoint in PER_REQUEST_ENDPOINTS},
        }


@dataclass
class _ActiveFault:
    spec: FaultSpec
    remaining: int | None


@dataclass
class _PendingScript:
    script: JobScript
    remaining: int


@dataclass
class Counters:
    """What `GET /_emulator/counters` reports (per-request calls live on each job)."""

    submissions: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    connections: int = 0
    bytes_served: int = 0
    faults_injected: int = 0
    cancellations: int = 0
    # Calls answered by an outage phase, by kind ("refused" counts requests on connections that
    # were open when the phase began; the kernel refuses the others unseen).
    outage_answers: Counter[str] = field(default_factory=Counter)
    # Answers being dripped now, and drips that ended because the client hung up.
    answers_dripping: int = 0
    drips_cut_short: int = 0


class Emulator:
    """All mutable state of one emulator process; the HTTP layer is in `server`."""

    def __init__(self, startup: EmulatorConfig) -> None:
        self._startup = startup
        # Outlives `reset`: a render depends only on its input, so tests after a reset reuse it.
        self.renders = RenderCache()
        self.reset()

    def reset(self) -> None:
        """Forget jobs, faults, scripts and counts, and restore the startup configuration."""
        self.config = self._startup.model_copy(deep=True)
        self._random = random.Random(self.config.seed)
        # Apart from `_random`, so drawing seeds leaves the sequence of injected faults unchanged.
        self._seeds = random.Random(self.config.seed)
        self.jobs: dict[str, Job] = {}
        # Jobs that may still be queued, in submission order; finished ones are pruned when seen.
        self._queue: list[Job] = []
        self._faults: list[_ActiveFault] = []
        self._scripts: deque[_PendingScript] = deque()
        self._inputs_seen: Counter[str] = Counter()
        # One copy of each distinct input image, however many jobs were made from it.
        self._images: dict[str, bytes] = {}
        self.counters = Counters()
        # Jobs after this sequence number are paid from the balance as last configured.
        self._balance_since = 0
        self.outage: Outage | None = None

    def configure(self, update: dict[str, JsonValue]) -> EmulatorConfig:
        """Apply a partial configuration update.

        :raises pydantic.ValidationError: for unknown keys or bad values; nothing changes then.
        """
        self.config = EmulatorConfig.model_validate({**self.config.model_dump(), **update})
        if "seed" in update:
            self._random = random.Random(self.config.seed)
            self._seeds = random.Random(self.config.seed)
        if "balance_usd" in update:
            # A balance set now is the balance now: jobs charged before it are not charged again.
            self._balance_since = self.counters.submissions
        return self.config

    def count_call(self, endpoint: Endpoint, request_id: str | None = None) -> None:
        self.counters.calls[endpoint] += 1
        job = self.jobs.get(request_id) if request_id is not None else None
        if job is not None:
            job.calls[endpoint] += 1

    def add_fault(self, spec: FaultSpec) -> None:
        remaining = spec.count if spec.count is not None or spec.rate is not None else 1
        self._faults.append(_ActiveFault(spec, remaining))

    def clear_faults(self) -> None:
        self._faults.clear()

    def faults(self) -> list[dict[str, Any]]:
        return [{**fault.spec.model_dump(), "remaining": fault.remaining} for fault in self._faults]

    def take_fault(self, endpoint: Endpoint) -> FaultSpec | None:
        """The fault this call suffers, if any; counted faults are used up as they fire."""
        for fault in self._faults:
            spec = fault.spec
            if spec.endpoint not in (endpoint, "any"):
                continue
            if spec.rate is not None and self._random.random() >= spec.rate:
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
            self.counters.faults_injected += 1
            return spec
        return None

    def start_outage(self, request: OutageRequest, now: float) -> Outage:
        """RunComfy down from ``now``, phase after phase (replaces any outage still on)."""
        self.outage = Outage.starting(request, now)
        return self.outage

    def end_outage(self) -> None:
        self.outage = None

    def outage_kind(self, now: float) -> OutageKind | None:
        """How every RunComfy endpoint fails at ``now`` (None: it answers)."""
        return None if self.outage is None else self.outage.kind_at(now)

    def add_script(self, request: ScriptRequest) -> None:
        script = JobScript.model_validate(request.model_dump(exclude={"count"}))
        self._scripts.append(_PendingScript(script, request.count))

    def _next_script(self) -> JobScript:
        if not self._scripts:
            return JobScript()
        pending = self._scripts[0]
        pending.remaining -= 1
        if pending.remaining == 0:
            self._scripts.popleft()
        return pending.script

    def price(self, frames: int) -> float:
        """What one generation of ``frames`` frames costs at the configured price."""
        config = self.config
        if config.price_unit == "second":
            return config.price_usd * frames / FRAMES_PER_SECOND
        return config.price_usd

    def balance(self, now: float) -> float | None:
        """The balance as set, lowered by each job since then that has succeeded by ``now``."""
        if self.config.balance_usd is None:
            return None
        spent = math.fsum(job.cost_usd for job in self._paid_from_balance() if job.charged(now))
        return self.config.balance_usd - spent

    def can_afford_submission(self, frames: int, now: float) -> bool:
        """Whether the balance covers this job after the jobs still in flight (None: unlimited)."""
        balance = self.balance(now)
        if balance is None:
            return True
        held = math.fsum(job.cost_usd for job in self._paid_from_balance() if job.in_flight(now))
        return balance - held >= self.price(frames)

    def _paid_from_balance(self) -> list[Job]:
        return [job for job in self.jobs.values() if job.sequence > self._balance_since]

    def create_job(self, model_id: str, submitted: SubmittedInput, now: float) -> Job:
        """Accept a submission: charge it, give it the next scripted behaviour, and queue it."""
        script = self._next_script()
        config = self.config
        queue_seconds = script.queue_seconds if script.queue_seconds is not None else config.queue_seconds
        if script.run_seconds is not None:
            run_seconds = script.run_seconds
        elif config.run_seconds_range is not None:
            run_seconds = self._random.uniform(*config.run_seconds_range)
        else:
            run_seconds = config.run_seconds
        input_key = hashlib.sha256(
            json.dumps(
                [model_id, submitted.prompt, submitted.image_url, submitted.seed, submitted.frames]
            ).encode()
        ).hexdigest()
        self._inputs_seen[input_key] += 1
        self.counters.submissions += 1
        image = self._images.setdefault(hashlib.sha256(submitted.image).hexdigest(), submitted.image)
        render_seed = submitted.seed if submitted.seed != -1 else self._seeds.randrange(2**31)
        job = Job(
            request_id=str(uuid.uuid4()),
            model_id=model_id,
            sequence=self.counters.submissions,
            submit_count=self._inputs_seen[input_key],
            input=dataclasses.replace(submitted, image=image),
            script=script,
            created_at=now,
            started_at=now + queue_seconds,
            finished_at=now + queue_seconds + run_seconds,
            output_bytes=script.output_bytes if script.output_bytes is not None else config.output_bytes,
            output_long_side=config.output_long_side,
            render_seed=render_seed,
            cost_usd=script.cost if script.cost is not None else self.price(submitted.frames),
        )
        self.jobs[job.request_id] = job
        self._queue.append(job)
        return job

    async def output(self, job: Job, name: str) -> ServedVideo:
        """One output of a finished job: rendered (once per distinct input) or synthetic.

        :raises RendererUnavailable: when it must be rendered and PyAV is missing.
        """
        if job.output_bytes is not None:
            return job.synthetic_video(name, job.output_bytes)
        return RenderedFile(await self.renders.get(job.render_request(name)))

    def queue_position(self, job: Job, now: float) -> int:
        """1-based position among jobs still queued, counting only those submitted earlier."""
        self._queue = [queued for queued in self._queue if queued.state(now) == "in_queue"]
        return self._queue.index(job) + 1

    def cancel(self, job: Job, now: float) -> bool:
        """Cancel a queued job (it is never charged); jobs in progress or done cannot be cancelled."""
        state = job.state(now)
        if state == "cancelled":
            return True
        if state != "in_queue":
            return False
        job.cancelled_at = now
        self.counters.cancellations += 1
        return True

    def counters_report(self, now: float) -> dict[str, Any]:
        counters = self.counters
        charged = [job.cost_usd for job in self.jobs.values() if job.charged(now)]
        balance = self.balance(now)
        return {
            "submissions": counters.submissions,
            "calls": {endpoint: counters.calls[endpoint] for endpoint in get_args(Endpoint)},
            "calls_per_request": {
                request_id: {endpoint: job.calls[endpoint] for endpoint in PER_REQUEST_ENDPOINTS}
                for request_id, job in self.jobs.items()
            },
            "connections": counters.connections,
            "bytes_served": counters.bytes_served,
            "faults_injected": counters.faults_injected,
            "cancellations": counters.cancellations,
            "outage_answers": dict(counters.outage_answers),
            "answers_dripping": counters.answers_dripping,
            "drips_cut_short": counters.drips_cut_short,
            # Renders started since the process began: the cache outlives `reset`.
            "renders": self.renders.renders,
            # The money, not only the submissions: every succeeded job since the last reset.
            "generations_charged": len(charged),
            "cost_usd_charged": round(math.fsum(charged), 6),
            "balance_usd": None if balance is None else round(balance, 6),
        }

    def describe_jobs(self, now: float) -> list[dict[str, Any]]:
        return [job.describe(now) for job in self.jobs.values()]
