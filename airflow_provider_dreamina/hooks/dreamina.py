"""DreaminaHook: the only code that speaks HTTP to RunComfy's Model API."""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import email.utils
import hashlib
import io
import itertools
import logging
import os
import random
import re
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
from airflow.sdk import BaseHook
from pydantic import BaseModel, ConfigDict, ValidationError

from airflow_provider_dreamina import __version__
from airflow_provider_dreamina.exceptions import (
    DreaminaAPIError,
    DreaminaAuthError,
    DreaminaConfigurationError,
    DreaminaConnectionError,
    DreaminaDownloadError,
    DreaminaError,
    DreaminaInsufficientBalanceError,
    DreaminaInvalidInputError,
    DreaminaJobCancelledError,
    DreaminaJobFailedError,
    DreaminaNotFoundError,
    DreaminaRateLimitError,
    DreaminaRejectedInputError,
    DreaminaServerError,
    DreaminaSubmitUncertainError,
    DreaminaTimeoutError,
)
from airflow_provider_dreamina.models import (
    DEFAULT_MODEL_ID,
    IMAGE_MAX_BYTES,
    CancelOutcome,
    ImageInfo,
    ImageToVideoInput,
    RequestResult,
    RequestState,
    RequestStatus,
    SubmittedRequest,
    check_image,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://model-api.runcomfy.net"
USER_AGENT = f"airflow-provider-dreamina/{__version__}"
RUNCOMFY_OUTPUT_DOMAIN = "runcomfy.net"

_ModelT = TypeVar("_ModelT", bound=BaseModel)

_MODEL_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
# Dots are allowed inside an id but an id of dots alone would walk up the URL path.
_REQUEST_ID_PATTERN = re.compile(r"^(?!\.+$)[A-Za-z0-9._:-]{1,200}$")
# Enough to hold any JPEG or PNG header; more is read only when the header is not found in it.
_IMAGE_HEAD_BYTES = 256 * 1024
_IMAGE_FETCH_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
# A transport error before the request was written: the server certainly did not see it.
_NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_RETRYABLE_TRANSPORT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
#: The most a download hands its sink at once, so the most it holds in memory (httpx pieces are smaller).
DOWNLOAD_CHUNK_SIZE = 1024 * 1024


def _mask(secret: str) -> None:
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

    @classmethod
    def from_connection(cls, conn: Any, conn_id: str) -> DreaminaSettings:
        token = (conn.password or "").strip()
        if not token:
            raise DreaminaConfigurationError(
                f"connection '{conn_id}' has no API token: put the RunComfy token in its password field"
            )
        _mask(token)
        extra: dict[str, Any] = conn.extra_dejson or {}
        host = (conn.host or "").strip() or DEFAULT_BASE_URL
        if "://" not in host:
            # A host without a scheme is how most users type it in the form.
            host = f"https://{host}"
            if conn.port:
                host = f"{host}:{conn.port}"
        hosts = extra.get("allowed_output_hosts") or ()
        if isinstance(hosts, str):
            hosts = [part for part in re.split(r"[,\s]+", hosts) if part]
        try:
            return cls(
                conn_id=conn_id,
                base_url=host.rstrip("/"),
                token=token,
                timeout=float(extra.get("timeout", cls.timeout)),
                connect_timeout=float(extra.get("connect_timeout", cls.connect_timeout)),
                max_retries=int(extra.get("max_retries", cls.max_retries)),
                max_connections=int(extra.get("max_connections", cls.max_connections)),
                allowed_output_hosts=tuple(str(h).strip().lower() for h in hosts),
            )
        except (TypeError, ValueError) as error:
            raise DreaminaConfigurationError(
                f"connection '{conn_id}' has an extra that is not a number: {error}"
            ) from None

    @property
    def cache_key(self) -> tuple[Any, ...]:
        # The token is part of the key only as a digest, so a rotated token gets a new client.
        digest = hashlib.sha256(self.token.encode()).hexdigest()[:16]
        return (self.base_url, digest, self.timeout, self.connect_timeout, self.max_connections)

    def output_url_allowed(self, url: str) -> bool:
        """Outputs come from https://*.runcomfy.net, or from hosts the connection lists (http allowed)."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if host in self.allowed_output_hosts or (parts.netloc.lower() in self.allowed_output_hosts):
            return parts.scheme in ("https", "http")
        is_runcomfy = host == RUNCOMFY_OUTPUT_DOMAIN or host.endswith("." + RUNCOMFY_OUTPUT_DOMAIN)
        return parts.scheme == "https" and is_runcomfy


@dataclass(frozen=True)
class _Call(Generic[_ModelT]):
    """One API call, described once and sent by either the sync or the async client."""

    name: str
    method: str
    path: str
    answer: type[_ModelT]
    json: dict[str, Any] | None = None
    params: dict[str, str] | None = None
    request_id: str | None = None
    # A paid submit: resent only when the server certainly did not see it.
    paid: bool = False
    max_retries: int | None = None


def next_poll_interval(status: RequestStatus, poll_interval: float) -> float:
    """How long to wait before the next status poll: slower while queued far back, never faster."""
    if status.state is RequestState.QUEUED and status.queue_position and status.queue_position > 1:
        return poll_interval * min(1 + (status.queue_position - 1) / 2, 6.0)
    return poll_interval


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class DreaminaHook(BaseHook):
    """Talk to Dreamina 3.0 Pro image-to-video on RunComfy's Model API, sync or async.

    :param dreamina_conn_id: connection of type ``dreamina``: API token in the password, base URL
        in the host (default ``https://model-api.runcomfy.net``).
    :param max_retries: attempts after the first for reads and cancels (and for submits that
        certainly did not arrive); overrides the connection's ``max_retries`` extra.
    :param retry_backoff: first backoff in seconds; doubles each attempt, with jitter.
    :param max_retry_wait: cap in seconds on any single wait, ``Retry-After`` included.
    :param transport: httpx transport for the sync clients (tests and proxies).
    :param async_transport: httpx transport for the async clients.
    """

    conn_name_attr = "dreamina_conn_id"
    default_conn_name = "dreamina_default"
    conn_type = "dreamina"
    hook_name = "Dreamina (RunComfy)"

    def __init__(
        self,
        dreamina_conn_id: str = default_conn_name,
        *,
        max_retries: int | None = None,
        retry_backoff: float = 1.0,
        max_retry_wait: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__()
        self.dreamina_conn_id = dreamina_conn_id
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.max_retry_wait = max_retry_wait
        self._transport = transport
        self._async_transport = async_transport
        self._settings: DreaminaSettings | None = None
        self._client: httpx.Client | None = None

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Connection form for Airflow before 3.2 (later versions read the provider info)."""
        return {
            "hidden_fields": ["schema", "login", "port"],
            "relabeling": {"host": "Base URL", "password": "API token"},
            "placeholders": {
                "host": DEFAULT_BASE_URL,
                "password": "RunComfy API token",
                "extra": '{"allowed_output_hosts": [], "timeout": 30, "max_retries": 5}',
            },
        }

    # -- connection and clients -------------------------------------------------------------

    @property
    def settings(self) -> DreaminaSettings:
        """The connection's settings, read once (sync lookup: not for an event loop)."""
        if self._settings is None:
            conn = self.get_connection(self.dreamina_conn_id)
            self._settings = DreaminaSettings.from_connection(conn, self.dreamina_conn_id)
        return self._settings

    async def aget_settings(self) -> DreaminaSettings:
        """The connection's settings, read without blocking the event loop.

        Hooks on one event loop share a reading of a connection for ``SETTINGS_TTL_SECONDS``: a
        triggerer that starts a batch of waits looks the connection up once, not once per wait
        (each lookup is a round trip to the triggerer's supervisor). A later reading picks up an
        edited connection; concurrent first lookups wait for the same one.
        """
        if self._settings is None:
            loop = asyncio.get_running_loop()
            readings = _ASYNC_SETTINGS.setdefault(loop, {})
            now = time.monotonic()
            reading = readings.get(self.dreamina_conn_id)
            if reading is None or reading.stale(now):
                reading = _SettingsReading(now, loop.create_task(self._aread_settings()))
                readings[self.dreamina_conn_id] = reading
            # Shielded: one waiter being cancelled must not cancel the lookup the others share.
            self._settings = await asyncio.shield(reading.task)
        return self._settings

    async def _aread_settings(self) -> DreaminaSettings:
        conn = await self.aget_connection(self.dreamina_conn_id)
        return DreaminaSettings.from_connection(conn, self.dreamina_conn_id)

    def _client_options(self, settings: DreaminaSettings) -> dict[str, Any]:
        """The one description of a RunComfy client; both the sync and async clients use it."""
        return {
            "base_url": settings.base_url,
            "headers": {
                "Authorization": f"Bearer {settings.token}",
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
            },
            # The pool timeout is long because a triggerer may queue a thousand polls on one pool.
            "timeout": httpx.Timeout(settings.timeout, connect=settings.connect_timeout, pool=300.0),
            "limits": httpx.Limits(
                max_connections=settings.max_connections,
                max_keepalive_connections=settings.max_connections,
            ),
            "follow_redirects": False,
        }

    def get_conn(self) -> httpx.Client:
        """The hook's sync client, built on first use and kept until :meth:`close`."""
        if self._client is None:
            self._client = httpx.Client(**self._client_options(self.settings), transport=self._transport)
        return self._client

    async def aget_conn(self) -> httpx.AsyncClient:
        """An async client shared by every hook on this event loop with the same connection."""
        return (await self._ashared_client()).client

    async def _ashared_client(self) -> _SharedAsyncClient:
        settings = await self.aget_settings()
        loop = asyncio.get_running_loop()
        clients = _ASYNC_CLIENTS.setdefault(loop, {})
        key = (*settings.cache_key, id(self._async_transport) if self._async_transport else None)
        shared = clients.get(key)
        if shared is None or shared.client.is_closed:
            client = httpx.AsyncClient(**self._client_options(settings), transport=self._async_transport)
            shared = _SharedAsyncClient(client, asyncio.Semaphore(settings.max_connections))
            clients[key] = shared
        return shared

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> DreaminaHook:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @staticmethod
    async def aclose_shared_clients() -> None:
        """Close the async clients of the running event loop (for tests and clean shutdowns)."""
        loop = asyncio.get_running_loop()
        _ASYNC_SETTINGS.pop(loop, None)
        clients = _ASYNC_CLIENTS.pop(loop, {})
        for shared in clients.values():
            await shared.client.aclose()

    # -- the API ----------------------------------------------------------------------------

    def submit(
        self, input: ImageToVideoInput, model_id: str = DEFAULT_MODEL_ID, *, validate_image: bool = True
    ) -> SubmittedRequest:
        """Create a paid generation request; its answer holds the new ``request_id``.

        The image is checked (and, when it is not a URL, read and inlined) before anything is
        paid for. A submit is resent only when it certainly did not reach RunComfy; otherwise
        :class:`DreaminaSubmitUncertainError` is raised.
        """
        image_uri = self.prepare_image(input.image_source, validate=validate_image)
        return self._request(self._submit_call(input, model_id, image_uri))

    async def asubmit(
        self, input: ImageToVideoInput, model_id: str = DEFAULT_MODEL_ID, *, validate_image: bool = True
    ) -> SubmittedRequest:
        """Async :meth:`submit`."""
        image_uri = await self.aprepare_image(input.image_source, validate=validate_image)
        return await self._arequest(self._submit_call(input, model_id, image_uri))

    def get_status(self, request_id: str) -> RequestStatus:
        return self._request(self._status_call(request_id))

    async def aget_status(self, request_id: str) -> RequestStatus:
        return await self._arequest(self._status_call(request_id))

    def get_result(self, request_id: str, *, include_cost: bool = False) -> RequestResult:
        """The request's result; while it runs, only its current state."""
        return self._request(self._result_call(request_id, include_cost))

    async def aget_result(self, request_id: str, *, include_cost: bool = False) -> RequestResult:
        return await self._arequest(self._result_call(request_id, include_cost))

    def cancel(self, request_id: str) -> bool:
        """Ask RunComfy to cancel; True when it did (only queued requests can be cancelled)."""
        return self._cancelled(self._request(self._cancel_call(request_id)))

    async def acancel(self, request_id: str) -> bool:
        return self._cancelled(await self._arequest(self._cancel_call(request_id)))

    def wait(
        self, request_id: str, poll_interval: float = 10.0, timeout: float | None = None
    ) -> RequestResult:
        """Poll until the request finishes and return its result.

        Raises :class:`DreaminaJobFailedError`, :class:`DreaminaJobCancelledError` or
        :class:`DreaminaTimeoutError` (after ``timeout`` seconds) with what RunComfy reported.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: tuple[RequestState, int | None] | None = None
        while True:
            status = self.get_status(request_id)
            if (status.state, status.queue_position) != seen:
                seen = (status.state, status.queue_position)
                log_state_change(request_id, status)
            if status.state.is_terminal:
                result = self.get_result(request_id, include_cost=True)
                if result.state.is_terminal:
                    return raise_for_result(result)
            delay = next_poll_interval(status, poll_interval)
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DreaminaTimeoutError(
                        f"request {request_id} was still {status.state.value} after {timeout:g} s",
                        request_id=request_id,
                    )
                delay = min(delay, remaining)
            time.sleep(delay)

    def test_connection(self) -> tuple[bool, str]:
        """One cheap authenticated call: tells a rejected token from an unreachable server."""
        # Asking for a request id that cannot exist proves the token without creating anything.
        call = dataclasses.replace(self._status_call("airflow-connection-test"), max_retries=0)
        try:
            self._request(call)
        except DreaminaNotFoundError:
            pass
        except DreaminaError as error:
            return False, str(error)
        return True, f"Connected to {self.settings.base_url}; the API token was accepted."

    # -- outputs ----------------------------------------------------------------------------

    def download_output(
        self,
        url: str,
        sink: OutputSink,
        *,
        request_id: str | None = None,
        index: int = 0,
        max_bytes: int | None = None,
        chunk_size: int = DOWNLOAD_CHUNK_SIZE,
    ) -> DownloadedOutput:
        """Stream one output into ``sink``, counted against ``Content-Length`` and hashed with SHA-256.

        Memory stays constant: each chunk goes to ``sink`` as it arrives. A transfer broken midway
        resumes with an HTTP ``Range`` request (or starts again from zero when the server cannot
        resume); failures are retried with backoff, at most ``max_retries`` times. With
        ``request_id``, an output URL answering 403, 404 or 410 (expired) is replaced once by a
        fresh URL from a new result, at the same ``index``. URLs must pass
        :meth:`DreaminaSettings.output_url_allowed`, and no API token is ever sent to them.

        Raises :class:`DreaminaDownloadError` (naming the URL without its query string); ``sink``
        then holds an incomplete file, which the caller must discard.

        :param sink: receives the bytes; ``restart()`` asks it to forget what it received so far.
        :param max_bytes: refuse an output larger than this, from its headers or while streaming.
        """
        settings = self.settings
        _check_output_url(url, settings)
        retries = self.max_retries if self.max_retries is not None else settings.max_retries
        transfer = _Transfer(url, max_bytes=max_bytes, chunk_size=chunk_size)
        failures = 0
        refreshed = False
        with self._download_client(settings) as client:
            while not transfer.done:
                received_before = transfer.offset
                try:
                    self._download_attempt(client, transfer, sink)
                except _OutputURLExpired as expired:
                    if request_id is None or refreshed:
                        fresh = f" even with a fresh URL from request {request_id}" if refreshed else ""
                        raise DreaminaDownloadError(
                            f"output {transfer.safe_url} answered HTTP {expired.status_code}{fresh}: the URL "
                            "has expired or the output is gone; fetch a new result and download again",
                            url=transfer.safe_url,
                        ) from None
                    refreshed = True
                    log.info(
                        "Output %s answered HTTP %d (expired URL); fetching a fresh URL from request %s",
                        transfer.safe_url,
                        expired.status_code,
                        request_id,
                    )
                    transfer.url = self._fresh_output_url(request_id, index, settings)
                    continue
                except _TransferInterrupted as interruption:
                    reason, retry_after = interruption.reason, interruption.retry_after
                else:
                    if transfer.done or transfer.offset > received_before:
                        continue
                    reason, retry_after = "the server sent no bytes", None
                failures += 1
                if failures > retries:
                    raise DreaminaDownloadError(
                        f"download of {transfer.safe_url} failed after {failures} attempts ({reason})",
                        url=transfer.safe_url,
                        retryable=True,
                    )
                delay = self._backoff(failures - 1, retry_after)
                log.warning(
                    "Download of %s interrupted at %d bytes (%s); %s in %.1f s (retry %d of %d)",
                    transfer.safe_url,
                    transfer.offset,
                    reason,
                    "resuming" if transfer.offset and transfer.resumable else "starting again",
                    delay,
                    failures,
                    retries,
                )
                time.sleep(delay)
        return transfer.outcome(attempts=failures + 1, refreshed=refreshed)

    def _download_client_options(self, settings: DreaminaSettings) -> dict[str, Any]:
        """Options of the client that fetches outputs: no base URL and, above all, no API token."""
        options = self._client_options(settings)
        options.pop("base_url")
        options["headers"] = {
            name: value
            for name, value in options["headers"].items()
            if name.lower() not in ("authorization", "accept")
        }
        # Byte counts and resume offsets must refer to the stored bytes, so no compression.
        options["headers"]["Accept-Encoding"] = "identity"
        options["timeout"] = httpx.Timeout(settings.timeout, connect=settings.connect_timeout)
        options["limits"] = httpx.Limits(max_connections=4, max_keepalive_connections=4)
        return options

    def _download_client(self, settings: DreaminaSettings) -> httpx.Client:
        _redact_httpx_log_queries()
        return httpx.Client(**self._download_client_options(settings), transport=self._transport)

    def _download_attempt(self, client: httpx.Client, transfer: _Transfer, sink: OutputSink) -> None:
        """One GET of the output (following checked redirects), from where the last one stopped."""
        headers = transfer.request_headers(sink)
        target = transfer.url
        for _hop in range(_MAX_OUTPUT_REDIRECTS + 1):
            try:
                with client.stream("GET", target, headers=headers) as response:
                    if not response.is_redirect:
                        transfer.receive(response, sink)
                        return
                    target = str(response.url.join(response.headers.get("Location", "")))
                    _check_output_url(target, self.settings, redirected_from=transfer.safe_url)
            except httpx.TransportError as error:
                raise _TransferInterrupted(
                    f"{type(error).__name__}: {_without_queries(str(error)) or 'no detail'}"
                ) from None
        raise DreaminaDownloadError(
            f"output {transfer.safe_url} redirected more than {_MAX_OUTPUT_REDIRECTS} times",
            url=transfer.safe_url,
        )

    def _fresh_output_url(self, request_id: str, index: int, settings: DreaminaSettings) -> str:
        urls = self.get_result(request_id).output_urls
        if index >= len(urls):
            raise DreaminaDownloadError(
                f"the fresh result of request {request_id} lists {len(urls)} output(s); output "
                f"#{index + 1} is gone"
            )
        _check_output_url(urls[index], settings)
        return urls[index]

    # -- image preflight --------------------------------------------------------------------

    def prepare_image(self, source: str, *, validate: bool = True) -> str:
        """The image URI to send: URLs and ``data:`` URIs as they are, anything else inlined.

        With ``validate`` the image is checked against every rule of the schema first; a remote
        image is streamed only as far as the check needs (never beyond 4.7 MB).
        """
        kind = _image_source_kind(source)
        if kind == "url":
            if validate:
                try:
                    with (
                        httpx.Client(
                            timeout=_IMAGE_FETCH_TIMEOUT, follow_redirects=True, transport=self._transport
                        ) as client,
                        client.stream("GET", source, headers={"User-Agent": USER_AGENT}) as response,
                    ):
                        probe = _ImageProbe(source, response)
                        for chunk in response.iter_bytes():
                            if probe.feed(chunk):
                                break
                        probe.finish()
                except httpx.HTTPError as error:
                    raise _image_unreachable(source, error) from None
            return source
        if kind == "data":
            _check_data_uri(source, validate=validate)
            return source
        return _inline_image(source, validate=validate)

    async def aprepare_image(self, source: str, *, validate: bool = True) -> str:
        """Async :meth:`prepare_image`; files are read in a worker thread."""
        kind = _image_source_kind(source)
        if kind == "url":
            if validate:
                try:
                    async with (
                        httpx.AsyncClient(
                            timeout=_IMAGE_FETCH_TIMEOUT,
                            follow_redirects=True,
                            transport=self._async_transport,
                        ) as client,
                        client.stream("GET", source, headers={"User-Agent": USER_AGENT}) as response,
                    ):
                        probe = _ImageProbe(source, response)
                        async for chunk in response.aiter_bytes():
                            if probe.feed(chunk):
                                break
                        probe.finish()
                except httpx.HTTPError as error:
                    raise _image_unreachable(source, error) from None
            return source
        if kind == "data":
            _check_data_uri(source, validate=validate)
            return source
        return await asyncio.to_thread(_inline_image, source, validate=validate)

    # -- request building and answer parsing, shared by sync and async ----------------------

    def _submit_call(
        self, input: ImageToVideoInput, model_id: str, image_uri: str
    ) -> _Call[SubmittedRequest]:
        if not _MODEL_ID_PATTERN.match(model_id):
            raise DreaminaInvalidInputError(
                f"model_id {model_id!r} is not a RunComfy model id such as {DEFAULT_MODEL_ID!r}",
                field="model_id",
            )
        image = input.image_source if image_uri == input.image_source else "(inlined as a data: URI)"
        log.info(
            "Submitting to %s: prompt of %d characters, image %s, seed %d, frames %d",
            model_id,
            len(input.prompt),
            _short(image),
            input.seed,
            input.frames,
        )
        return _Call(
            name="submit",
            method="POST",
            path=f"/v1/models/{model_id}",
            answer=SubmittedRequest,
            json=input.to_request_body(image_uri),
            paid=True,
        )

    def _status_call(self, request_id: str) -> _Call[RequestStatus]:
        return _Call(
            "status", "GET", _request_path(request_id, "status"), RequestStatus, request_id=request_id
        )

    def _result_call(self, request_id: str, include_cost: bool) -> _Call[RequestResult]:
        return _Call(
            "result",
            "GET",
            _request_path(request_id, "result"),
            RequestResult,
            params={"include_cost": "true"} if include_cost else None,
            request_id=request_id,
        )

    def _cancel_call(self, request_id: str) -> _Call[CancelOutcome]:
        return _Call(
            "cancel", "POST", _request_path(request_id, "cancel"), CancelOutcome, request_id=request_id
        )

    @staticmethod
    def _cancelled(outcome: CancelOutcome) -> bool:
        if outcome.cancelled:
            log.info("Request %s was cancelled", outcome.request_id)
        else:
            log.info(
                "Request %s could not be cancelled (%s): RunComfy cancels only queued requests",
                outcome.request_id,
                outcome.outcome or outcome.status,
            )
        return outcome.cancelled

    def _request(self, call: _Call[_ModelT]) -> _ModelT:
        client = self.get_conn()
        for attempt in itertools.count():
            try:
                response = client.request(call.method, call.path, json=call.json, params=call.params)
            except httpx.HTTPError as error:
                delay = self._retry_delay_after_error(call, attempt, error)
            else:
                failure = self._failure(call, response)
                if failure is None:
                    return self._parse(call, response)
                delay = self._retry_delay_after_failure(call, attempt, failure)
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _arequest(self, call: _Call[_ModelT]) -> _ModelT:
        shared = await self._ashared_client()
        for attempt in itertools.count():
            try:
                async with shared.slots:
                    response = await shared.client.request(
                        call.method, call.path, json=call.json, params=call.params
                    )
            except httpx.HTTPError as error:
                delay = self._retry_delay_after_error(call, attempt, error)
            else:
                failure = self._failure(call, response)
                if failure is None:
                    return self._parse(call, response)
                delay = self._retry_delay_after_failure(call, attempt, failure)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _retries_allowed(self, call: _Call[Any]) -> int:
        if call.max_retries is not None:
            return call.max_retries
        if self.max_retries is not None:
            return self.max_retries
        return self._settings.max_retries if self._settings else DreaminaSettings.max_retries

    def _backoff(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_wait)
        ceiling = min(self.max_retry_wait, self.retry_backoff * 2.0**attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _retry_delay_after_error(self, call: _Call[Any], attempt: int, error: httpx.HTTPError) -> float:
        """Seconds to wait before retrying after a transport error; raises when it must not retry."""
        reason = f"{type(error).__name__}: {self._redact(str(error)) or 'no detail'}"
        if call.paid and not isinstance(error, _NOT_SENT_ERRORS):
            raise self._submit_uncertain(call, reason) from None
        retryable = isinstance(error, (*_NOT_SENT_ERRORS, *_RETRYABLE_TRANSPORT_ERRORS))
        base_url = self._settings.base_url if self._settings else "RunComfy"
        if not retryable or attempt >= self._retries_allowed(call):
            tries = f" after {attempt + 1} attempts" if attempt else ""
            raise DreaminaConnectionError(
                f"{call.name} call to {base_url} failed{tries}: {reason}; check the host of connection "
                f"'{self.dreamina_conn_id}' and the network"
            ) from None
        delay = self._backoff(attempt)
        self._log_retry(call, attempt, reason, delay)
        return delay

    def _retry_delay_after_failure(self, call: _Call[Any], attempt: int, failure: DreaminaAPIError) -> float:
        """Seconds to wait before retrying after an error answer; raises when it must not retry."""
        if call.paid and isinstance(failure, DreaminaServerError):
            raise self._submit_uncertain(call, str(failure)) from None
        if not failure.retryable or attempt >= self._retries_allowed(call):
            raise failure
        retry_after = failure.retry_after if isinstance(failure, DreaminaRateLimitError) else None
        delay = self._backoff(attempt, retry_after)
        self._log_retry(call, attempt, f"HTTP {failure.status_code}", delay)
        return delay

    def _log_retry(self, call: _Call[Any], attempt: int, reason: str, delay: float) -> None:
        target = f" for request {call.request_id}" if call.request_id else ""
        log.warning(
            "%s%s failed (%s); retrying in %.1f s (retry %d of %d)",
            call.name,
            target,
            reason,
            delay,
            attempt + 1,
            self._retries_allowed(call),
        )

    def _submit_uncertain(self, call: _Call[Any], reason: str) -> DreaminaSubmitUncertainError:
        model_id = call.path.removeprefix("/v1/models/")
        return DreaminaSubmitUncertainError(
            f"submit to {model_id} may have created a paid request, but its answer was lost ({reason}). "
            "It was not resent, so as not to pay twice: look for a new request in the RunComfy "
            "dashboard before running this task again.",
            model_id=model_id,
        )

    def _failure(self, call: _Call[Any], response: httpx.Response) -> DreaminaAPIError | None:
        """The error an answer stands for, or None when it is a success."""
        try:
            body = response.json()
        except ValueError:
            body = None
        has_error_code = isinstance(body, dict) and body.get("error_code") not in (None, 0, "")
        if response.is_success and not has_error_code:
            return None
        status = response.status_code
        body = body if isinstance(body, dict) else {}
        try:
            error_code: int | None = int(body["error_code"]) if has_error_code else None
        except (TypeError, ValueError):
            error_code = None
        message = _short(self._redact(_error_message(body) or response.reason_phrase or "no message"), 500)
        common: dict[str, Any] = {
            "status_code": status,
            "error_code": error_code,
            "request_id": call.request_id,
            "detail": body.get("detail"),
        }
        conn = f"connection '{self.dreamina_conn_id}'"
        if status == 401 or error_code == 400004:
            return DreaminaAuthError(
                f"token rejected: check the password (API token) of {conn} ({message})", **common
            )
        if status == 403 or error_code == 403001:
            return DreaminaAuthError(
                f"permission denied: the API token of {conn} may not use this model or request ({message})",
                **common,
            )
        if status == 402 or error_code == 400002:
            return DreaminaInsufficientBalanceError(
                f"insufficient balance on the RunComfy account of {conn}: top it up, then run the task "
                f"again ({message})",
                **common,
            )
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return DreaminaRateLimitError(
                f"rate limited by RunComfy ({message})", retry_after=retry_after, **common
            )
        if status >= 500 or error_code == 500001:
            return DreaminaServerError(f"RunComfy server error on {call.name} ({message})", **common)
        if status == 404 or error_code == 404001:
            subject = f"request {call.request_id}" if call.request_id else "the model id"
            return DreaminaNotFoundError(
                f"{subject} is unknown to RunComfy or has expired ({message})", **common
            )
        if status in (400, 422) or error_code in (400001, 422001):
            return DreaminaRejectedInputError(
                f"RunComfy rejected the input: {message}", field=_detail_field(body.get("detail")), **common
            )
        return DreaminaAPIError(f"RunComfy answered {call.name} with an error ({message})", **common)

    def _parse(self, call: _Call[_ModelT], response: httpx.Response) -> _ModelT:
        try:
            return call.answer.model_validate(response.json())
        except (ValueError, ValidationError) as error:
            raise DreaminaAPIError(
                f"RunComfy answered {call.name} with a body this provider cannot read: {_short(str(error))}",
                status_code=response.status_code,
                request_id=call.request_id,
            ) from None

    def _redact(self, text: str) -> str:
        token = self._settings.token if self._settings else None
        return text.replace(token, "***") if token else text


@dataclass
class _SharedAsyncClient:
    """The async client of one event loop and connection, and the slots its requests queue for."""

    client: httpx.AsyncClient
    # At most max_connections requests are inside httpx at once; the others wait here, in order.
    # httpcore rescans every request queued in its pool against every connection on each request
    # event, so a thousand waits queued inside the pool cost milliseconds of CPU per poll.
    slots: asyncio.Semaphore


#: Seconds an event loop reuses a connection it has read (see ``DreaminaHook.aget_settings``).
SETTINGS_TTL_SECONDS = 30.0


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


_ASYNC_SETTINGS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _SettingsReading]] = (
    weakref.WeakKeyDictionary()
)

# One async client per event loop and connection: a triggerer running a thousand waits keeps
# one bounded pool instead of a client (and its sockets) per wait.
_ASYNC_CLIENTS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[Any, ...], _SharedAsyncClient]
] = weakref.WeakKeyDictionary()


def raise_for_result(result: RequestResult) -> RequestResult:
    """Return a succeeded result; raise the failed or cancelled error otherwise."""
    if result.state is RequestState.SUCCEEDED:
        return result
    if result.state is RequestState.CANCELLED:
        raise DreaminaJobCancelledError(
            f"request {result.request_id} was cancelled", request_id=result.request_id, result=result
        )
    if result.state is RequestState.FAILED:
        reason = result.error_message or "RunComfy gave no reason"
        raise DreaminaJobFailedError(
            f"request {result.request_id} failed: {reason}", request_id=result.request_id, result=result
        )
    raise DreaminaError(f"request {result.request_id} has not finished (status {result.status!r})")


def log_state_change(request_id: str, status: RequestStatus) -> None:
    if status.state is RequestState.QUEUED and status.queue_position is not None:
        log.info("Request %s is queued at position %d", request_id, status.queue_position)
    else:
        log.info("Request %s: %s (RunComfy status %r)", request_id, status.state.value, status.status)


def _request_path(request_id: str, action: str) -> str:
    if not isinstance(request_id, str) or not _REQUEST_ID_PATTERN.match(request_id):
        raise DreaminaInvalidInputError(
            f"request_id {request_id!r} is not a RunComfy request id (letters, digits, '-', '_', '.', ':')",
            field="request_id",
        )
    return f"/v1/requests/{quote(request_id, safe='')}/{action}"


def _error_message(body: dict[str, Any]) -> str | None:
    for key in ("error_message", "message", "error", "detail"):
        value = body.get(key)
        if not value:
            continue
        if isinstance(value, str):
            return value
        if isinstance(value, dict):
            return str(value.get("message") or value.get("msg") or value)
        if isinstance(value, list):
            parts = []
            for item in value:
                if isinstance(item, dict):
                    where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                    text = str(item.get("msg") or item.get("message") or item)
                    parts.append(f"{where}: {text}" if where else text)
                else:
                    parts.append(str(item))
            return "; ".join(parts)
        return str(value)
    return None


def _detail_field(detail: Any) -> str | None:
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        location = [str(part) for part in detail[0].get("loc", ()) if part != "body"]
        return location[-1] if location else None
    return None


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- image preflight helpers ------------------------------------------------------------------


def _image_source_kind(source: str) -> str:
    lowered = source[:16].lower()
    if lowered.startswith(("https://", "http://")):
        return "url"
    if lowered.startswith("data:"):
        return "data"
    return "storage"


def _image_unreachable(source: str, error: httpx.HTTPError) -> DreaminaConnectionError:
    return DreaminaConnectionError(
        f"image_urls[0] ({_short(source)}) could not be fetched for its preflight check: "
        f"{type(error).__name__}: {error}; nothing was submitted"
    )


class _ImageProbe:
    """Reads an image stream only as far as the checks need, never past the size limit."""

    def __init__(self, source: str, response: httpx.Response) -> None:
        self.source = source
        if response.status_code >= 400:
            raise DreaminaInvalidInputError(
                f"image_urls[0] ({source}): the image could not be fetched (HTTP {response.status_code})",
                field="image_urls",
            )
        length = response.headers.get("Content-Length")
        self.declared_size = int(length) if length and length.isdigit() else None
        self.buffer = bytearray()
        self._next_attempt = _IMAGE_HEAD_BYTES
        if self.declared_size is not None and self.declared_size >= IMAGE_MAX_BYTES:
            # Refuse from the header alone: no need to download an oversized image.
            check_image(b"", self.declared_size, source=source)

    def feed(self, chunk: bytes) -> bool:
        """Take the next chunk; True once nothing more needs to be read."""
        self.buffer += chunk
        if len(self.buffer) >= IMAGE_MAX_BYTES:
            check_image(b"", len(self.buffer), source=self.source)
        if self.declared_size is None or len(self.buffer) < self._next_attempt:
            return False
        self._next_attempt += _IMAGE_HEAD_BYTES
        return _header_readable(bytes(self.buffer))

    def finish(self) -> ImageInfo:
        size = self.declared_size if self.declared_size is not None else len(self.buffer)
        return check_image(bytes(self.buffer), size, source=self.source)


def _header_readable(head: bytes) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(head)):
            return True
    except (UnidentifiedImageError, OSError, ValueError):
        return False


def _check_data_uri(uri: str, *, validate: bool) -> None:
    header, sep, payload = uri.partition(",")
    if not sep or not header.lower().startswith("data:image/") or not header.lower().endswith(";base64"):
        raise DreaminaInvalidInputError(
            "image_urls[0] is a data: URI that is not base64 image data (expected data:image/png;base64,...)",
            field="image_urls",
        )
    if not validate:
        return
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise DreaminaInvalidInputError(
            "image_urls[0] is a data: URI whose base64 payload does not decode", field="image_urls"
        ) from None
    check_image(raw[:_IMAGE_HEAD_BYTES], len(raw), source="data: URI")


def _inline_image(source: str, *, validate: bool) -> str:
    """Read a local or object-storage image and return it as a ``data:`` URI."""
    raw, size = _read_image_source(source)
    head = raw[:_IMAGE_HEAD_BYTES]
    if validate:
        info = check_image(head, size, source=source)
        media_type = info.media_type
    else:
        media_type = _sniff_media_type(head)
    return f"data:{media_type};base64,{base64.b64encode(raw).decode('ascii')}"


def _sniff_media_type(head: bytes) -> str:
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    return "image/png"


def _read_image_source(source: str) -> tuple[bytes, int]:
    """The bytes of an image (at most one over the size limit) and its true size in bytes."""
    limit = IMAGE_MAX_BYTES + 1
    try:
        if "://" not in source or source.lower().startswith("file://"):
            path = Path(source[len("file://") :] if source.lower().startswith("file://") else source)
            with path.expanduser().open("rb") as handle:
                return handle.read(limit), os.fstat(handle.fileno()).st_size
        from airflow.sdk import ObjectStoragePath

        storage_path = ObjectStoragePath(source)
        with storage_path.open("rb") as handle:  # type: ignore[no-untyped-call]
            data: bytes = handle.read(limit)
        size = len(data) if len(data) < limit else int(storage_path.stat().st_size)
        return data, size
    except FileNotFoundError:
        raise DreaminaInvalidInputError(
            f"image_urls[0] ({source}): no such file", field="image_urls"
        ) from None
    except (OSError, ValueError) as error:
        raise DreaminaInvalidInputError(
            f"image_urls[0] ({source}): the image could not be read: {error}", field="image_urls"
        ) from None


# -- output download helpers ------------------------------------------------------------------

_MAX_OUTPUT_REDIRECTS = 5
_URL_WITH_QUERY = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#'\"<>]*)[?#][^\s'\"<>]*")
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


class OutputSink(Protocol):
    """Where :meth:`DreaminaHook.download_output` puts the bytes of an output."""

    def write(self, chunk: bytes, /) -> object: ...

    def restart(self) -> None:
        """Forget every byte received so far: the download starts again from zero."""


class DownloadedOutput(BaseModel):
    """What one verified download delivered."""

    model_config = ConfigDict(frozen=True)

    #: The output URL without its query string (signed URLs carry their secret there).
    source_url: str
    size_bytes: int
    sha256: str
    content_type: str | None = None
    attempts: int = 1
    #: How many times the transfer went on from where it broke, with an HTTP Range request.
    resumed: int = 0
    #: How many times it had to start again from zero.
    restarted: int = 0
    #: Whether the URL expired and was replaced by a fresh one.
    refreshed: bool = False


def output_url_without_query(url: str) -> str:
    """The URL as it may be logged or stored: without query string, fragment or user info."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _without_queries(text: str) -> str:
    return _URL_WITH_QUERY.sub(r"\1", text)


def _check_output_url(url: str, settings: DreaminaSettings, *, redirected_from: str | None = None) -> None:
    if settings.output_url_allowed(url):
        return
    safe_url = output_url_without_query(url)
    via = f" (redirected from {redirected_from})" if redirected_from else ""
    raise DreaminaDownloadError(
        f"refusing to download output {safe_url}{via}: outputs are fetched only over https from "
        f"*.{RUNCOMFY_OUTPUT_DOMAIN} or from hosts listed in the extra 'allowed_output_hosts' of "
        f"connection '{settings.conn_id}'",
        url=safe_url,
    )


class _OutputURLExpired(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


class _TransferInterrupted(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _Transfer:
    """One output download across its attempts: position, running hash, what the server declared."""

    def __init__(self, url: str, *, max_bytes: int | None, chunk_size: int) -> None:
        self.url = url
        self.max_bytes = max_bytes
        self.chunk_size = chunk_size
        self.offset = 0
        self.sha256 = hashlib.sha256()
        self.expected_total: int | None = None
        self.content_type: str | None = None
        # ETag or Last-Modified: a resumed request asks for the rest of *this* file only.
        self.validator: str | None = None
        self.resumable = True
        self.resumed = 0
        self.restarted = 0
        self.done = False

    @property
    def safe_url(self) -> str:
        return output_url_without_query(self.url)

    def request_headers(self, sink: OutputSink) -> dict[str, str]:
        if self.offset and not self.resumable:
            self.restart(sink)
        if not self.offset:
            return {}
        headers = {"Range": f"bytes={self.offset}-"}
        if self.validator:
            headers["If-Range"] = self.validator
        return headers

    def restart(self, sink: OutputSink) -> None:
        sink.restart()
        self.offset = 0
        self.sha256 = hashlib.sha256()
        self.expected_total = None
        self.restarted += 1

    def receive(self, response: httpx.Response, sink: OutputSink) -> None:
        """Append the body of one answer to ``sink``; raises to ask for another attempt."""
        status = response.status_code
        if status in (403, 404, 410):
            raise _OutputURLExpired(status)
        if status in (408, 425, 429) or status >= 500:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise _TransferInterrupted(f"HTTP {status}", retry_after)
        if status == 416:
            asked_for = self.offset
            self.restart(sink)
            raise _TransferInterrupted(f"HTTP 416: the server cannot resume at byte {asked_for}")
        if status not in (200, 206):
            raise DreaminaDownloadError(f"output {self.safe_url} answered HTTP {status}", url=self.safe_url)
        headers = response.headers
        encoded = headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")
        length = None if encoded else _header_int(headers.get("Content-Length"))
        if status == 206:
            length = self._continue_range(headers.get("Content-Range"), length, sink)
        else:
            if self.offset:
                log.info("%s ignored the Range request; downloading it again from the start", self.safe_url)
                self.restart(sink)
            self.expected_total = length
            if encoded or headers.get("Accept-Ranges", "").strip().lower() == "none":
                self.resumable = False
        self.validator = self.validator or _range_validator(headers)
        self.content_type = self.content_type or headers.get("Content-Type")
        end = None if length is None else self.offset + length
        self._check_size(self.expected_total if self.expected_total is not None else end, declared=True)
        # Pieces go to the sink as the network delivers them (httpx reads at most 64 KiB at a
        # time; a bigger piece is split at chunk_size): memory holds one piece, and a broken
        # transfer keeps every byte that arrived. Gathering pieces into chunks first copied every
        # byte twice into freshly allocated memory, a fifth of the time (BENCHMARKS.md, download).
        for piece in response.iter_bytes():
            self._check_size(self.offset + len(piece), declared=False)
            for start in range(0, len(piece), self.chunk_size):
                part = piece[start : start + self.chunk_size]  # the piece itself when it fits
                sink.write(part)
                self.sha256.update(part)
                self.offset += len(part)
        if end is not None and self.offset < end:
            total = self.expected_total if self.expected_total is not None else end
            raise _TransferInterrupted(f"the connection closed after {self.offset} of {total} bytes")
        self.done = self.expected_total is None or self.offset >= self.expected_total

    def _continue_range(self, content_range: str | None, length: int | None, sink: OutputSink) -> int | None:
        match = _CONTENT_RANGE.match(content_range or "")
        start, last = (int(match.group(1)), int(match.group(2))) if match else (-1, -1)
        total = int(match.group(3)) if match and match.group(3) != "*" else None
        changed = self.expected_total is not None and total is not None and total != self.expected_total
        if start != self.offset or changed:
            asked_for = self.offset
            self.restart(sink)
            raise _TransferInterrupted(
                f"asked for the bytes from {asked_for}, the server sent "
                f"{content_range or 'no Content-Range'}; starting again from zero"
            )
        if self.offset:
            self.resumed += 1
        if total is not None:
            self.expected_total = total
        return length if length is not None else last - start + 1

    def _check_size(self, size: int | None, *, declared: bool) -> None:
        if self.max_bytes is None or size is None or size <= self.max_bytes:
            return
        how = f"is {size} bytes" if declared else f"exceeded {self.max_bytes} bytes while streaming"
        raise DreaminaDownloadError(
            f"output {self.safe_url} {how}; max_bytes allows {self.max_bytes}",
            url=self.safe_url,
        )

    def outcome(self, *, attempts: int, refreshed: bool) -> DownloadedOutput:
        return DownloadedOutput(
            source_url=self.safe_url,
            size_bytes=self.offset,
            sha256=self.sha256.hexdigest(),
            content_type=self.content_type,
            attempts=attempts,
            resumed=self.resumed,
            restarted=self.restarted,
            refreshed=refreshed,
        )


def _header_int(value: str | None) -> int | None:
    value = (value or "").strip()
    return int(value) if value.isdigit() else None


def _range_validator(headers: httpx.Headers) -> str | None:
    # If-Range accepts only a strong ETag; a weak one would always restart the download.
    etag = (headers.get("ETag") or "").strip()
    if etag and not etag.startswith("W/"):
        return etag
    modified: str | None = headers.get("Last-Modified")
    return modified


class _QueryRedactingFilter(logging.Filter):
    """Drops query strings from httpx's request log lines: signed output URLs carry secrets there."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(arg, httpx.URL) and arg.query for arg in args):
            record.args = tuple(
                output_url_without_query(str(arg)) if isinstance(arg, httpx.URL) else arg for arg in args
            )
        return True


def _redact_httpx_log_queries() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(existing, _QueryRedactingFilter) for existing in logger.filters):
        logger.addFilter(_QueryRedactingFilter())
