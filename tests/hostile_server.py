"""A tiny server that answers the way an attacker (or a broken proxy) would, for the bounds tests.

The emulator stays faithful to RunComfy; this server does what RunComfy never should: JSON nested
a million deep, gzip bombs, bodies of hundreds of MiB, answers that drip one byte at a time (in
the body or in the headers), error bodies that echo the ``Authorization`` header, redirects to
internal addresses. Each path prefix is told how to answer with :meth:`HostileServer.answer`.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: Seconds between two bytes of a drip: well inside any read timeout, so only a deadline stops it.
DRIP_INTERVAL = 0.5
MIB = 1024 * 1024


@cache
def gzip_bomb(inflated_mib: int = 256) -> bytes:
    """A JSON answer of ``inflated_mib`` MiB, gzipped to a few hundred KiB (computed once, a MiB
    at a time)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: a gzip container
    parts = [compressor.compress(b'{"request_id": "r", "status": "')]
    spaces = b" " * MIB
    parts.extend(compressor.compress(spaces) for _ in range(inflated_mib))
    parts.append(compressor.compress(b'"}') + compressor.flush())
    return b"".join(parts)


@dataclass
class Answer:
    """How one path prefix is answered."""

    kind: str = "json"
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    #: For ``huge``: MiB to send.
    size: int = 200
    #: For ``drip``: seconds between two bytes, and after how many seconds the server hangs up.
    interval: float = DRIP_INTERVAL
    lasts: float | None = None


@dataclass
class HostileServer:
    base_url: str = ""
    answers: dict[str, Answer] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def answer(self, prefix: str, kind: str = "json", **options: Any) -> str:
        """Answer requests whose path starts with ``prefix`` as ``kind``; returns the full URL."""
        self.answers[prefix] = Answer(kind=kind, **options)
        return self.base_url + prefix

    def calls(self, method: str | None = None, prefix: str = "") -> int:
        return sum(
            1
            for request in self.requests
            if (method is None or request["method"] == method) and request["path"].startswith(prefix)
        )

    def connection(self, token: str, **extra: Any) -> str:
        """A Dreamina connection (JSON) pointing at this server."""
        return json.dumps(
            {
                "conn_type": "dreamina",
                "host": self.base_url,
                "password": token,
                "extra": {"max_retries": 0, **extra},
            }
        )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: HostileServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self._answer()

    def _answer(self) -> None:
        state = self.server_state
        state.requests.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers.items())}
        )
        matches = [prefix for prefix in state.answers if self.path.startswith(prefix)]
        if not matches:
            self._send(404, b'{"error_message": "not scripted"}')
            return
        answer = state.answers[max(matches, key=len)]
        # A client that gives up closes the connection, as it should.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            getattr(self, f"_{answer.kind}")(answer)

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        all_headers = {
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            **(headers or {}),
        }
        for name, value in all_headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, answer: Answer) -> None:
        body = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
        self._send(answer.status, body, answer.headers)

    def _deep(self, answer: Answer) -> None:
        # Far past Python's recursion limit: parsing it naively raises RecursionError.
        levels = 100_000
        self._send(answer.status, b"[" * levels + b"]" * levels)

    def _gzip(self, answer: Answer) -> None:
        self._send(answer.status, gzip_bomb(), {"Content-Encoding": "gzip", **answer.headers})

    def _huge(self, answer: Answer) -> None:
        # Close-delimited, no length declared: only reading it tells how big it is.
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b'{"request_id": "r", "status": "')
        chunk = b"a" * MIB
        for _ in range(answer.size):
            if self.server_state.stopping.is_set():
                break
            self.wfile.write(chunk)
        self.close_connection = True

    def _drip(self, answer: Answer) -> None:
        body = json.dumps(answer.body or {"request_id": "r", "status": "in_progress"}).encode()
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body) + 10_000))
        self.end_headers()
        self.wfile.flush()
        ends = None if answer.lasts is None else time.monotonic() + answer.lasts
        for byte in (body + b" " * 10_000)[:100_000]:
            if self.server_state.stopping.wait(answer.interval) or (ends and time.monotonic() > ends):
                break
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
        self.close_connection = True

    def _drip_headers(self, answer: Answer) -> None:
        self.wfile.write(b"HTTP/1.1 200 OK\r\n")
        self.wfile.flush()
        for _ in range(100_000):
            if self.server_state.stopping.wait(DRIP_INTERVAL):
                break
            self.wfile.write(b"X")
            self.wfile.flush()
        self.close_connection = True

    def _echo_auth(self, answer: Answer) -> None:
        echoed = self.headers.get("Authorization", "")
        body = {
            "error_code": 422001,
            "error_message": f"bad request from {echoed}",
            "detail": [
                {"loc": ["body", "prompt"], "msg": "invalid", "input": {"headers": {"authorization": echoed}}}
            ],
            "request": {"authorization": echoed},
        }
        self._send(answer.status, json.dumps(body).encode())

    def _redirect(self, answer: Answer) -> None:
        self._send(
            answer.status if answer.status in (301, 302, 303, 307, 308) else 302,
            b"",
            {"Location": str(answer.body)},
        )

    def _image(self, answer: Answer) -> None:
        self._send(answer.status, answer.body, {"Content-Type": "image/png"})

    def _slow_image(self, answer: Answer) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        for byte in answer.body:
            if self.server_state.stopping.wait(DRIP_INTERVAL):
                break
            self.wfile.write(bytes([byte]))
            self.wfile.flush()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hang up on hostile answers: that is the point, not an error


@contextmanager
def hostile_server() -> Iterator[HostileServer]:
    """Serve on 127.0.0.1 for the duration of the block; every dripping answer stops at its end."""
    state = HostileServer()
    handler = type("Handler", (_Handler,), {"server_state": state})
    server = _QuietServer(("127.0.0.1", 0), handler)
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.stopping.set()
        server.shutdown()
        server.server_close()
        time.sleep(0.05)
