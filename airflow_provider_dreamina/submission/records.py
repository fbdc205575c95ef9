"""What a submit task remembers about its paid request: the two-phase record, versioned.

RunComfy has no idempotency key, so the provider keeps a two-phase record itself: an *intent*
(input fingerprint, time, try number) is written before the paid POST, and the request id right
after it. The next run of the same task reads it back: a request id means reattach; an intent
without one means an earlier try may have paid for a request whose id was lost (an *orphaned
submit*), which is detected instead of silently paid for again.

A record that is there but cannot be read is never taken for "nothing was paid": :func:`parse`
raises :class:`DreaminaStateError`, saying where the record is and how to submit anew on purpose.
Where records live is ``stores``' concern.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from airflow_provider_dreamina.exceptions import DreaminaStateError
from airflow_provider_dreamina.models import ImageToVideoInput

#: The shape of a record; a record of another version is refused, never guessed at.
SCHEMA_VERSION = 1


class SubmitRecord(BaseModel):
    """The two-phase record of one task's paid submit."""

    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)

    schema_version: int = SCHEMA_VERSION
    fingerprint: str
    #: When the intent was written, just before the paid POST; None once nothing is pending.
    intent_at: datetime | None = None
    try_number: int | None = None
    #: ``max_tries`` when the record was written: Airflow raises it when a user clears the task.
    max_tries: int | None = None
    request_id: str | None = None
    submitted_at: datetime | None = None

    @property
    def orphaned(self) -> bool:
        """An intent without a request id: an earlier try may have paid for a request it lost."""
        return self.intent_at is not None and self.request_id is None

    def cleared_since(self, max_tries: int | None) -> bool:
        """Whether a user cleared the task since this record was written."""
        return max_tries is not None and self.max_tries is not None and max_tries > self.max_tries

    def intent_window(self) -> str:
        start = self.intent_at.isoformat(timespec="seconds") if self.intent_at else "an unknown time"
        return f"from {start} (try {self.try_number})"

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def now() -> datetime:
    return datetime.now(timezone.utc)


def fingerprint(request: ImageToVideoInput, model_id: str, conn_id: str) -> str:
    """Identifies what is paid for and by whom: the input, the model and the connection (account).

    A changed prompt, image, seed, frame count, model or connection is never answered with an
    earlier request's video.
    """
    body = {"conn_id": conn_id, "model_id": model_id, **request.to_request_body()}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def parse(value: Any, where: str) -> SubmitRecord | None:
    """The record in ``value`` (a JSON object, or its text or bytes); None only when there is none.

    :param where: how a message names the record's place, with how to remove it.
    :raises DreaminaStateError: for anything else: not JSON, not an object, another schema
        version, a missing or mistyped field.
    """
    if value is None:
        return None
    problem: str | None = None
    if isinstance(value, (bytes, bytearray, str)):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            problem = "it is not JSON"
    if problem is None and not isinstance(value, dict):
        problem = f"it is a JSON {type(value).__name__}, not an object"
    if problem is None and value.get("schema_version") != SCHEMA_VERSION:
        problem = (
            f"its schema_version is {_shown(value.get('schema_version'))}, and this provider reads "
            f"version {SCHEMA_VERSION} only"
        )
    if problem is None:
        try:
            # JSON mode: timestamps as ISO text, and no coercion of a mistyped field (strict).
            return SubmitRecord.model_validate_json(json.dumps(value))
        except (ValidationError, TypeError, ValueError) as error:
            problem = f"its fields do not hold ({_fields(error)})"
    raise _unreadable(where, problem)


def _fields(error: Exception) -> str:
    if not isinstance(error, ValidationError):
        return type(error).__name__
    return ", ".join(sorted({".".join(map(str, item["loc"])) or "record" for item in error.errors()}))


def _unreadable(where: str, problem: str) -> DreaminaStateError:
    return DreaminaStateError(
        f"the record of this task's paid request in {where} cannot be read: {problem}. It is not taken "
        "for 'nothing was paid', so nothing was submitted. Look in RunComfy's dashboard (Generations) for "
        "a request this task may have paid for; to submit anew on purpose, delete the record and clear the "
        "task"
    )


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
