"""DreaminaHook: the API surface of RunComfy's Model API for Dreamina, sync and async.

Every HTTP call to RunComfy goes through here; how it is sent, retried and read lives in
``airflow_provider_dreamina.runcomfy``, the image preflight in ``inputs``, the download of an
output in ``outputs.transfer`` and the waiting policy in ``waiting.policy``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

import httpx
from airflow.sdk import BaseHook

from airflow_provider_dreamina.defaults import (
    CONN_TYPE,
    DEFAULT_CONN_ID,
    DEFAULT_MAX_BYTES,
    DEFAULT_POLL_INTERVAL,
)
from airflow_provider_dreamina.exceptions import DreaminaDownloadError, DreaminaError, DreaminaNotFoundError
from airflow_provider_dreamina.inputs.prepare import prepare_image
from airflow_provider_dreamina.inputs.sources import ImagePolicy, image_label
from airflow_provider_dreamina.models import (
    DEFAULT_MODEL_ID,
    AccountBalance,
    CancelOutcome,
    ImageToVideoInput,
    ModelInfo,
    RequestResult,
    RequestStatus,
    SubmittedRequest,
)
from airflow_provider_dreamina.outputs import transfer
from airflow_provider_dreamina.outputs.transfer import DOWNLOAD_CHUNK_SIZE, DownloadedOutput, OutputSink
from airflow_provider_dreamina.redaction import url_without_query
from airflow_provider_dreamina.runcomfy import calls, clients, optional
from airflow_provider_dreamina.runcomfy.calls import AnswerT, Call
from airflow_provider_dreamina.runcomfy.retries import RetryPolicy
from airflow_provider_dreamina.runcomfy.send import asend, send
from airflow_provider_dreamina.runcomfy.settings import (
    DEFAULT_BASE_URL,
    RUNCOMFY_OUTPUT_DOMAIN,
    DreaminaSettings,
    forget_shared_settings,
    shared_settings,
)
from airflow_provider_dreamina.waiting import policy as polling

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_BASE_URL",
    "DOWNLOAD_CHUNK_SIZE",
    "DownloadedOutput",
    "DreaminaHook",
    "DreaminaSettings",
    "OutputSink",
]


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
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
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
        self._answers = optional.AnswerCache()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Connection form for Airflow before 3.2 (later versions read the provider info)."""
        return {
            "hidden_fields": ["schema", "login", "port"],
            "relabeling": {"host": "Base URL", "password": "API token"},
            "placeholders": {
                "host": DEFAULT_BASE_URL,
                "password": "RunComfy API token",
                "extra": (
                    '{"allowed_output_hosts": [], "allowed_image_roots": [], "timeout": 30, "max_retries": 5}'
                ),
            },
        }

    # Connection and clients

    @property
    def settings(self) -> DreaminaSettings:
        """The connection's settings, read once (sync lookup: not for an event loop)."""
        if self._settings is None:
            conn = self.get_connection(self.dreamina_conn_id)
            self._settings = DreaminaSettings.from_connection(conn, self.dreamina_conn_id)
        return self._settings

    async def aget_settings(self) -> DreaminaSettings:
        """The connection's settings, read without blocking the event loop (shared per loop)."""
        if self._settings is None:
            self._settings = await shared_settings(self.dreamina_conn_id, self._aread_settings)
        return self._settings

    async def _aread_settings(self) -> DreaminaSettings:
        conn = await self.aget_connection(self.dreamina_conn_id)
        return DreaminaSettings.from_connection(conn, self.dreamina_conn_id)

    @property
    def retry_policy(self) -> RetryPolicy:
        """Retries of this hook: its own ``max_retries``, else the connection's, else the default."""
        retries = self.max_retries
        if retries is None:
            retries = self._settings.max_retries if self._settings else DreaminaSettings.max_retries
        return RetryPolicy(max_retries=retries, backoff=self.retry_backoff, max_wait=self.max_retry_wait)

    def max_error_seconds(self, own: float | None = None) -> float:
        """How long a wait tolerates transient errors: ``own`` when set, else the connection's."""
        return self.settings.max_error_seconds if own is None else float(own)

    def get_conn(self) -> httpx.Client:
        """The hook's sync client, built on first use and kept until :meth:`close`."""
        if self._client is None:
            self._client = clients.api_client(self.settings, self._transport)
        return self._client

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
        forget_shared_settings()
        await clients.aclose_shared_clients()

    # The API

    def submit(
        self,
        input: ImageToVideoInput,
        model_id: str = DEFAULT_MODEL_ID,
        *,
        validate_image: bool = True,
        image_roots: str | Sequence[str] | None = None,
        image_conn_id: str | None = None,
    ) -> SubmittedRequest:
        """Create a paid generation request; its answer holds the new ``request_id``.

        The image is checked (and, when it is not a URL, read and inlined) before anything is
        paid for, under the image source policy (see :meth:`prepare_image`). A submit is resent
        only when it certainly did not reach RunComfy; otherwise
        :class:`DreaminaSubmitUncertainError` is raised.
        """
        image_uri = self.prepare_image(
            input.image_source, validate=validate_image, image_roots=image_roots, image_conn_id=image_conn_id
        )
        return self._send(self._submit_call(input, model_id, image_uri))

    def get_status(self, request_id: str) -> RequestStatus:
        return self._send(calls.status_call(request_id))

    async def aget_status(self, request_id: str) -> RequestStatus:
        return await self._asend(calls.status_call(request_id))

    def get_result(self, request_id: str, *, include_cost: bool = False) -> RequestResult:
        """The request's result; while it runs, only its current state."""
        return self._send(calls.result_call(request_id, include_cost=include_cost))

    async def aget_result(self, request_id: str, *, include_cost: bool = False) -> RequestResult:
        return await self._asend(calls.result_call(request_id, include_cost=include_cost))

    def cancel(self, request_id: str) -> bool:
        """Ask RunComfy to cancel; True when it did (only queued requests can be cancelled)."""
        return _log_cancel(self._send(calls.cancel_call(request_id)))

    async def acancel(self, request_id: str) -> bool:
        return _log_cancel(await self._asend(calls.cancel_call(request_id)))

    def wait(
        self,
        request_id: str,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float | None = None,
        *,
        policy: polling.WaitPolicy | None = None,
    ) -> RequestResult:
        """Poll until the request finishes and return its result (the policy of ``polling``).

        Raises :class:`DreaminaRequestFailedError`, :class:`DreaminaRequestCancelledError` or,
        after ``timeout`` seconds, :class:`DreaminaTimeoutError` (a still-queued request is
        cancelled first).
        """
        return polling.wait(self, request_id, policy or _policy(poll_interval, timeout))

    async def await_result(
        self,
        request_id: str,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float | None = None,
        *,
        policy: polling.WaitPolicy | None = None,
    ) -> RequestResult:
        """Async :meth:`wait`: for an ``async def`` task following requests side by side (3.2+)."""
        return await polling.await_result(self, request_id, policy or _policy(poll_interval, timeout))

    # Price and balance: undocumented endpoints, so each answers None when RunComfy does not offer it

    def get_model_info(self, model_id: str = DEFAULT_MODEL_ID) -> ModelInfo | None:
        """The model's price (``base_price_usd`` per ``price_unit``) and input schema, when offered.

        None (and a log line) when the endpoint answers an error or something unreadable; a
        missing field is None on the answer. Remembered for a minute by this hook.
        """
        return optional.fetch(
            self._answers,
            ("model", model_id),
            f"model info of {model_id}",
            lambda: self._send(calls.model_info_call(model_id)),
        )

    async def aget_model_info(self, model_id: str = DEFAULT_MODEL_ID) -> ModelInfo | None:
        """Async :meth:`get_model_info`, remembered for a minute by this event loop."""
        settings = await self.aget_settings()
        return await optional.afetch(
            optional.loop_cache(),
            (*settings.cache_key, "model", model_id),
            f"model info of {model_id}",
            lambda: self._asend(calls.model_info_call(model_id)),
        )

    def get_balance(self) -> float | None:
        """The account's prepaid balance in USD, asked of the connection's ``account_url``.

        None (and a log line) when the account API does not answer it. Remembered for a minute.
        """
        return _balance_usd(
            optional.fetch(self._answers, ("balance",), "balance", lambda: self._send(calls.balance_call()))
        )

    async def aget_balance(self) -> float | None:
        """Async :meth:`get_balance`, remembered for a minute by this event loop."""
        settings = await self.aget_settings()
        return _balance_usd(
            await optional.afetch(
                optional.loop_cache(),
                (*settings.cache_key, settings.account_url, "balance"),
                "balance",
                lambda: self._asend(calls.balance_call()),
            )
        )

    def test_connection(self) -> tuple[bool, str]:
        """One cheap authenticated call: tells a rejected token from an unreachable server."""
        # Asking for a request id that cannot exist proves the token without creating anything.
        call = dataclasses.replace(calls.status_call("airflow-connection-test"), max_retries=0)
        try:
            self._send(call)
        except DreaminaNotFoundError:
            pass
        except DreaminaError as error:
            return False, str(error)
        return True, f"Connected to {self.settings.base_url}; the API token was accepted."

    # Inputs and outputs

    def prepare_image(
        self,
        source: str,
        *,
        validate: bool = True,
        image_roots: str | Sequence[str] | None = None,
        image_conn_id: str | None = None,
    ) -> str:
        """The image URI to send: https URLs and ``data:`` URIs as they are, anything else inlined.

        Local paths and object storage are read only under ``image_roots`` or the connection's
        ``allowed_image_roots``; object storage with the connection ``image_conn_id``. A URL is
        probed only when it is public https (or a host in the connection's
        ``allowed_image_hosts``). See :mod:`airflow_provider_dreamina.inputs`.
        """
        policy = ImagePolicy.of(self.settings, image_roots, image_conn_id)
        return prepare_image(source, validate=validate, policy=policy, transport=self._transport)

    def download_output(
        self,
        url: str,
        sink: OutputSink,
        *,
        request_id: str | None = None,
        index: int = 0,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
        chunk_size: int = DOWNLOAD_CHUNK_SIZE,
        deadline: float | None = None,
    ) -> DownloadedOutput:
        """Stream one output into ``sink``, verified and resumable (see :mod:`transfer`).

        URLs must pass :meth:`DreaminaSettings.output_url_allowed`, and no API token is ever sent
        to them. With ``request_id``, an output URL answering 403, 404 or 410 (expired) is
        replaced once by a fresh URL from a new result, at the same ``index``.

        :param max_bytes: refuse a larger output (default 2 GiB); None lifts the cap.
        :param deadline: seconds the whole download may take, retries included (default: the
            connection's ``download_deadline`` extra, else one hour).
        """
        settings = self.settings

        def check_url(url: str, redirected_from: str | None) -> None:
            _check_output_url(url, settings, redirected_from)

        def fresh_url() -> str:
            assert request_id is not None
            urls = self.get_result(request_id).output_urls
            if index >= len(urls):
                raise DreaminaDownloadError(
                    f"the fresh result of request {request_id} lists {len(urls)} output(s); output "
                    f"#{index + 1} is gone"
                )
            return urls[index]

        with clients.output_client(settings, self._transport) as client:
            return transfer.download(
                client,
                url,
                sink,
                policy=self.retry_policy,
                check_url=check_url,
                fresh_url=fresh_url if request_id is not None else None,
                max_bytes=max_bytes,
                chunk_size=chunk_size,
                deadline=settings.download_deadline if deadline is None else deadline,
            )

    # Sending

    def _submit_call(self, input: ImageToVideoInput, model_id: str, image_uri: str) -> Call[SubmittedRequest]:
        call = calls.submit_call(model_id, input.to_request_body(image_uri))
        inlined = " (sent inline)" if image_uri != input.image_source else ""
        log.info(
            "Submitting to %s: prompt of %d characters, image %s%s, seed %d, frames %d",
            model_id,
            len(input.prompt),
            image_label(input.image_source),
            inlined,
            input.seed,
            input.frames,
        )
        return call

    def _send(self, call: Call[AnswerT]) -> AnswerT:
        client = self.get_conn()
        return send(client, call, self.retry_policy, self.settings)

    async def _asend(self, call: Call[AnswerT]) -> AnswerT:
        settings = await self.aget_settings()
        return await asend(
            clients.shared_async_client(settings, self._async_transport), call, self.retry_policy, settings
        )


def _policy(poll_interval: float, timeout: float | None) -> polling.WaitPolicy:
    return polling.WaitPolicy(
        poll_interval=poll_interval, deadline=None if timeout is None else time.time() + timeout
    )


def _balance_usd(answer: AccountBalance | None) -> float | None:
    if answer is not None and answer.balance_usd is None:
        log.info("RunComfy's balance answer carries no balance_usd; going on without it")
    return None if answer is None else answer.balance_usd


def _log_cancel(outcome: CancelOutcome) -> bool:
    if outcome.cancelled:
        log.info("Request %s was cancelled", outcome.request_id)
    else:
        log.info(
            "Request %s could not be cancelled (%s): RunComfy cancels only queued requests; it will run "
            "to completion and may be charged",
            outcome.request_id,
            outcome.outcome or outcome.status,
        )
    return outcome.cancelled


def _check_output_url(url: str, settings: DreaminaSettings, redirected_from: str | None = None) -> None:
    if settings.output_url_allowed(url):
        return
    safe_url = url_without_query(url)
    via = f" (redirected from {redirected_from})" if redirected_from else ""
    raise DreaminaDownloadError(
        f"refusing to download output {safe_url}{via}: outputs are fetched only over https from "
        f"*.{RUNCOMFY_OUTPUT_DOMAIN} or from hosts listed in the extra 'allowed_output_hosts' of "
        f"connection '{settings.conn_id}'",
        url=safe_url,
    )
