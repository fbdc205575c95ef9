"""The settings of one Dreamina connection, and how an event loop shares a reading of them."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_dreamina.defaults import DEFAULT_MAX_ERROR_SECONDS
from airflow_provider_dreamina.exceptions import DreaminaConfigurationError

DEFAULT_BASE_URL = "https://model-api.runcomfy.net"
#: Where RunComfy answers account questions (the balance): another host, the same token.
DEFAULT_ACCOUNT_URL = "https://api.runcomfy.net"
RUNCOMFY_OUTPUT_DOMAIN = "runcomfy.net"
#: Seconds an event loop reuses a connection it has read (see :func:`shared_settings`).
SETTINGS_TTL_SECONDS = 30.0
#: Wall-clock seconds one API call (request and whole answer) may take, however slowly it drips.
DEFAULT_REQUEST_DEADLINE = 120.0
#: Wall-clock seconds the image preflight may take in all, redirects included.
DEFAULT_PREFLIGHT_DEADLINE = 60.0
#: Wall-clock seconds the download of one output may take in all, retries included.
DEFAULT_DOWNLOAD_DEADLINE = 3600.0


def mask(secret: str) -> None:
    """Register a secret with Airflow's masker so it never reaches a log line."""
    from airflow.sdk.log import mask_secret

    mask_secret(secret)


@dataclass(frozen=True)
class DreaminaSettings:
    """Everything the hook reads from its Airflow connection."""

    conn_id: str
    base_url: str
    token: str = field(repr=False)
    timeout: float = 30.0
    connect_timeout: float = 10.0
    max_retries: int = 5
    max_connections: int = 32
    allowed_output_hosts: tuple[str, ...] = ()
    #: Where submit records go where Airflow has no task_state_store (a directory or storage URI).
    state_path: str | None = None
    #: The second (and last) host the token is sent to: RunComfy's account API, for the balance.
    account_url: str = DEFAULT_ACCOUNT_URL
    #: Spending settings read by ``spend``: a deployment-wide balance reserve, a fallback price.
    min_balance_usd: float | None = None
    price_usd: float | None = None
    #: Path or URI prefixes under which local and object-storage images may be read.
    allowed_image_roots: tuple[str, ...] = ()
    #: Hosts (such as a local emulator) the image preflight may fetch from over http or privately.
    allowed_image_hosts: tuple[str, ...] = ()
    request_deadline: float = DEFAULT_REQUEST_DEADLINE
    #: How long a wait tolerates a run of transient errors (an outage of RunComfy's API).
    max_error_seconds: float = DEFAULT_MAX_ERROR_SECONDS
    preflight_deadline: float = DEFAULT_PREFLIGHT_DEADLINE
    download_deadline: float = DEFAULT_DOWNLOAD_DEADLINE

    @classmethod
    def from_connection(cls, conn: Any, conn_id: str) -> DreaminaSettings:
        token = (conn.password or "").strip()
        if not token:
            raise DreaminaConfigurationError(
                f"connection '{conn_id}' has no API token: put the RunComfy token in its password field"
            )
        mask(token)
        extra: dict[str, Any] = conn.extra_dejson or {}
        host = (conn.host or "").strip() or DEFAULT_BASE_URL
        if "://" not in host:
            # A host without a scheme is how most users type it in the form.
            host = f"https://{host}"
            if conn.port:
                host = f"{host}:{conn.port}"
        account_url = str(extra.get("account_url") or "").strip() or DEFAULT_ACCOUNT_URL
        account_url = account_url if "://" in account_url else f"https://{account_url}"
        try:
            return cls(
                conn_id=conn_id,
                base_url=host.rstrip("/"),
                token=token,
                timeout=float(extra.get("timeout", cls.timeout)),
                connect_timeout=float(extra.get("connect_timeout", cls.connect_timeout)),
                max_retries=int(extra.get("max_retries", cls.max_retries)),
                max_connections=int(extra.get("max_connections", cls.max_connections)),
                allowed_output_hosts=_hosts(extra.get("allowed_output_hosts")),
                allowed_image_roots=_list(extra.get("allowed_image_roots"), r"[,\n]+"),
                allowed_image_hosts=_hosts(extra.get("allowed_image_hosts")),
                request_deadline=_seconds(extra, "request_deadline", cls.request_deadline),
                preflight_deadline=_seconds(extra, "preflight_deadline", cls.preflight_deadline),
                download_deadline=_seconds(extra, "download_deadline", cls.download_deadline),
                max_error_seconds=_seconds(
                    extra, "max_error_seconds", cls.max_error_seconds, zero_allowed=True
                ),
                state_path=str(extra["state_path"]).strip() or None if extra.get("state_path") else None,
                account_url=account_url.rstrip("/"),
                min_balance_usd=_optional_number(extra.get("min_balance_usd")),
                price_usd=_optional_number(extra.get("price_usd")),
            )
        except (TypeError, ValueError) as error:
            raise DreaminaConfigurationError(
                f"connection '{conn_id}' has an extra that is not a valid number: {error}"
            ) from None

    @property
    def cache_key(self) -> tuple[Any, ...]:
        # The token is part of the key only as a digest, so a rotated token gets a new client.
        digest = hashlib.sha256(self.token.encode()).hexdigest()[:16]
        return (self.base_url, digest, self.timeout, self.connect_timeout, self.max_connections)

    def output_url_allowed(self, url: str) -> bool:
        """Outputs come from ``https://*.runcomfy.net``, or from hosts the connection lists (http allowed)."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if host in self.allowed_output_hosts or (parts.netloc.lower() in self.allowed_output_hosts):
            return parts.scheme in ("https", "http")
        is_runcomfy = host == RUNCOMFY_OUTPUT_DOMAIN or host.endswith("." + RUNCOMFY_OUTPUT_DOMAIN)
        return parts.scheme == "https" and is_runcomfy


def _optional_number(value: Any) -> float | None:
    # The connection form stores an emptied number field as "" or null: not set.
    return None if value is None or value == "" else float(value)


def _list(value: Any, separators: str) -> tuple[str, ...]:
    """A list extra given as a JSON list or as text separated by ``separators``."""
    if not value:
        return ()
    items = re.split(separators, value) if isinstance(value, str) else list(value)
    return tuple(text for text in (str(item).strip() for item in items) if text)


def _hosts(value: Any) -> tuple[str, ...]:
    return tuple(host.lower() for host in _list(value, r"[,\s]+"))


def _seconds(extra: dict[str, Any], name: str, default: float, *, zero_allowed: bool = False) -> float:
    raw = extra.get(name)
    value = float(default if raw is None or raw == "" else raw)
    if not (value >= 0 if zero_allowed else value > 0) or value == float("inf"):
        rule = "0 or more" if zero_allowed else "more than 0"
        raise ValueError(f"{name} is {value}; it must be {rule} seconds")
    return value


@dataclass
class _SettingsReading:
    """One lookup of a connection on one event loop, shared by the hooks that need it meanwhile."""

    started: float
    task: asyncio.Task[DreaminaSettings]

    def stale(self, now: float) -> bool:
        if now - self.started > SETTINGS_TTL_SECONDS:
            return True
        # A failed lookup (say, a connection not created yet) is not remembered.
        return self.task.done() and (self.task.cancelled() or self.task.exception() is not None)


_READINGS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _SettingsReading]] = (
    weakref.WeakKeyDictionary()
)


async def shared_settings(conn_id: str, read: Callable[[], Awaitable[DreaminaSettings]]) -> DreaminaSettings:
    """The settings of ``conn_id`` as this event loop last read them, read anew when stale.

    A triggerer that starts a batch of waits looks the connection up once, not once per wait
    (each lookup is a round trip to the triggerer's supervisor); a later reading picks up an
    edited connection, and concurrent first lookups wait for the same one.
    """
    loop = asyncio.get_running_loop()
    readings = _READINGS.setdefault(loop, {})
    now = time.monotonic()
    reading = readings.get(conn_id)
    if reading is None or reading.stale(now):
        reading = _SettingsReading(now, loop.create_task(read()))  # type: ignore[arg-type]
        readings[conn_id] = reading
    # Shielded: one waiter being cancelled must not cancel the lookup the others share.
    return await asyncio.shield(reading.task)


def forget_shared_settings() -> None:
    """Drop this event loop's readings (tests and clean shutdowns)."""
    _READINGS.pop(asyncio.get_running_loop(), None)
