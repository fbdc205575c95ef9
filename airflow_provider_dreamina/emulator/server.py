"""The emulator's HTTP server: RunComfy's Model API, output downloads, sample images, control plane.

Faults for chaos tests, besides the per-call ones of ``POST /_emulator/faults``: an outage of every
RunComfy endpoint at once (``POST /_emulator/outage``, see ``outage``), which may close the
listening socket so that connections are refused; and ``drip``, a fault kind that sends one answer
a byte at a time (``delay`` seconds apart), so that a client can be killed while it is arriving.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import secrets
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timezone
from typing import Annotated, Any, Protocol, TypeVar

import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, JsonValue, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow_provider_dreamina.emulator.catalog import BALANCE_PATH, balance_answer, model_entry
from airflow_provider_dreamina.emulator.connections import connection_of, protocol_class
from airflow_provider_dreamina.emulator.jobs import FINISHED, Emulator, Job
from airflow_provider_dreamina.emulator.media import (
    RangeNotSatisfiable,
    ServedVideo,
    generated_image,
    parse_range,
    sample_png,
)
from airflow_provider_dreamina.emulator.outage import Outage
from airflow_provider_dreamina.emulator.render import RendererUnavailable
from airflow_provider_dreamina.emulator.settings import (
    DEFAULT_DRIP_SECONDS,
    DEFAULT_HOLD_SECONDS,
    MODEL_ID,
    EmulatorConfig,
    Endpoint,
    FaultSpec,
    OutageRequest,
    ScriptRequest,
)
from airflow_provider_dreamina.emulator.validation import ImageFetcher, validate_submission

# A 4.7 MB image as a base64 data URI is about 6.3 MB, so the cap leaves room for it.
MAX_BODY_BYTES = 16 * 1000 * 1000
DEFAULT_SLOW_SECONDS = 5.0
# Above the 5 s keep-alive expiry of httpx, so a client never reuses a connection the server just closed.
KEEP_ALIVE_SECONDS = 15
LISTEN_BACKLOG = 4096
# How often the emulator tries to take its port back after a `refused` phase, should another
# process have bound it meanwhile.
RELISTEN_INTERVAL_SECONDS = 0.2
_IMAGE_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "gif": "GIF", "bmp": "BMP"}

ModelT = TypeVar("ModelT", bound=BaseModel)


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="milliseconds")


def _error_code(status: int) -> int:
    """RunComfy's code for an HTTP status: documented ones where they exist, else status * 1000 + 1."""
    return {401: 400004, 402: 400002, 404: 404001, 422: 422001}.get(status, status * 1000 + 1)


def _validation_detail(error: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": ["body", *entry["loc"]], "msg": entry["msg"], "type": entry["type"]}
        for entry in error.errors()
    ]


class Listener(Protocol):
    """The server's listening socket, which a `refused` outage phase closes and opens again."""

    @property
    def listening(self) -> bool: ...

    def stop_listening(self) -> None: ...

    async def listen_again(self) -> None: ...


class EmulatorApp:
    """Routes and handlers over one `Emulator`."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        # Set by `serve`; without one (an app mounted elsewhere) a `refused` phase resets instead.
        self.listener: Listener | None = None
        self._outage_task: asyncio.Task[None] | None = None
        self._fetcher = ImageFetcher()
        self._url_key = secrets.token_bytes(32)
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
        self.app = app

        app.add_api_route("/v1/models/{model_id:path}", self.submit, methods=["POST"])
        app.add_api_route("/v1/models/{model_id:path}", self.model_info, methods=["GET"])
        app.add_api_route("/v1/requests/{request_id}/status", self.status, methods=["GET"])
        app.add_api_route("/v1/requests/{request_id}/result", self.result, methods=["GET"])
        app.add_api_route("/v1/requests/{request_id}/cancel", self.cancel, methods=["POST"])
        app.add_api_route(BALANCE_PATH, self.balance, methods=["GET"])
        app.add_api_route("/outputs/{request_id}/{filename}", self.download, methods=["GET", "HEAD"])
        app.add_api_route("/samples/input.png", self.sample_input, methods=["GET"])
        app.add_api_route("/samples/image.{extension}", self.sample_image, methods=["GET"])

        app.add_api_route("/_emulator/health", self.health, methods=["GET"])
        app.add_api_route("/_emulator/reset", self.reset, methods=["POST"])
        app.add_api_route("/_emulator/counters", self.counters, methods=["GET"])
        app.add_api_route("/_emulator/config", self.get_config, methods=["GET"])
        app.add_api_route("/_emulator/config", self.set_config, methods=["POST"])
        app.add_api_route("/_emulator/faults", self.list_faults, methods=["GET"])
        app.add_api_route("/_emulator/faults", self.add_fault, methods=["POST"])
        app.add_api_route("/_emulator/faults", self.clear_faults, methods=["DELETE"])
        app.add_api_route("/_emulator/script", self.add_script, methods=["POST"])
        app.add_api_route("/_emulator/requests", self.requests, methods=["GET"])
        app.add_api_route("/_emulator/outage", self.get_outage, methods=["GET"])
        app.add_api_route("/_emulator/outage", self.start_outage, methods=["POST"])
        app.add_api_route("/_emulator/outage", self.end_outage, methods=["DELETE"])

        app.add_exception_handler(StarletteHTTPException, self._http_exception)
        app.add_exception_handler(RequestValidationError, self._request_validation_error)
        app.add_exception_handler(Exception, self._unexpected_error)

    # Response shapes

    def _json(
        self, request: Request, body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
    ) -> JSONResponse:
        if self.emulator.config.extra_fields and request.url.path.startswith("/v1/"):
            body = {**body, "x_trace": uuid.uuid4().hex, "meta": {"served_by": "emulator", "region": "local"}}
        return JSONResponse(body, status_code=status, headers=headers)

    def _error(
        self,
        request: Request,
        status: int,
        message: str,
        *,
        code: int | None = None,
        detail: list[Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> JSONResponse:
        body: dict[str, Any] = {"error_code": _error_code(status) if code is None else code}
        field = self.emulator.config.message_field
        if field == "detail" and detail is not None:
            # FastAPI's own shape: `detail` carries the list and the message is left out.
            body["detail"] = detail
        else:
            body[field] = message
            if detail is not None:
                body["detail"] = detail
        return self._json(request, body, status, headers)

    async def _http_exception(self, request: Request, error: Exception) -> Response:
        status = error.status_code if isinstance(error, StarletteHTTPException) else 500
        message = f"{request.method} {request.url.path}: " + (
            "no such endpoint" if status == 404 else str(getattr(error, "detail", error))
        )
        return self._error(request, status, message)

    async def _request_validation_error(self, request: Request, error: Exception) -> Response:
        errors = error.errors() if isinstance(error, RequestValidationError) else []
        detail = [{"loc": list(entry["loc"]), "msg": entry["msg"], "type": entry["type"]} for entry in errors]
        return self._error(request, 422, "The request is not valid", detail=detail)

    async def _unexpected_error(self, request: Request, error: Exception) -> Response:
        return self._error(request, 500, f"Internal server error: {type(error).__name__}")

    def _not_found(self, request: Request, request_id: str) -> Response:
        return self._error(request, 404, f"Request {request_id!r} is unknown or expired")

    def _model_call_error(self, request: Request, model_id: str) -> Response | None:
        """The error answer to a call naming a model (401/403, then 400 for another model), if any."""
        if denied := self._auth_error(request):
            return denied
        if model_id != MODEL_ID:
            return self._error(request, 400, f"Unknown model id {model_id!r}", code=400001)
        return None

    def _authorised_job(self, request: Request, request_id: str) -> Job | Response:
        """The job a token-checked call names, or the error answer (401/403, then 404)."""
        if denied := self._auth_error(request):
            return denied
        job = self.emulator.jobs.get(request_id)
        return self._not_found(request, request_id) if job is None else job

    def _auth_error(self, request: Request) -> Response | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return self._error(request, 401, "Missing API token: send 'Authorization: Bearer <token>'")
        config = self.emulator.config
        if token in config.forbidden_tokens:
            return self._error(request, 403, "Permission denied for this token", code=403001)
        if not hmac.compare_digest(token.encode(), config.token.encode()):
            return self._error(request, 401, "The API token is invalid, expired or revoked")
        return None

    # Faults

    async def _fault_response(
        self, request: Request, endpoint: Endpoint, fault: FaultSpec
    ) -> Response | None:
        """Answer in place of the endpoint, or None to let it answer (after a delay for `slow`)."""
        kind = fault.kind
        if kind == "429":
            headers = (
                None if fault.retry_after is None else {"Retry-After": _header_number(fault.retry_after)}
            )
            return self._error(request, 429, "Too many requests; retry later", headers=headers)
        if kind in ("500", "502", "503"):
            return self._error(request, int(kind), "Internal server error; retry with backoff", code=500001)
        if kind == "error_200":
            return self._error(request, 200, "Internal server error; retry with backoff", code=500001)
        if kind == "expired":
            return self._error(request, 410, "The output URL has expired", code=404001)
        if kind == "reset" or (kind == "reset_after_send" and endpoint == "download"):
            return self._drop(request)
        if kind == "slow":
            await asyncio.sleep(DEFAULT_SLOW_SECONDS if fault.delay is None else fault.delay)
        return None

    def _drop(self, request: Request) -> Response:
        connection_of(request).reset()
        # Never sent: the connection is gone, and uvicorn discards it.
        return Response()

    def _outage_answer(self, request: Request) -> Response | None:
        """The answer of an outage phase in place of the endpoint's, or None when RunComfy is up."""
        kind = self.emulator.outage_kind(time.time())
        if kind is None:
            return None
        self.emulator.counters.outage_answers[kind] += 1
        if kind == "503":
            return self._error(request, 503, "Service unavailable; retry with backoff", code=500001)
        # `reset`, or `refused` for a request on a connection opened before the phase began: the
        # listening socket is closed, and a dead service answers nothing on what is left open.
        return self._drop(request)

    def _dripped(self, request: Request, response: Response, fault: FaultSpec) -> Response:
        """``response`` sent one byte at a time, ``fault.delay`` seconds apart, headers first."""
        delay = DEFAULT_DRIP_SECONDS if fault.delay is None else fault.delay
        connection = connection_of(request)
        counters = self.emulator.counters

        async def whole_body() -> AsyncIterator[bytes]:
            yield bytes(response.body)

        source = response.body_iterator if isinstance(response, StreamingResponse) else whole_body()

        async def drip() -> AsyncIterator[bytes]:
            counters.answers_dripping += 1
            complete, first = False, True
            try:
                async for chunk in source:
                    data = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
                    for offset in range(len(data)):
                        if not first:
                            await asyncio.sleep(delay)
                        first = False
                        # The client hung up (uvicorn discards writes to a closed connection).
                        if connection.is_closed():
                            return
                        yield data[offset : offset + 1]
                complete = True
            finally:
                counters.answers_dripping -= 1
                if not complete:
                    counters.drips_cut_short += 1

        dripped = StreamingResponse(drip(), status_code=response.status_code)
        # The answer's own headers, Content-Length included: only the pace changes.
        dripped.raw_headers = list(response.raw_headers)
        return dripped

    async def _api_call(
        self,
        request: Request,
        endpoint: Endpoint,
        request_id: str | None,
        work: Callable[[], Awaitable[Response]],
    ) -> Response:
        self.emulator.count_call(endpoint, request_id)
        if (down := self._outage_answer(request)) is not None:
            return down
        fault = self.emulator.take_fault(endpoint)
        if fault is not None:
            early = await self._fault_response(request, endpoint, fault)
            if early is not None:
                return early
        response = await work()
        if fault is not None and fault.kind == "reset_after_send":
            return self._drop(request)
        if fault is not None and fault.kind == "hold":
            await asyncio.sleep(DEFAULT_HOLD_SECONDS if fault.delay is None else fault.delay)
        if fault is not None and fault.kind == "drip":
            return self._dripped(request, response, fault)
        return response

    # The RunComfy Model API

    async def submit(self, request: Request, model_id: str) -> Response:
        return await self._api_call(request, "submit", None, lambda: self._submit(request, model_id))

    async def _submit(self, request: Request, model_id: str) -> Response:
        if denied := self._model_call_error(request, model_id):
            return denied
        body = await _read_body(request)
        if body is None:
            return self._error(request, 413, f"The request body is larger than {MAX_BODY_BYTES} bytes")
        submitted = await validate_submission(body, self._fetcher)
        if isinstance(submitted, list):
            return self._error(request, 422, "Input validation failed", detail=list(submitted))
        if not self.emulator.can_afford_submission(submitted.frames, time.time()):
            return self._error(request, 402, "Insufficient balance: top up your RunComfy account")
        job = self.emulator.create_job(model_id, submitted, time.time())
        base = f"{_base_url(request)}/v1/requests/{job.request_id}"
        return self._json(
            request,
            {
                "request_id": job.request_id,
                "status_url": f"{base}/status",
                "result_url": f"{base}/result",
                "cancel_url": f"{base}/cancel",
            },
        )

    async def model_info(self, request: Request, model_id: str) -> Response:
        return await self._api_call(request, "model", None, lambda: self._model_info(request, model_id))

    async def _model_info(self, request: Request, model_id: str) -> Response:
        if denied := self._model_call_error(request, model_id):
            return denied
        if not self.emulator.config.offer_model_info:
            return self._error(request, 404, f"GET {request.url.path}: no such endpoint")
        return self._json(request, model_entry(model_id, self.emulator.config))

    async def balance(self, request: Request) -> Response:
        return await self._api_call(request, "balance", None, lambda: self._balance(request))

    async def _balance(self, request: Request) -> Response:
        if denied := self._auth_error(request):
            return denied
        if not self.emulator.config.offer_balance:
            return self._error(request, 404, f"GET {request.url.path}: no such endpoint")
        return self._json(request, balance_answer(self.emulator.balance(time.time())))

    async def status(self, request: Request, request_id: str) -> Response:
        return await self._api_call(request, "status", request_id, lambda: self._status(request, request_id))

    async def _status(self, request: Request, request_id: str) -> Response:
        job = self._authorised_job(request, request_id)
        if isinstance(job, Response):
            return job
        now = time.time()
        body: dict[str, Any] = {"request_id": request_id, "status": job.status_word(now)}
        if job.state(now) == "in_queue":
            body["queue_position"] = self.emulator.queue_position(job, now)
        base = f"{_base_url(request)}/v1/requests/{request_id}"
        body["status_url"] = f"{base}/status"
        body["result_url"] = f"{base}/result"
        return self._json(request, body)

    async def result(self, request: Request, request_id: str, include_cost: bool = False) -> Response:
        return await self._api_call(
            request, "result", request_id, lambda: self._result(request, request_id, include_cost)
        )

    async def _result(self, request: Request, request_id: str, include_cost: bool) -> Response:
        job = self._authorised_job(request, request_id)
        if isinstance(job, Response):
            return job
        now = time.time()
        state = job.state(now)
        body: dict[str, Any] = {"request_id": request_id, "status": job.result_word(now)}
        if state == "succeeded":
            body["output"] = self._output(request, job, now)
        elif state == "failed":
            body["error"] = job.error
        body["created_at"] = _iso(job.created_at)
        finished_at = job.finished_time(now)
        if finished_at is not None:
            body["finished_at"] = _iso(finished_at)
        if include_cost and self.emulator.config.offer_cost and state in FINISHED:
            body["cost"] = job.cost_usd if state == "succeeded" else 0.0
        return self._json(request, body)

    def _output(self, request: Request, job: Job, now: float) -> dict[str, JsonValue]:
        script = job.script
        if script.output_urls is not None:
            urls = script.output_urls
        else:
            urls = [self._signed_output_url(request, job, name, now) for name in job.output_names]
        if script.output_key in ("video", "image"):
            return {script.output_key: urls[0]}
        return {script.output_key: list(urls)}

    def _signed_output_url(self, request: Request, job: Job, name: str, now: float) -> str:
        ttl = self.emulator.config.output_url_ttl
        expires_ms = 0 if ttl is None else int((now + ttl) * 1000)
        signature = self._signature(job.request_id, name, expires_ms)
        return f"{_base_url(request)}/outputs/{job.request_id}/{name}?expires={expires_ms}&sig={signature}"

    def _signature(self, request_id: str, name: str, expires_ms: int) -> str:
        message = f"{request_id}/{name}/{expires_ms}".encode()
        return hmac.new(self._url_key, message, hashlib.sha256).hexdigest()[:32]

    async def cancel(self, request: Request, request_id: str) -> Response:
        return await self._api_call(request, "cancel", request_id, lambda: self._cancel(request, request_id))

    async def _cancel(self, request: Request, request_id: str) -> Response:
        job = self._authorised_job(request, request_id)
        if isinstance(job, Response):
            return job
        now = time.time()
        cancelled = self.emulator.cancel(job, now)
        return self._json(
            request,
            {
                "request_id": request_id,
                "status": job.status_word(now),
                "outcome": "cancelled" if cancelled else "not_cancellable",
            },
            status=202,
        )

    # Outputs, served like a CDN: no token, a signed and possibly expiring URL

    async def download(self, request: Request, request_id: str, filename: str) -> Response:
        self.emulator.count_call("download", request_id)
        if (down := self._outage_answer(request)) is not None:
            return down
        fault = self.emulator.take_fault("download")
        if fault is not None:
            early = await self._fault_response(request, "download", fault)
            if early is not None:
                return early
        expires = request.query_params.get("expires", "")
        signature = request.query_params.get("sig", "")
        if not expires.isdigit() or not hmac.compare_digest(
            signature, self._signature(request_id, filename, int(expires))
        ):
            return self._error(request, 403, "The output URL signature is invalid", code=403001)
        if int(expires) and time.time() * 1000 > int(expires):
            return self._error(request, 403, "The output URL has expired: fetch a fresh result", code=403001)
        job = self.emulator.jobs.get(request_id)
        if job is None or job.state(time.time()) != "succeeded" or filename not in job.output_names:
            return self._error(request, 404, f"No output {filename!r} for request {request_id!r}")

        try:
            video = await self.emulator.output(job, filename)
        except RendererUnavailable as error:
            return self._error(request, 500, str(error))
        try:
            wanted = parse_range(request.headers.get("range"), video.size)
        except RangeNotSatisfiable as error:
            return self._error(request, 416, str(error), headers={"Content-Range": f"bytes */{error.size}"})
        start, end = wanted if wanted is not None else (0, video.size)
        headers = {"Accept-Ranges": "bytes", "Content-Length": str(end - start)}
        if wanted is not None:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{video.size}"
        status = 206 if wanted is not None else 200
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers, media_type="video/mp4")
        truncate_at = start + (end - start) // 2 if fault is not None and fault.kind == "truncate" else None
        streamed = StreamingResponse(
            self._stream(request, video, start, end, truncate_at),
            status_code=status,
            headers=headers,
            media_type="video/mp4",
        )
        if fault is not None and fault.kind == "drip":
            return self._dripped(request, streamed, fault)
        return streamed

    async def _stream(
        self, request: Request, video: ServedVideo, start: int, end: int, truncate_at: int | None
    ) -> AsyncIterator[bytes]:
        connection = connection_of(request)
        stop = end if truncate_at is None else truncate_at
        for chunk in video.iter_range(start, stop):
            # Once the client is gone uvicorn discards writes without ever suspending, so Starlette's
            # cancellation never arrives: without this check a dropped 1 GiB download runs to the end.
            if connection.is_closed():
                return
            yield chunk
            # Resumed only once the chunk was handed to the transport.
            self.emulator.counters.bytes_served += len(chunk)
            if rate := self.emulator.config.download_bytes_per_second:
                await asyncio.sleep(len(chunk) / rate)
        if truncate_at is not None:
            connection.close_after_flush()

    # Sample inputs

    async def sample_input(self) -> Response:
        return Response(sample_png(), media_type="image/png")

    async def sample_image(
        self,
        extension: str,
        width: Annotated[int, Query(ge=1, le=8192)] = 640,
        height: Annotated[int, Query(ge=1, le=8192)] = 480,
        pad_bytes: Annotated[int, Query(ge=0, le=20_000_000)] = 0,
        chunked: bool = False,
    ) -> Response:
        """Any size and format, for tests of the image rules with http URLs.

        ``chunked`` sends the image without a ``Content-Length``, as some servers do, so a
        client cannot learn its size before reading it.
        """
        image_format = _IMAGE_FORMATS.get(extension.lower())
        if image_format is None:
            raise StarletteHTTPException(404, f"unsupported image extension {extension!r}")
        data = await asyncio.to_thread(generated_image, width, height, image_format, pad_bytes)
        media_type = f"image/{image_format.lower()}"
        if not chunked:
            return Response(data, media_type=media_type)

        async def pieces() -> AsyncIterator[bytes]:
            for offset in range(0, len(data), 64 * 1024):
                yield data[offset : offset + 64 * 1024]

        return StreamingResponse(pieces(), media_type=media_type)

    # Control plane: no auth, not counted in `calls`

    async def health(self) -> Response:
        return JSONResponse({"status": "ok"})

    async def reset(self) -> Response:
        await self._stop_outage()
        self.emulator.reset()
        return JSONResponse({"status": "reset"})

    async def counters(self) -> Response:
        return JSONResponse(self.emulator.counters_report(time.time()))

    async def get_config(self) -> Response:
        return JSONResponse(self.emulator.config.model_dump())

    async def set_config(self, request: Request) -> Response:
        update = await _json_object(request)
        if update is None:
            return self._error(request, 422, "The body must be a JSON object of settings")
        try:
            config = self.emulator.configure(update)
        except ValidationError as error:
            return self._error(request, 422, "Invalid configuration", detail=_validation_detail(error))
        return JSONResponse(config.model_dump())

    async def list_faults(self) -> Response:
        return JSONResponse(self.emulator.faults())

    async def add_fault(self, request: Request) -> Response:
        spec = await self._control_model(request, FaultSpec)
        if isinstance(spec, Response):
            return spec
        self.emulator.add_fault(spec)
        return JSONResponse(self.emulator.faults())

    async def clear_faults(self) -> Response:
        self.emulator.clear_faults()
        return JSONResponse([])

    async def add_script(self, request: Request) -> Response:
        script = await self._control_model(request, ScriptRequest)
        if isinstance(script, Response):
            return script
        self.emulator.add_script(script)
        return JSONResponse({"scripted": script.count})

    async def requests(self) -> Response:
        return JSONResponse(self.emulator.describe_jobs(time.time()))

    async def get_outage(self) -> Response:
        outage = self.emulator.outage
        return JSONResponse(None if outage is None else outage.describe(time.time()))

    async def start_outage(self, request: Request) -> Response:
        spec = await self._control_model(request, OutageRequest)
        if isinstance(spec, Response):
            return spec
        await self._stop_outage()
        outage = self.emulator.start_outage(spec, time.time())
        self._outage_task = asyncio.create_task(self._follow_outage(outage))
        return JSONResponse(outage.describe(time.time()))

    async def end_outage(self) -> Response:
        """End the outage now (reachable only outside a `refused` phase)."""
        await self._stop_outage()
        self.emulator.end_outage()
        return JSONResponse(None)

    async def _follow_outage(self, outage: Outage) -> None:
        """Close the listening socket for each `refused` phase and open it again after."""
        # The answer to the POST that began the outage goes out first, even when it begins refused.
        await asyncio.sleep(0.05)
        for phase in outage.phases:
            await asyncio.sleep(max(0.0, phase.starts_at - time.time()))
            if phase.kind == "refused":
                self._stop_listening()
            else:
                await self._listen_again()
        await asyncio.sleep(max(0.0, outage.ends_at - time.time()))
        await self._listen_again()

    async def _stop_outage(self) -> None:
        if self._outage_task is not None:
            self._outage_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._outage_task
            self._outage_task = None
        await self._listen_again()

    def _stop_listening(self) -> None:
        if self.listener is not None and self.listener.listening:
            self.listener.stop_listening()

    async def _listen_again(self) -> None:
        if self.listener is not None and not self.listener.listening:
            await self.listener.listen_again()

    async def _control_model(self, request: Request, model: type[ModelT]) -> ModelT | Response:
        try:
            return model.model_validate_json(await request.body() or b"{}")
        except ValidationError as error:
            return self._error(request, 422, f"Invalid {model.__name__}", detail=_validation_detail(error))


def _header_number(value: float | str) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


async def _read_body(request: Request) -> bytes | None:
    """The request body, or None when it is over MAX_BODY_BYTES (uvicorn discards the rest)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    return bytes(body)


async def _json_object(request: Request) -> dict[str, JsonValue] | None:
    try:
        document = json.loads(await request.body() or b"{}")
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


class _EmulatorServer(uvicorn.Server):
    """Prints the address once it accepts connections (a parent process reads that line), and can
    stop listening on it and listen again (an outage's `refused` phase)."""

    _address: tuple[str, int]
    _family: socket.AddressFamily

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and sockets:
            host, port = sockets[0].getsockname()[:2]
            self._address, self._family = (host, port), sockets[0].family
            shown_host = f"[{host}]" if ":" in host else host
            print(f"emulator listening on http://{shown_host}:{port}", flush=True)

    @property
    def listening(self) -> bool:
        return any(server.is_serving() for server in self.servers)

    def stop_listening(self) -> None:
        """Refuse new connections, and close the open ones once their answer in progress is sent."""
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()

    async def listen_again(self) -> None:
        """Listen on the same address again (retrying while another process holds the port)."""
        warned = False
        while True:
            try:
                sock = socket.create_server(self._address, family=self._family, backlog=LISTEN_BACKLOG)
                break
            except OSError as error:
                if not warned:
                    warned = True
                    print(f"emulator: cannot listen on {self._address} again yet ({error})", file=sys.stderr)
                await asyncio.sleep(RELISTEN_INTERVAL_SECONDS)
        config = self.config
        server = await asyncio.get_running_loop().create_server(
            lambda: config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            ),
            sock=sock,
            backlog=LISTEN_BACKLOG,
        )
        self.servers.append(server)


def serve(host: str, port: int, startup: EmulatorConfig) -> None:
    """Run the emulator in the foreground until SIGINT or SIGTERM."""
    _raise_open_file_limit()
    sample_png()  # build it before the first request instead of inside one
    emulator = Emulator(startup)
    app = EmulatorApp(emulator)
    config = uvicorn.Config(
        app.app,
        http=protocol_class(emulator),
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=2,
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
    server = _EmulatorServer(config)
    app.listener = server
    asyncio.run(server.serve(sockets=[sock]))


def _raise_open_file_limit() -> None:
    """Benchmarks hold thousands of connections at once: lift the soft descriptor limit to the hard one."""
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
