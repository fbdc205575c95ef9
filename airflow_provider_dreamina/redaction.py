"""What may be shown of a URL or an answer: never a token, a signature or user info.

Signed output and image URLs carry their secret in the query string; the API token could come
back in an error body that echoes the request. Everything logged, raised or recorded passes
through here first.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

_URL_WITH_QUERY = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#'\"<>]*)[?#][^\s'\"<>]*")
MASK = "***"


def url_without_query(url: str) -> str:
    """The URL as it may be logged or stored: without query string, fragment or user info."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


#: The name the public API has always had (the download manifest's ``source_url`` uses it).
output_url_without_query = url_without_query


def without_queries(text: str) -> str:
    """``text`` with the query string of every URL in it removed."""
    return _URL_WITH_QUERY.sub(r"\1", text)


def without_secret(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` masked."""
    return text.replace(secret, MASK) if secret else text


def shorten(text: str, limit: int = 200) -> str:
    """At most ``limit`` characters of ``text``, marked when cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _QueryRedactingFilter(logging.Filter):
    """Drops query strings from httpx's request log lines: signed URLs carry secrets there."""

    def filter(self, record: logging.LogRecord) -> bool:
        import httpx

        args = record.args
        if isinstance(args, tuple) and any(isinstance(arg, httpx.URL) and arg.query for arg in args):
            record.args = tuple(
                url_without_query(str(arg)) if isinstance(arg, httpx.URL) else arg for arg in args
            )
        return True


def redact_httpx_log_queries() -> None:
    """Install the query-redacting filter on httpx's logger once."""
    logger = logging.getLogger("httpx")
    if not any(isinstance(existing, _QueryRedactingFilter) for existing in logger.filters):
        logger.addFilter(_QueryRedactingFilter())
