"""What the emulator can be told: its configuration, injected faults and scripted jobs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

DEFAULT_TOKEN = "emulator-token"
MODEL_ID = "bytedance/dreamina-3-0/pro/image-to-video"

# The documented words; `status_words` in a job script maps these to other words.
STATUS_WORDS = ("in_queue", "in_progress", "completed", "failed", "cancelled")
RESULT_WORDS = ("in_queue", "in_progress", "succeeded", "failed", "cancelled")

Endpoint = Literal["submit", "status", "result", "cancel", "download", "model", "balance"]
FaultEndpoint = Literal["submit", "status", "result", "cancel", "download", "model", "balance", "any"]
PriceUnit = Literal["output", "second"]
FaultKind = Literal[
    "429",
    "500",
    "502",
    "503",
    "reset",
    "reset_after_send",
    "slow",
    "hold",
    "error_200",
    "truncate",
    "expired",
    "drip",
]
# RunComfy down: every endpoint answers 503, or resets each connection once it has read the
# request, or refuses connections (the emulator closes its listening socket; see ``outage``).
OutageKind = Literal["503", "reset", "refused"]
OutputKey = Literal["video", "videos", "image", "images"]
MessageField = Literal["error_message", "message", "error", "detail"]

DOWNLOAD_ONLY_FAULTS = frozenset({"truncate", "expired"})
# Small enough that a 241-frame render takes a couple of seconds on 2 cores.
DEFAULT_LONG_SIDE = 640
# `hold` delays an answer after the work is done (a submit is created and paid first): a crash
# during the hold is a crash after the POST and before its answer is recorded.
API_ONLY_FAULTS = frozenset({"hold"})
DEFAULT_HOLD_SECONDS = 60.0
# `drip` sends an answer one byte at a time, this many seconds apart unless the fault says `delay`.
DEFAULT_DRIP_SECONDS = 0.1
# The longest outage the control plane accepts (a day): a typo must not take the emulator away for ever.
MAX_OUTAGE_SECONDS = 86_400.0
# Bigger outputs would overflow the 32-bit per-frame sizes of the generated MP4's sample table.
MAX_OUTPUT_BYTES = 2**38


class EmulatorConfig(BaseModel):
    """Settings that `POST /_emulator/config` may change and `POST /_emulator/reset` restores."""

    model_config = ConfigDict(extra="forbid")

    token: str = Field(DEFAULT_TOKEN, min_length=1)
    forbidden_tokens: list[str] = Field(default_factory=list)
    queue_seconds: float = Field(1.0, ge=0)
    run_seconds: float = Field(2.0, ge=0)
    run_seconds_range: tuple[float, float] | None = None
    # None renders a real H.264 video from the input image; a size serves a synthetic MP4 of exactly
    # that many bytes (a valid index over filler frames, no rendering), for large-output benchmarks.
    output_bytes: int | None = Field(None, ge=0, le=MAX_OUTPUT_BYTES)
    # Long side of every output in pixels; the short side follows the input image's aspect ratio.
    output_long_side: int = Field(DEFAULT_LONG_SIDE, ge=64, le=4096)
    output_url_ttl: float | None = Field(None, gt=0)
    # Throttles every output download, so a test can crash a worker in the middle of one.
    download_bytes_per_second: float | None = Field(None, gt=0)
    extra_fields: bool = False
    message_field: MessageField = "error_message"
    # The balance as last set (None: unlimited and not reported); each succeeded job lowers it.
    balance_usd: float | None = None
    price_usd: float = Field(0.5, ge=0)
    # "second": price_usd per second of video (frames / 24), else per output.
    price_unit: PriceUnit = "output"
    # RunComfy documents none of these three: each can be switched off (answering 404, or no cost).
    offer_model_info: bool = True
    offer_cost: bool = True
    offer_balance: bool = True
    seed: int | None = None

    @field_validator("run_seconds_range")
    @classmethod
    def _ordered_range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not 0 <= value[0] <= value[1]:
            raise ValueError("run_seconds_range must be [low, high] with 0 <= low <= high")
        return value


class FaultSpec(BaseModel):
    """One injected fault: it fires on the next `count` calls, or on a `rate` fraction of calls, or both."""

    model_config = ConfigDict(extra="forbid")

    endpoint: FaultEndpoint
    kind: FaultKind
    count: int | None = Field(None, ge=1)
    rate: float | None = Field(None, gt=0, le=1)
    retry_after: float | str | None = None
    delay: float | None = Field(None, ge=0)

    @field_validator("kind", mode="before")
    @classmethod
    def _status_codes_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value

    @model_validator(mode="after")
    def _download_kinds_on_downloads(self) -> FaultSpec:
        if self.kind in DOWNLOAD_ONLY_FAULTS and self.endpoint != "download":
            raise ValueError(f"fault kind {self.kind!r} applies to the download endpoint only")
        if self.kind in API_ONLY_FAULTS and self.endpoint == "download":
            raise ValueError(f"fault kind {self.kind!r} applies to API endpoints only")
        return self


class OutagePhase(BaseModel):
    """One stretch of an outage: how RunComfy fails, and for how long."""

    model_config = ConfigDict(extra="forbid")

    kind: OutageKind
    seconds: float = Field(gt=0, le=MAX_OUTAGE_SECONDS)

    @field_validator("kind", mode="before")
    @classmethod
    def _status_code_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value


class OutageRequest(BaseModel):
    """Body of `POST /_emulator/outage`: RunComfy down from now on, one phase after the other."""

    model_config = ConfigDict(extra="forbid")

    phases: list[OutagePhase] = Field(min_length=1)

    @model_validator(mode="after")
    def _bounded(self) -> OutageRequest:
        if sum(phase.seconds for phase in self.phases) > MAX_OUTAGE_SECONDS:
            raise ValueError(f"an outage lasts at most {MAX_OUTAGE_SECONDS:.0f} seconds in all")
        return self


class JobScript(BaseModel):
    """How one scripted job behaves; every field left out keeps the emulator's default behaviour."""

    model_config = ConfigDict(extra="forbid")

    outcome: Literal["succeeded", "failed"] = "succeeded"
    # RunComfy does not document the failure body, so both a string and an object are producible.
    error: JsonValue = None
    queue_seconds: float | None = Field(None, ge=0)
    run_seconds: float | None = Field(None, ge=0)
    outputs: int = Field(1, ge=1, le=100)
    output_key: OutputKey = "video"
    output_urls: list[str] | None = Field(None, min_length=1)
    status_words: dict[str, str] = Field(default_factory=dict)
    output_bytes: int | None = Field(None, ge=0, le=MAX_OUTPUT_BYTES)
    cost: float | None = Field(None, ge=0)

    @field_validator("status_words")
    @classmethod
    def _documented_words_only(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(STATUS_WORDS) - set(RESULT_WORDS))
        if unknown:
            raise ValueError(f"status_words maps documented words only; unknown: {', '.join(unknown)}")
        return value

    @model_validator(mode="after")
    def _singular_key_holds_one_url(self) -> JobScript:
        count = len(self.output_urls) if self.output_urls is not None else self.outputs
        if self.output_key in ("video", "image") and count > 1:
            raise ValueError(
                f"output_key {self.output_key!r} holds one URL; use {self.output_key + 's'!r} "
                f"for {count} outputs"
            )
        return self


class ScriptRequest(JobScript):
    """Body of `POST /_emulator/script`: a behaviour for the next `count` submissions."""

    count: int = Field(1, ge=1)
