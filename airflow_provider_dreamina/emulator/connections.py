"""The TCP connections behind the emulator's requests: counted, and dropped on demand by faults.

uvicorn's h11 protocol is extended so that a fault can reset a connection or cut a body short,
and so that a request the HTTP parser cannot read is answered with RunComfy's error body.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Protocol, cast

import h11
from fastapi import Request
from uvicorn.protocols.http.h11_impl import H11Protocol

from airflow_provider_dreamina.emulator.jobs import Emulator

MALFORMED_HTTP_CODE = 400000
_CONNECTION_KEY = "dreamina_emulator.connection"


class ClientConnection(Protocol):
    """The TCP connection behind a request, which a fault may drop instead of answering."""

    def reset(self) -> None: ...

    def close_after_flush(self) -> None: ...

    def is_closed(self) -> bool: ...


def protocol_class(emulator: Emulator) -> type[H11Protocol]:
    """uvicorn's h11 protocol, extended to count connections and to drop them on demand."""

    class EmulatorProtocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            emulator.counters.connections += 1
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                # asyncio sets this only on sockets created with proto IPPROTO_TCP, which ours are
                # not; without it uvicorn's separate header and body writes wait ~40 ms for an ACK.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().connection_made(transport)
            # uvicorn copies app_state into every request's scope["state"]: that is how a handler
            # reaches the connection it is answering on.
            self.app_state = {**self.app_state, _CONNECTION_KEY: self}

        def reset(self) -> None:
            """Drop the connection with a TCP RST, discarding anything not yet sent."""
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self._abandon_response()
            self.transport.abort()

        def close_after_flush(self) -> None:
            """Send what is buffered, then close: the client sees a body cut short."""
            self._abandon_response()
            self.transport.close()

        def send_400_response(self, msg: str) -> None:
            """Answer a request h11 cannot parse with the documented error body, not uvicorn's text."""
            body = json.dumps(
                {"error_code": MALFORMED_HTTP_CODE, emulator.config.message_field: f"Malformed HTTP: {msg}"}
            ).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ]
            events: list[h11.Event] = [
                h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                h11.Data(data=body),
                h11.EndOfMessage(),
            ]
            for event in events:
                self.transport.write(self.conn.send(event) or b"")
            self.transport.close()

        def is_closed(self) -> bool:
            return self.transport.is_closing()

        def _abandon_response(self) -> None:
            # Marked disconnected, uvicorn drops whatever the handler still sends instead of
            # answering 500 for a response that was never completed.
            if self.cycle is not None:
                self.cycle.disconnected = True
                self.cycle.message_event.set()

    return EmulatorProtocol


def connection_of(request: Request) -> ClientConnection:
    """The connection a request arrived on (see ``protocol_class``)."""
    return cast(ClientConnection, request.scope["state"][_CONNECTION_KEY])
