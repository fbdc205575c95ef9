"""Small test helpers shared by several test modules."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Iterator
from typing import Any

import httpx
from PIL import Image

from airflow_provider_dreamina.submission.records import SubmitRecord, parse


def image_bytes(width: int, height: int, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (40, 90, 160)).save(buffer, format=fmt)
    return buffer.getvalue()


def data_uri(width: int, height: int, fmt: str = "PNG") -> str:
    media = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif"}[fmt]
    return f"data:{media};base64,{base64.b64encode(image_bytes(width, height, fmt)).decode()}"


class Api:
    """Calls a hook method by its sync name, either directly or through its async twin.

    A paid submit has no async twin (a worker submits; the triggerer only waits): in async mode it
    is made with the sync method, and everything after it through the async twins.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, hook: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.mode == "sync" or not hasattr(hook, f"a{name}"):
            return getattr(hook, name)(*args, **kwargs)

        async def run() -> Any:
            try:
                return await getattr(hook, f"a{name}")(*args, **kwargs)
            finally:
                await hook.aclose_shared_clients()

        return asyncio.run(run())


class FlakyConnectTransport(httpx.BaseTransport):
    """Refuses the first ``failures`` POSTs the way a down server would, then sends for real."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.failures > 0 and request.method == "POST":
            self.failures -= 1
            raise httpx.ConnectError("connection refused (simulated)", request=request)
        return self.inner.handle_request(request)


class AsyncFlakyConnectTransport(httpx.AsyncBaseTransport):
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.failures > 0 and request.method == "POST":
            self.failures -= 1
            raise httpx.ConnectError("connection refused (simulated)", request=request)
        return await self.inner.handle_async_request(request)


class _CountingStream(httpx.SyncByteStream):
    def __init__(self, inner: Any, counter: list[int]) -> None:
        self.inner = inner
        self.counter = counter

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            self.counter[0] += len(chunk)
            yield chunk

    def close(self) -> None:
        self.inner.close()


class CountingTransport(httpx.BaseTransport):
    """Counts the response body bytes the client actually reads."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.bytes_read = [0]

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        response.stream = _CountingStream(response.stream, self.bytes_read)
        return response


def fast_hook(**kwargs: Any) -> Any:
    """A DreaminaHook whose retries wait milliseconds, not seconds."""
    from airflow_provider_dreamina.hooks.dreamina import DreaminaHook

    kwargs.setdefault("retry_backoff", 0.01)
    kwargs.setdefault("max_retry_wait", 0.2)
    return DreaminaHook(**kwargs)


def sample_input(emulator: Any, **overrides: Any) -> Any:
    from airflow_provider_dreamina.models import ImageToVideoInput

    fields: dict[str, Any] = {"prompt": "a lighthouse at dawn", "image_urls": [emulator.sample_image_url]}
    fields.update(overrides)
    return ImageToVideoInput(**fields)


def wait_until_state(hook: Any, request_id: str, state: Any, limit: float = 10) -> None:
    import time

    deadline = time.monotonic() + limit
    while hook.get_status(request_id).state is not state:
        assert time.monotonic() < deadline, f"request never reached {state}"
        time.sleep(0.05)


class FakeTI:
    """The task instance a task sees: it keeps the XComs pushed to it."""

    def __init__(self, *, try_number: int = 1, max_tries: int = 2, map_index: int = -1) -> None:
        self.xcom: dict[str, Any] = {}
        self.dag_id, self.run_id, self.task_id = "dag", "manual__2026-12-01T00:00:00+00:00", "generate"
        self.try_number, self.max_tries, self.map_index = try_number, max_tries, map_index

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value

    def get_first_reschedule_date(self, context: Any) -> None:
        return None


class FakeStateStore:
    """Behaves like Airflow 3.3's task_state_store: survives tries of one task instance."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        self.values[key] = value


def make_context(store: FakeStateStore | None = None, ti: FakeTI | None = None) -> dict[str, Any]:
    context: dict[str, Any] = {"ti": ti or FakeTI()}
    if store is not None:
        context["task_state_store"] = store
    return context


def request_events(request_id: str = "r") -> dict[str, dict[str, Any]]:
    """One trigger event of each kind, as the trigger builds them, for request ``request_id``."""
    from airflow_provider_dreamina.exceptions import (
        DreaminaNotFoundError,
        DreaminaRequestCancelledError,
        DreaminaRequestFailedError,
        DreaminaTimeoutError,
    )
    from airflow_provider_dreamina.models import RequestOutput, RequestResult
    from airflow_provider_dreamina.waiting.outcome import RequestEvent

    result = RequestResult(
        request_id=request_id, status="succeeded", output=RequestOutput(video="https://a.runcomfy.net/v.mp4")
    )
    errors = {
        "failed": DreaminaRequestFailedError("was failed", request_id=request_id),
        "cancelled": DreaminaRequestCancelledError("was cancelled", request_id=request_id),
        "error": DreaminaNotFoundError("was error", status_code=404, request_id=request_id),
        "timeout": DreaminaTimeoutError("was timeout", request_id=request_id),
    }
    events = {
        kind: RequestEvent.failed(request_id, error).model_dump(mode="json") for kind, error in errors.items()
    }
    return {"success": RequestEvent.succeeded(result).model_dump(mode="json"), **events}


def mp4_body(total_bytes: int, fill: bytes | None = None) -> bytes:
    """An MP4 of exactly ``total_bytes`` whose index is valid and whose frames are ``fill`` (random
    by default): what an output host serves, as the download's video check sees it."""
    import os

    from airflow_provider_dreamina.emulator.media import build_video

    video = build_video(total_bytes=total_bytes, frames=1, width=64, height=64, created_at=0, seed=0)
    payload = (fill if fill is not None else os.urandom(video.payload_bytes))[: video.payload_bytes]
    return video.head + payload.ljust(video.payload_bytes, b"\0")


def parse_record(value: Any) -> SubmitRecord:
    """The submit record a test's fake task_state_store holds (there must be one)."""
    record = parse(value, "the test's task_state_store")
    assert record is not None
    return record
