"""Where a secret could surface: every string an error, a model, an event or a log record shows."""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Iterable, Iterator
from typing import Any

#: A piece of a secret shorter than this may be left where a cut fell (``redaction``): it tells
#: next to nothing. Anything longer is a leak.
PIECE_CHARS = 8


def strings(value: Any, depth: int = 0, seen: set[int] | None = None) -> Iterator[str]:
    """Every string ``value`` shows: its ``str`` and ``repr``, and those of everything inside it
    (an exception's args, attributes and chained causes; a model's fields; keys and items)."""
    seen = set() if seen is None else seen
    if depth > 80 or id(value) in seen:
        return
    if isinstance(value, (bytes, bytearray)):
        yield bytes(value).decode("utf-8", "replace")
        return
    if isinstance(value, str):
        yield value
        return
    if isinstance(value, (int, float, bool, type(None))):
        return
    seen.add(id(value))
    yield repr(value)
    if isinstance(value, BaseException):
        yield str(value)
        yield "".join(traceback.format_exception_only(type(value), value))
        yield from strings(value.args, depth + 1, seen)
        yield from strings(vars(value), depth + 1, seen)
        yield from strings(value.__cause__, depth + 1, seen)
        yield from strings(value.__context__, depth + 1, seen)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(key, depth + 1, seen)
            yield from strings(item, depth + 1, seen)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from strings(item, depth + 1, seen)
    elif hasattr(value, "model_dump"):
        yield str(value)
        yield json.dumps(value.model_dump(mode="json"), default=str)
        yield from strings(value.model_dump(), depth + 1, seen)
    elif hasattr(value, "__dict__"):
        yield str(value)
        yield from strings(vars(value), depth + 1, seen)


def log_strings(records: Iterable[logging.LogRecord]) -> Iterator[str]:
    """What log records would write: the message, its arguments and any traceback."""
    for record in records:
        yield record.getMessage()
        yield from strings(record.args)
        if record.exc_info and record.exc_info[1] is not None:
            yield "".join(traceback.format_exception(*record.exc_info))
            yield from strings(record.exc_info[1])
        if record.exc_text:
            yield record.exc_text


def leaks(secret: str, texts: Iterable[str]) -> list[str]:
    """The texts that hold ``secret``, or a piece of it of :data:`PIECE_CHARS` characters or more."""
    pieces = {secret[start : start + PIECE_CHARS] for start in range(len(secret) - PIECE_CHARS + 1)}
    return [text for text in texts if any(piece in text for piece in pieces)]


def assert_no_leak(secret: str, *where: Any, records: Iterable[logging.LogRecord] = ()) -> None:
    found = leaks(secret, [*(text for value in where for text in strings(value)), *log_strings(records)])
    assert not found, f"the secret (or {PIECE_CHARS}+ characters of it) surfaced in: {found[0][:600]!r}"
