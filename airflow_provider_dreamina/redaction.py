"""What may be shown of a URL or an answer: never a token, a signature or user info.

Signed output and image URLs carry their secret in the query string; the API token could come
back in an error body that echoes the request. Everything logged, raised or recorded passes
through here first.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# Every URL matches, with or without a query, so the engine never backtracks over a long path;
# and a scheme is at most 32 characters: linear time on any text, however hostile.
_URL_WITH_QUERY = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]{0,31}://[^\s?#'\"<>]*)(?:[?#][^\s'\"<>]*)?")
MASK = "***"
# A piece of a secret shorter than this at the end of a cut text is left: it tells next to nothing,
# and masking shorter pieces would mask ordinary words that happen to start the same way.
_PIECE_MIN_CHARS = 8
# How deep scrub_exception looks into lists and dicts; answers are depth-checked far below this.
_SCRUB_DEPTH = 64


def url_without_query(url: str) -> str:
    """The URL as it may be logged or stored: without query string, fragment or user info. Never
    raises: a URL too broken to parse (``https://[::1/x``) is cut the same way by hand."""
    try:
        parts = urlsplit(url)
    except ValueError:
        scheme, separator, rest = url.partition("://")
        rest = re.split(r"[?#]", rest, maxsplit=1)[0]
        host, slash, path = rest.partition("/")
        return f"{scheme}{separator}{host.rpartition('@')[2]}{slash}{path}"
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def without_queries(text: str) -> str:
    """``text`` with the query string of every URL in it removed."""
    return _URL_WITH_QUERY.sub(r"\1", text)


def without_secret(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` masked, and the start of it that a cut may
    have left at the end (before a ``...`` that marks the cut, if any)."""
    if not secret or not text:
        return text
    text = text.replace(secret, MASK)
    body = text.rstrip(".\u2026")
    for size in range(min(len(secret) - 1, len(body)), _PIECE_MIN_CHARS - 1, -1):
        if body.endswith(secret[:size]):
            return body[:-size] + MASK + text[len(body) :]
    return text


def scrub_exception(error: BaseException, secret: str | None) -> BaseException:
    """Mask ``secret`` in every argument and attribute of ``error`` and of the errors it chains to.

    An error body can echo the request back, ``Authorization`` header included; the message is
    masked where it is built, but ``detail`` (or any attribute added later) would still carry it.
    Returns ``error`` itself, changed in place.
    """
    if not secret:
        return error

    def mask(text: str) -> str:
        return without_secret(text, secret)

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.args = tuple(map_strings(arg, mask) for arg in current.args)
        for name, value in list(vars(current).items()):
            try:
                masked = map_strings(value, mask)
            except Exception:  # a value that cannot be rebuilt cannot be checked: drop it
                masked = None
            if masked is not value:
                vars(current)[name] = masked
        current = current.__cause__ or current.__context__
    return error


def map_strings(value: Any, change: Callable[[str], str], depth: int = 0) -> Any:
    """``value`` with ``change`` applied to every string inside it (lists, tuples, dicts, models)."""
    if isinstance(value, str):
        return change(value)
    if depth > _SCRUB_DEPTH:
        return value
    if isinstance(value, list):
        return [map_strings(item, change, depth + 1) for item in value]
    if isinstance(value, tuple):
        return tuple(map_strings(item, change, depth + 1) for item in value)
    if isinstance(value, dict):
        return {
            map_strings(k, change, depth + 1): map_strings(v, change, depth + 1) for k, v in value.items()
        }
    dump = getattr(value, "model_dump", None)
    if callable(dump):  # a pydantic model, such as the result a request error carries
        return type(value).model_validate(map_strings(dump(mode="json"), change, depth + 1))
    return value


def shorten(text: str, limit: int = 200) -> str:
    """At most ``limit`` characters of ``text``, marked when cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _HttpxLineFilter(logging.Filter):
    """httpx logs every request as its URL and the answer's status line. The URL loses its query
    (signed URLs carry secrets there); the status keeps only its standard phrase, because a server
    may put anything after the code, the very token it was sent included."""

    def filter(self, record: logging.LogRecord) -> bool:
        import httpx

        args = record.args
        if not isinstance(args, tuple):
            return True
        shown = [
            url_without_query(str(arg)) if isinstance(arg, httpx.URL) and arg.query else arg for arg in args
        ]
        if str(record.msg).startswith("HTTP Request:") and len(shown) == 5 and isinstance(shown[3], int):
            shown[4] = httpx.codes.get_reason_phrase(shown[3])
        record.args = tuple(shown)
        return True


def redact_httpx_log_lines() -> None:
    """Install the filter of httpx's request lines (see ``_HttpxLineFilter``) once."""
    logger = logging.getLogger("httpx")
    if not any(isinstance(existing, _HttpxLineFilter) for existing in logger.filters):
        logger.addFilter(_HttpxLineFilter())
