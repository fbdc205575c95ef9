"""The one factory of httpx clients: the API clients (sync and async) and the output client.

One async client per event loop and connection: a triggerer running a thousand waits keeps one
bounded pool instead of a client (and its sockets) per wait.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import weakref
from dataclasses import dataclass
from typing import Any

import httpx

from airflow_provider_dreamina import __version__
from airflow_provider_dreamina.redaction import redact_httpx_log_lines
from airflow_provider_dreamina.runcomfy import deadlines
from airflow_provider_dreamina.runcomfy.settings import DreaminaSettings

USER_AGENT = f"airflow-provider-dreamina/{__version__}"
#: A triggerer may queue a thousand polls behind the pool's slots: the pool wait is long.
POOL_TIMEOUT = 300.0
_OUTPUT_CONNECTIONS = 4


@functools.cache
def tls_context(trust_env: bool = True) -> ssl.SSLContext:
    """One TLS context per process (and ``trust_env``) for every client. Building one loads the CA
    bundle, about 20 ms of CPU, which each task process would otherwise pay for every client it
    opens; a context is safe to share between clients and threads."""
    return httpx.create_ssl_context(trust_env=trust_env)


def client_options(settings: DreaminaSettings) -> dict[str, Any]:
    """The one description of a RunComfy API client; both the sync and async clients use it."""
    redact_httpx_log_lines()
    return {
        "base_url": settings.base_url,
        "headers": {
            "Authorization": f"Bearer {settings.token}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            # Answers are read as raw bytes within a byte cap: a compressed one is refused.
            "Accept-Encoding": "identity",
        },
        "timeout": httpx.Timeout(settings.timeout, connect=settings.connect_timeout, pool=POOL_TIMEOUT),
        "limits": httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_connections,
        ),
        "follow_redirects": False,
        "verify": tls_context(),
    }


def api_client(settings: DreaminaSettings, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    return deadlines.install(httpx.Client(**client_options(settings), transport=transport))


def output_client(settings: DreaminaSettings, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """The client that fetches outputs: no base URL and, above all, no API token."""
    redact_httpx_log_lines()
    client = httpx.Client(
        headers={
            "User-Agent": USER_AGENT,
            # Byte counts and resume offsets must refer to the stored bytes, so no compression.
            "Accept-Encoding": "identity",
        },
        timeout=httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
        limits=httpx.Limits(
            max_connections=_OUTPUT_CONNECTIONS, max_keepalive_connections=_OUTPUT_CONNECTIONS
        ),
        follow_redirects=False,
        verify=tls_context(),
        transport=transport,
    )
    return deadlines.install(client)


@dataclass
class SharedAsyncClient:
    """The async client of one event loop and connection, and the slots its requests queue for."""

    client: httpx.AsyncClient
    # At most max_connections requests are inside httpx at once; the others wait here, in order.
    # httpcore rescans every request queued in its pool against every connection on each request
    # event, so a thousand waits queued inside the pool cost milliseconds of CPU per poll.
    slots: asyncio.Semaphore


_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[Any, ...], SharedAsyncClient]] = (
    weakref.WeakKeyDictionary()
)


def shared_async_client(
    settings: DreaminaSettings, transport: httpx.AsyncBaseTransport | None = None
) -> SharedAsyncClient:
    """The async client this event loop shares for ``settings`` (and ``transport``)."""
    clients = _SHARED.setdefault(asyncio.get_running_loop(), {})
    key = (*settings.cache_key, id(transport) if transport else None)
    shared = clients.get(key)
    if shared is None or shared.client.is_closed:
        client = httpx.AsyncClient(**client_options(settings), transport=transport)
        shared = SharedAsyncClient(client, asyncio.Semaphore(settings.max_connections))
        clients[key] = shared
    return shared


async def aclose_shared_clients() -> None:
    """Close the async clients of the running event loop."""
    for shared in _SHARED.pop(asyncio.get_running_loop(), {}).values():
        await shared.client.aclose()
