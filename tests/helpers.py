"""Small test helpers shared by several test modules."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Iterator
from typing import Any

import httpx
from PIL import Image


def image_bytes(width: int, height: int, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (40, 90, 160)).save(buffer, format=fmt)
    return buffer.getvalue()


def data_uri(width: int, height: int, fmt: str = "PNG") -> str:
    media = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif"}[fmt]
    return f"data:{media};base64,{base64.b64encode(image_bytes(width, height, fmt)).decode()}"


class Api:
    """Calls a hook method by its sync name, either directly or through its async twin."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, hook: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.mode == "sync":
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
