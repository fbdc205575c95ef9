"""A tiny output host for download tests: records what clients send, misbehaves on request.

The emulator serves well-behaved outputs; this server covers what it cannot: seeing the headers a
download sends, redirects, bodies without Content-Length, and servers that ignore Range.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Behaviour:
    """How the server answers the next requests."""

    body: bytes = b""
    content_type: str = "video/mp4"
    send_length: bool = True
    honour_range: bool = True
    #: Send ``Accept-Ranges: bytes`` even when ranges are not honoured, as some servers do.
    advertise_ranges: bool = True
    #: Close the connection after this many body bytes, on the first ``truncate_times`` answers.
    truncate_at: int | None = None
    truncate_times: int = 1
    #: Where requests for paths starting with /redirect are sent.
    redirect_to: str | None = None


@dataclass
class OutputHost:
    """The running server: its base URL, what it should do, and what it received."""

    base_url: str
    behaviour: Behaviour = field(default_factory=Behaviour)
    received: list[dict[str, Any]] = field(default_factory=list)

    def url(self, path: str = "/out/video.mp4", query: str = "sig=s3cr3t-signature") -> str:
        return f"{self.base_url}{path}?{query}" if query else f"{self.base_url}{path}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    host: OutputHost

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        behaviour = self.host.behaviour
        self.host.received.append({"path": self.path, "headers": dict(self.headers.items())})
        if behaviour.redirect_to and self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", behaviour.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body, status, start = behaviour.body, 200, 0
        wanted = self.headers.get("Range")
        if wanted and behaviour.honour_range:
            start = int(wanted.removeprefix("bytes=").partition("-")[0])
            status = 206
        part = body[start:]
        self.send_response(status)
        self.send_header("Content-Type", behaviour.content_type)
        self.send_header("Accept-Ranges", "bytes" if behaviour.advertise_ranges else "none")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        if behaviour.send_length:
            self.send_header("Content-Length", str(len(part)))
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        if behaviour.truncate_at is not None and behaviour.truncate_times > 0:
            behaviour.truncate_times -= 1
            self.wfile.write(part[: behaviour.truncate_at])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(part)
        if not behaviour.send_length:
            self.close_connection = True


@contextmanager
def output_host() -> Iterator[OutputHost]:
    """Serve on 127.0.0.1 (a host the emulator's connection allows) for the duration of the block."""
    host = OutputHost(base_url="")
    handler = type("Handler", (_Handler,), {"host": host})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    host.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield host
    finally:
        server.shutdown()
        server.server_close()
