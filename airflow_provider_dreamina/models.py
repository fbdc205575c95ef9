"""Typed inputs and answers of the RunComfy Model API for Dreamina 3.0 Pro image-to-video.

Every rule of the Dreamina schema lives here and runs before any network call; every answer
model keeps fields it does not know, because RunComfy adds fields without notice.
"""

from __future__ import annotations

import enum
import io
import logging
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from airflow_provider_dreamina.exceptions import DreaminaInvalidInputError

log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "bytedance/dreamina-3-0/pro/image-to-video"

PROMPT_MAX_CHARS = 800
FRAME_COUNTS = (121, 241)
FRAMES_PER_SECOND = 24
# The schema says "less than 4.7 MB"; RunComfy's web tooling counts decimal megabytes.
IMAGE_MAX_BYTES = 4_700_000
IMAGE_MIN_SIDE = 320  # exclusive: a side must be longer than this
IMAGE_MAX_SIDE = 4096  # inclusive
IMAGE_MAX_RATIO = 3.0  # exclusive: long side / short side must be below this
IMAGE_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png"}


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
        """Map a status word from either endpoint; an unknown word is logged and not terminal."""
        state = _STATE_WORDS.get((word or "").strip().lower())
        if state is None:
            if word not in _unknown_words_logged:
                _unknown_words_logged.add(word)
                log.warning("RunComfy reported an unknown status %r; treating it as not finished", word)
            return cls.UNKNOWN
        return state


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
_unknown_words_logged: set[str | None] = set()


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

    :param image_urls: exactly one image: an http(s) URL or ``data:`` URI, sent as is, or a local
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
        return [uri.strip()]

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


class ImageInfo(BaseModel):
    """What the preflight learnt about an input image."""

    model_config = ConfigDict(frozen=True)

    format: Literal["JPEG", "PNG"]
    width: int
    height: int
    size_bytes: int

    @property
    def media_type(self) -> str:
        return IMAGE_FORMATS[self.format]


def check_image(head: bytes, size_bytes: int, *, source: str) -> ImageInfo:
    """Check an image against the Dreamina schema from its first bytes and its total size.

    ``head`` needs to hold only the image header (a few KiB); the pixels are never decoded.
    Raises :class:`DreaminaInvalidInputError` naming the rule and the measured value.
    """
    # Pillow is imported here so that parsing a DAG file never pays for it.
    from PIL import Image, UnidentifiedImageError

    def invalid(rule: str) -> DreaminaInvalidInputError:
        return DreaminaInvalidInputError(f"image_urls[0] ({source}): {rule}", field="image_urls")

    if size_bytes >= IMAGE_MAX_BYTES:
        raise invalid(
            f"image is {_megabytes(size_bytes)}; the limit is {_megabytes(IMAGE_MAX_BYTES)}"
            " (file size must be less than 4.7 MB)"
        )
    try:
        with Image.open(io.BytesIO(head)) as image:
            image_format, (width, height) = image.format, image.size
    except (UnidentifiedImageError, OSError, ValueError):
        raise invalid("is not a JPEG or PNG image (checked by content, not by name)") from None
    if image_format not in IMAGE_FORMATS:
        raise invalid(f"is a {image_format} image; only JPEG and PNG are accepted")
    short_side, long_side = sorted((width, height))
    if long_side > IMAGE_MAX_SIDE:
        raise invalid(
            f"image is {width}x{height} pixels; the maximum resolution is {IMAGE_MAX_SIDE}x{IMAGE_MAX_SIDE}"
        )
    if short_side <= IMAGE_MIN_SIDE:
        raise invalid(
            f"image is {width}x{height} pixels; the shortest side must be more than {IMAGE_MIN_SIDE} pixels"
        )
    if long_side / short_side >= IMAGE_MAX_RATIO:
        raise invalid(
            f"image is {width}x{height} pixels, a ratio of {long_side / short_side:.2f}:1;"
            " the ratio of long side to short side must be within 3:1"
        )
    return ImageInfo(format=image_format, width=width, height=height, size_bytes=size_bytes)


def _megabytes(size_bytes: int) -> str:
    return f"{size_bytes / 1_000_000:.1f} MB"


class _Answer(BaseModel):
    """Base of every answer model: unknown fields are kept, never rejected."""

    model_config = ConfigDict(extra="allow", frozen=True)


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

    @property
    def state(self) -> RequestState:
        return RequestState.from_word(self.status)


class RequestOutput(_Answer):
    """What a finished generation produced; Dreamina image-to-video gives one MP4 ``video``."""

    video: str | None = None
    videos: list[str] | None = None
    image: str | None = None
    images: list[str] | None = None

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
            return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            log.debug("Ignoring unparseable timestamp %r", value)
            return None

    @field_validator("cost", mode="before")
    @classmethod
    def _lenient_cost(cls, value: Any) -> Any:
        try:
            return None if value is None else float(value)
        except (TypeError, ValueError):
            return None

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
    def duration_seconds(self) -> float | None:
        if self.created_at and self.finished_at:
            return (self.finished_at - self.created_at).total_seconds()
        return None

    def summary(self) -> dict[str, Any]:
        """A small JSON-safe dict for XCom and trigger events (never output bytes)."""
        return {
            "request_id": self.request_id,
            "state": self.state.value,
            "status": self.status,
            "output_urls": self.output_urls,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "duration_seconds": self.duration_seconds,
            "cost": self.cost,
            "error": self.error_message,
        }

    @classmethod
    def from_summary(cls, summary: dict[str, Any]) -> RequestResult:
        """Rebuild a result from :meth:`summary`, as a trigger event carries it."""
        urls = summary.get("output_urls") or []
        return cls(
            request_id=summary["request_id"],
            status=summary.get("status") or summary.get("state") or "unknown",
            output=RequestOutput(videos=urls) if urls else None,
            created_at=summary.get("created_at"),
            finished_at=summary.get("finished_at"),
            error=summary.get("error"),
            cost=summary.get("cost"),
        )


class CancelOutcome(_Answer):
    """The answer of the cancel endpoint (HTTP 202)."""

    request_id: str
    status: str | None = None
    outcome: str | None = None

    @property
    def cancelled(self) -> bool:
        return (self.outcome or "").lower() in ("cancelled", "canceled")
