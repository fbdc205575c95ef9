"""Typed inputs, answers and records of the RunComfy Model API for Dreamina 3.0 Pro image-to-video.

Every rule of the Dreamina schema lives here (the image's own rules in ``images``) and runs
before any network call; every answer model keeps fields it does not know, because RunComfy adds
fields without notice.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import re
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from airflow_provider_dreamina.defaults import DEFAULT_MODEL_ID as DEFAULT_MODEL_ID
from airflow_provider_dreamina.defaults import FRAMES_PER_SECOND as FRAMES_PER_SECOND
from airflow_provider_dreamina.exceptions import DreaminaInvalidInputError
from airflow_provider_dreamina.redaction import shorten, url_without_query

log = logging.getLogger(__name__)


PROMPT_MAX_CHARS = 800
FRAME_COUNTS = (121, 241)

# Answers come from the network: every field that reaches a log line, an XCom or a trigger event
# is bounded here, whatever RunComfy (or anything pretending to be it) sends.
#: What a RunComfy request id may look like; dots are allowed inside an id, but an id of dots
#: alone would walk up the URL path, and a newline would forge log lines.
#: Matched whole (fullmatch: "$" would let a trailing newline through).
REQUEST_ID_PATTERN = re.compile(r"\A(?!\.+\Z)[A-Za-z0-9._:-]{1,200}\Z", re.ASCII)
_REQUEST_ID_RULE = "1 to 200 letters, digits, '-', '_', '.', ':'; not dots alone"
#: Status words, outcomes and similar single words are cut to this many characters.
WORD_MAX_CHARS = 100
#: A failure reason is cut to this many characters.
ERROR_MAX_CHARS = 2000
#: Outputs beyond this many are dropped (Dreamina image-to-video returns one).
MAX_OUTPUTS = 100
#: An output URL longer than this is refused (signed URLs are a few hundred to a few thousand).
OUTPUT_URL_MAX_CHARS = 8192
#: A trigger event keeps fields this provider does not know only while it stays this small.
EVENT_MAX_CHARS = 64 * 1024
_QUEUE_POSITION_MAX = 1_000_000


class RequestState(str, enum.Enum):
    """One normalised state for the several words RunComfy uses on its endpoints."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_STATES

    @classmethod
    def from_word(cls, word: str | None) -> RequestState:
        """Map a status word from either endpoint; an unknown word is not terminal.

        Whoever follows a request logs an unknown word (once per request: see ``polling``).
        """
        return _STATE_WORDS.get((word or "").strip().lower(), cls.UNKNOWN)


_TERMINAL_STATES = frozenset({RequestState.SUCCEEDED, RequestState.FAILED, RequestState.CANCELLED})
# "completed" is success on the status endpoint, "succeeded" on the result endpoint; the other
# in-progress words come from RunComfy's own clients.
_STATE_WORDS = {
    "in_queue": RequestState.QUEUED,
    "queued": RequestState.QUEUED,
    "pending": RequestState.QUEUED,
    "waiting": RequestState.QUEUED,
    "in_progress": RequestState.RUNNING,
    "running": RequestState.RUNNING,
    "starting": RequestState.RUNNING,
    "processing": RequestState.RUNNING,
    "completed": RequestState.SUCCEEDED,
    "succeeded": RequestState.SUCCEEDED,
    "success": RequestState.SUCCEEDED,
    "failed": RequestState.FAILED,
    "error": RequestState.FAILED,
    "cancelled": RequestState.CANCELLED,
    "canceled": RequestState.CANCELLED,
}


def is_request_id(value: object) -> bool:
    """Whether ``value`` is a request id RunComfy could have issued (the one rule, everywhere)."""
    return isinstance(value, str) and REQUEST_ID_PATTERN.fullmatch(value) is not None


def check_request_id(request_id: object) -> str:
    """``request_id`` if it is one RunComfy could have issued; raises naming the rule otherwise.

    Checked before an id is logged, pushed to XCom, stored for a later try or put in a URL.
    """
    if not is_request_id(request_id):
        shown = repr(request_id)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise DreaminaInvalidInputError(
            f"request_id {shown} is not a RunComfy request id ({_REQUEST_ID_RULE})", field="request_id"
        )
    return str(request_id)


def _invalid_input_from(error: ValidationError) -> DreaminaInvalidInputError:
    """Turn pydantic's report into one message that names each field and its rule."""
    problems = []
    first_field = None
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "input"
        first_field = first_field or field
        message = item["msg"].removeprefix("Value error, ")
        problems.append(message if message.startswith(field) else f"{field}: {message}")
    return DreaminaInvalidInputError("; ".join(problems), field=first_field)


class ImageToVideoInput(BaseModel):
    """The input of one Dreamina 3.0 Pro image-to-video generation.

    Constructing it checks every rule of the schema and raises
    :class:`~airflow_provider_dreamina.exceptions.DreaminaInvalidInputError` naming the field.

    :param image_urls: exactly one image: an https URL or ``data:`` URI, sent as is, or a local
        path, ``file://`` URI or object-storage URI, which the hook reads and sends inline.
    :param seed: -1 asks for a random seed.
    :param frames: 121 (about 5 s) or 241 (about 10 s) at 24 fps.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
    image_urls: list[str]
    seed: int = -1
    frames: int = 121

    @model_validator(mode="wrap")
    @classmethod
    def _raise_invalid_input(cls, data: Any, handler: Any) -> ImageToVideoInput:
        try:
            result: ImageToVideoInput = handler(data)
        except ValidationError as error:
            raise _invalid_input_from(error) from None
        return result

    @field_validator("prompt", mode="before")
    @classmethod
    def _check_prompt(cls, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"prompt must be text; got {type(value).__name__}")
        if not value.strip():
            raise ValueError("prompt is blank; describe the video to generate")
        if len(value) > PROMPT_MAX_CHARS:
            raise ValueError(f"prompt is {len(value)} characters; the limit is {PROMPT_MAX_CHARS}")
        return value

    @field_validator("image_urls", mode="before")
    @classmethod
    def _check_image_urls(cls, value: Any) -> list[str]:
        if isinstance(value, str):
            raise ValueError("image_urls must be a list holding exactly 1 image URI; got a single string")
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"image_urls must be a list of exactly 1 image URI; got {type(value).__name__}")
        if len(value) != 1:
            raise ValueError(f"image_urls has {len(value)} items; exactly 1 image is required")
        (uri,) = value
        if not isinstance(uri, str) or not uri.strip():
            raise ValueError("image_urls[0] is empty; give a URL, data: URI or path of a JPEG or PNG image")
        uri = uri.strip()
        if "://" in uri[:40] and uri[:5].lower() != "data:":
            _check_url_shape(uri)
        return [uri]

    @field_validator("seed", mode="before")
    @classmethod
    def _check_seed(cls, value: Any) -> int:
        seed = _as_integer("seed", value)
        if seed < -1:
            raise ValueError(f"seed is {seed}; use -1 for a random seed or an integer of 0 or more")
        return seed

    @field_validator("frames", mode="before")
    @classmethod
    def _check_frames(cls, value: Any) -> int:
        frames = _as_integer("frames", value)
        if frames not in FRAME_COUNTS:
            raise ValueError(f"frames is {frames}; allowed values are 121 (about 5 s) and 241 (about 10 s)")
        return frames

    @property
    def image_source(self) -> str:
        return self.image_urls[0]

    def to_request_body(self, image_uri: str | None = None) -> dict[str, Any]:
        """The JSON body of a submit, with the image replaced by ``image_uri`` when given."""
        return {
            "prompt": self.prompt,
            "image_urls": [image_uri or self.image_source],
            "seed": self.seed,
            "frames": self.frames,
        }


def _as_integer(field: str, value: Any) -> int:
    # Templated operator arguments arrive as strings ("42"); bools and fractions are mistakes.
    if isinstance(value, bool):
        raise ValueError(f"{field} must be an integer; got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError(f"{field} must be an integer; got {value!r}")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _without_queries(text: str) -> str:
    # A failure reason may quote the signed URL of the image it could not fetch.
    from airflow_provider_dreamina.redaction import without_queries

    return without_queries(text)


def _printable(text: str) -> str:
    return "".join(char if char.isprintable() else "?" for char in text) if not text.isprintable() else text


class _Answer(BaseModel):
    """Base of every answer model: unknown fields are kept, never rejected; known ones are bounded."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @field_validator("request_id", mode="before", check_fields=False)
    @classmethod
    def _check_request_id(cls, value: Any) -> Any:
        # Checked before the id is logged, pushed to XCom or stored for a later try.
        if not is_request_id(value):
            raise ValueError(f"request_id is not a RunComfy request id ({_REQUEST_ID_RULE})")
        return value

    @field_validator("status", "outcome", mode="before", check_fields=False)
    @classmethod
    def _short_word(cls, value: Any) -> Any:
        # A word is logged: no line breaks or other control characters to forge log lines with.
        return _cut(_printable(value.strip()), WORD_MAX_CHARS) if isinstance(value, str) else value

    @field_validator("status_url", "result_url", "cancel_url", mode="before", check_fields=False)
    @classmethod
    def _informative_url(cls, value: Any) -> Any:
        # Logged, never fetched: dropped when it could not be a URL.
        if not isinstance(value, str) or len(value) > OUTPUT_URL_MAX_CHARS or _printable(value) != value:
            return None
        return value


class SubmittedRequest(_Answer):
    """The answer to a submit: the new request's id and where to follow it."""

    request_id: str
    status_url: str | None = None
    result_url: str | None = None
    cancel_url: str | None = None


class RequestStatus(_Answer):
    """The answer of the status endpoint."""

    request_id: str
    status: str
    queue_position: int | None = None
    status_url: str | None = None
    result_url: str | None = None

    @field_validator("queue_position", mode="before")
    @classmethod
    def _bounded_position(cls, value: Any) -> int | None:
        # Informative only (it slows polling down); a huge number would overflow the delay's float.
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return None
        try:
            position = int(value)
        except (TypeError, ValueError, OverflowError):
            return None
        return min(position, _QUEUE_POSITION_MAX) if position >= 0 else None

    @property
    def state(self) -> RequestState:
        return RequestState.from_word(self.status)


class RequestOutput(_Answer):
    """What a finished generation produced; Dreamina image-to-video gives one MP4 ``video``."""

    video: str | None = None
    videos: list[str] | None = None
    image: str | None = None
    images: list[str] | None = None

    @field_validator("videos", "images", mode="before")
    @classmethod
    def _at_most_max_outputs(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) > MAX_OUTPUTS:
            log.warning("RunComfy listed %d outputs; keeping the first %d", len(value), MAX_OUTPUTS)
            return value[:MAX_OUTPUTS]
        return value

    @field_validator("video", "image")
    @classmethod
    def _bounded_url(cls, value: str | None) -> str | None:
        if value is not None and len(value) > OUTPUT_URL_MAX_CHARS:
            raise ValueError(f"an output URL is longer than {OUTPUT_URL_MAX_CHARS} characters")
        if value is not None and _printable(value) != value:
            raise ValueError("an output URL holds spaces or control characters")
        return value

    @field_validator("videos", "images")
    @classmethod
    def _bounded_urls(cls, value: list[str] | None) -> list[str] | None:
        for url in value or ():
            cls._bounded_url(url)
        return value

    @property
    def urls(self) -> list[str]:
        """Every output URL, videos first, in the order RunComfy listed them, without repeats."""
        ordered = [self.video, *(self.videos or []), self.image, *(self.images or [])]
        return list(dict.fromkeys(url for url in ordered if url))


class RequestResult(_Answer):
    """The answer of the result endpoint; while the request runs it only carries the state."""

    request_id: str
    status: str
    output: RequestOutput | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | dict[str, Any] | None = None
    cost: float | None = None

    @field_validator("created_at", "finished_at", mode="before")
    @classmethod
    def _lenient_time(cls, value: Any) -> Any:
        # Timestamps are informative only: an unexpected format must not fail a paid request.
        if value in (None, ""):
            return None
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            log.debug("Ignoring unparseable timestamp %r", value)
            return None
        # A time without an offset is UTC: one naive and one aware time cannot be subtracted.
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)

    @field_validator("cost", mode="before")
    @classmethod
    def _lenient_cost(cls, value: Any) -> Any:
        try:
            cost = None if value is None else float(value)
        except (TypeError, ValueError, OverflowError):
            return None
        return cost if cost is not None and math.isfinite(cost) and cost >= 0 else None

    @field_validator("error", mode="before")
    @classmethod
    def _bounded_error(cls, value: Any) -> Any:
        # The failure reason reaches the task's error, its XCom and the trigger event.
        if value is None:
            return None
        if isinstance(value, dict):
            kept = {
                key: value[key] for key in ("type", "message", "detail", "code") if value.get(key) is not None
            }
            if not kept:
                return _without_queries(_cut(json.dumps(value, default=str), ERROR_MAX_CHARS))
            return {
                key: _without_queries(
                    _cut(item if isinstance(item, str) else json.dumps(item, default=str), ERROR_MAX_CHARS)
                )
                for key, item in kept.items()
            }
        return _without_queries(_cut(value if isinstance(value, str) else str(value), ERROR_MAX_CHARS))

    @property
    def state(self) -> RequestState:
        return RequestState.from_word(self.status)

    @property
    def output_urls(self) -> list[str]:
        return self.output.urls if self.output else []

    @property
    def error_message(self) -> str | None:
        """The failure reason, whether RunComfy sent a string or an object ``{type, message}``."""
        if self.error is None:
            return None
        if isinstance(self.error, str):
            return self.error
        message = self.error.get("message") or self.error.get("detail") or ""
        kind = self.error.get("type")
        return f"{kind}: {message}" if kind and message else str(message or kind or self.error)

    @property
    def generation_seconds(self) -> float | None:
        if self.created_at and self.finished_at:
            return (self.finished_at - self.created_at).total_seconds()
        return None

    def to_event(self) -> dict[str, Any]:
        """The whole answer as JSON, for a trigger event; ``model_validate`` reads it back.

        Fields this provider does not know are kept only while the event stays under
        ``EVENT_MAX_CHARS``: a trigger event is a database row.
        """
        event = self.model_dump(mode="json", exclude_none=True)
        if len(json.dumps(event)) <= EVENT_MAX_CHARS:
            return event
        log.warning("Request %s: dropping unknown fields of a large result from its event", self.request_id)
        event = {key: value for key, value in event.items() if key in type(self).model_fields}
        if isinstance(event.get("output"), dict):
            event["output"] = {k: v for k, v in event["output"].items() if k in RequestOutput.model_fields}
        return event


class CancelOutcome(_Answer):
    """The answer of the cancel endpoint (HTTP 202)."""

    request_id: str
    status: str | None = None
    outcome: str | None = None

    @property
    def cancelled(self) -> bool:
        return (self.outcome or "").lower() in ("cancelled", "canceled")


def _number_or_none(value: Any) -> float | None:
    # Prices and balances are undocumented: a value that is not a finite number is as good as
    # absent (a NaN price or balance would pass every comparison of the spend checks).
    try:
        number = None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number is not None and math.isfinite(number) else None


class ModelInfo(_Answer):
    """A model's catalog entry (``GET /v1/models/{model_id}``, undocumented): price and input schema.

    ``price_unit`` is ``output`` (``base_price_usd`` per output) or ``second`` (per second of
    video); any field may be missing.
    """

    model_id: str | None = None
    base_price_usd: float | None = None
    price_unit: str | None = None
    input_schema: dict[str, Any] | None = None

    @field_validator("base_price_usd", mode="before")
    @classmethod
    def _lenient_price(cls, value: Any) -> float | None:
        return _number_or_none(value)

    @field_validator("price_unit", mode="before")
    @classmethod
    def _unit_word(cls, value: Any) -> str | None:
        return value.strip().lower() or None if isinstance(value, str) else None

    @field_validator("input_schema", mode="before")
    @classmethod
    def _schema_or_none(cls, value: Any) -> Any:
        return value if isinstance(value, dict) else None


class AccountBalance(_Answer):
    """The account's prepaid balance (``GET /prod/v2/balance`` on the account host, undocumented)."""

    balance_usd: float | None = None
    currency: str | None = None

    @field_validator("balance_usd", mode="before")
    @classmethod
    def _lenient_balance(cls, value: Any) -> float | None:
        return _number_or_none(value)

    @field_validator("currency", mode="before")
    @classmethod
    def _currency_word(cls, value: Any) -> str | None:
        return str(value) if value is not None else None


def _check_url_shape(uri: str) -> None:
    """Refuse a URL or storage URI nothing downstream could parse, before anything is recorded or
    paid; the message never quotes it (its query may be a signature)."""
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in uri):
        raise ValueError("image_urls[0] holds a control character; give a URL without one")
    try:
        urlsplit(uri).port  # noqa: B018 - parsing the port is part of the check
    except ValueError as error:
        raise ValueError(f"image_urls[0] is not a valid URL ({shorten(str(error), 80)})") from None


def recorded_image(image: str) -> str:
    """How a record names an input image: never inline data, never a URL's query (its signature)."""
    image = image.strip()
    if image[:5].lower() == "data:":
        return "(inline data: URI)"
    return url_without_query(image) if "://" in image else image


class GenerationInput(BaseModel):
    """What was submitted, as a record keeps it: no inline image data, no signed query strings."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    model_id: str = DEFAULT_MODEL_ID
    prompt: str | None = None
    image_url: str | None = None
    seed: int | None = None
    frames: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _image_from_image_urls(cls, data: Any) -> Any:
        # The submit body names the image in a list; a record names one image.
        if isinstance(data, dict) and "image_url" not in data and isinstance(data.get("image_urls"), list):
            images = data["image_urls"]
            data = {**data, "image_url": images[0] if images and isinstance(images[0], str) else None}
        return data

    @field_validator("image_url")
    @classmethod
    def _recorded(cls, value: str | None) -> str | None:
        return None if value is None else recorded_image(value)

    @classmethod
    def of(cls, request: ImageToVideoInput, model_id: str) -> GenerationInput:
        return cls(
            model_id=model_id,
            prompt=request.prompt,
            image_url=request.image_source,
            seed=request.seed,
            frames=request.frames,
        )


class GenerationRecord(BaseModel):
    """One generation: what was asked for and what RunComfy answered, as XCom carries it.

    The submit operator and the sensor return it (as JSON); the download operator reads it back
    with :meth:`coerce`.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    request_id: str
    state: RequestState
    status: str
    output_urls: list[str] = Field(default_factory=list)
    created_at: datetime | None = None
    finished_at: datetime | None = None
    #: Seconds from creation to finish, as RunComfy reported them (not the video's length).
    generation_seconds: float | None = None
    cost_usd: float | None = None
    error: str | None = None
    input: GenerationInput | None = None

    @classmethod
    def of(cls, result: RequestResult, generation: GenerationInput | None = None) -> GenerationRecord:
        return cls(
            request_id=result.request_id,
            state=result.state,
            status=result.status,
            output_urls=result.output_urls,
            created_at=result.created_at,
            finished_at=result.finished_at,
            generation_seconds=result.generation_seconds,
            cost_usd=result.cost,
            error=result.error_message,
            input=generation,
        )

    def to_xcom(self) -> dict[str, Any]:
        """The record as a JSON-safe dict (never output bytes, never inline image data)."""
        return self.model_dump(mode="json")

    @classmethod
    def coerce(cls, value: Any) -> GenerationRecord | GenerationInput | None:
        """A record, or only its input, from what a task received: a model, a dict or JSON text.

        A record has a ``request_id``; a plain dict of input fields (``prompt``, ``seed``,
        ``frames``, ``image_urls`` or ``image_url``, ``model_id``) is an input. Anything else is
        None: the caller says what it could not read.
        """
        if isinstance(value, (GenerationRecord, GenerationInput)):
            return value
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return None
        if not isinstance(value, dict):
            return None
        try:
            if isinstance(value.get("input"), dict):
                try:
                    return cls.model_validate(value)
                except ValidationError:
                    return GenerationInput.model_validate(value["input"])
            if value.get("input") is None and "request_id" in value and "state" in value:
                # The sensor's record: a request and its end, without the input it never saw.
                try:
                    return cls.model_validate(value)
                except ValidationError:
                    pass
            return GenerationInput.model_validate(value)
        except ValidationError:
            return None
