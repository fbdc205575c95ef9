"""Start an emulator in a subprocess and steer it over HTTP; imports neither FastAPI nor uvicorn."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import httpx

from airflow_provider_dreamina.emulator.settings import DEFAULT_TOKEN

DEFAULT_STARTUP_TIMEOUT_SECONDS = 20.0
STOP_GRACE_SECONDS = 5.0
_LISTENING = re.compile(rb"emulator listening on (http://\S+)")

ClientT = TypeVar("ClientT", bound="EmulatorClient")


class EmulatorError(RuntimeError):
    """The emulator did not start, or refused a control-plane call."""


class EmulatorClient:
    """Control client for an emulator running anywhere; also knows what a provider needs to reach it."""

    def __init__(self, base_url: str, *, token: str = DEFAULT_TOKEN, timeout: float = 30.0) -> None:
        """
        :param token: the token the emulator was started with; `configure(token=...)` and `reset()`
            keep it current.
        """
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._startup_token = token
        # trust_env off: a proxy from the environment must not intercept calls to 127.0.0.1.
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, trust_env=False)

    @property
    def sample_image_url(self) -> str:
        """A 640x480 PNG served by the emulator that passes every input rule."""
        return f"{self.base_url}/samples/input.png"

    def image_url(
        self, width: int, height: int, image_format: str = "png", *, pad_bytes: int = 0, chunked: bool = False
    ) -> str:
        """URL of a generated image of any size and format (png, jpg, gif, bmp), padded by `pad_bytes`.

        With `chunked` it is sent without a Content-Length.
        """
        query = f"width={width}&height={height}&pad_bytes={pad_bytes}"
        if chunked:
            query += "&chunked=true"
        return f"{self.base_url}/samples/image.{image_format}?{query}"

    def connection_json(self, **extra: Any) -> str:
        """The value for `AIRFLOW_CONN_DREAMINA_DEFAULT` that points a provider at this emulator.

        The emulator also answers the account API (the balance), so `account_url` points at it too:
        a provider never asks the real RunComfy account host from a test.
        """
        return json.dumps(
            {
                "conn_type": "dreamina",
                "host": self.base_url,
                "password": self.token,
                # Outputs and sample images come from the emulator itself, over http on 127.0.0.1.
                "extra": {
                    "allowed_output_hosts": ["127.0.0.1"],
                    "allowed_image_hosts": ["127.0.0.1"],
                    "account_url": self.base_url,
                    **extra,
                },
            }
        )

    def health(self) -> dict[str, Any]:
        answer: dict[str, Any] = self._call("GET", "/_emulator/health")
        return answer

    def reset(self) -> None:
        """Forget jobs, faults, scripts and counters, and restore the startup configuration."""
        self._call("POST", "/_emulator/reset")
        self.token = self._startup_token

    def counters(self) -> dict[str, Any]:
        answer: dict[str, Any] = self._call("GET", "/_emulator/counters")
        return answer

    def config(self) -> dict[str, Any]:
        answer: dict[str, Any] = self._call("GET", "/_emulator/config")
        return answer

    def configure(self, **options: Any) -> dict[str, Any]:
        """Change settings until the next `reset()`; returns the whole configuration."""
        config: dict[str, Any] = self._call("POST", "/_emulator/config", options)
        self.token = config["token"]
        return config

    def inject_fault(
        self,
        endpoint: str,
        kind: str | int,
        *,
        count: int | None = None,
        rate: float | None = None,
        retry_after: float | str | None = None,
        delay: float | None = None,
    ) -> None:
        """Make calls to `endpoint` ("submit", "status", "result", "cancel", "download", "model", "balance",
        "any") fail.

        Without `count` or `rate` the fault hits the next call only; with `rate` alone it hits that
        fraction of calls until `clear_faults()`. Kinds: "429", "500", "502", "503", "error_200",
        "reset", "reset_after_send", "slow" (`delay` seconds, default 5), "hold" (the answer is
        held `delay` seconds after the work is done, default 60; API endpoints), "drip" (the answer
        is sent one byte at a time, `delay` seconds apart, default 0.1), and for downloads
        "truncate" and "expired".
        """
        self._call(
            "POST",
            "/_emulator/faults",
            {
                "endpoint": endpoint,
                "kind": str(kind),
                "count": count,
                "rate": rate,
                "retry_after": retry_after,
                "delay": delay,
            },
        )

    def start_outage(self, phases: Sequence[tuple[str | int, float]]) -> dict[str, Any]:
        """Take every RunComfy endpoint down from now on: ``(kind, seconds)`` phases, one after another.

        Kinds: ``"503"`` (answered 503), ``"reset"`` (the connection is reset once the request is
        read) and ``"refused"`` (the listening socket is closed: connections are refused, the
        control plane included, until the phase ends). Returns the outage with epoch times
        (``started_at``, ``ends_at``, ``phases``); the emulator ends it by itself.
        """
        body = {"phases": [{"kind": str(kind), "seconds": seconds} for kind, seconds in phases]}
        answer: dict[str, Any] = self._call("POST", "/_emulator/outage", body)
        return answer

    def outage(self) -> dict[str, Any] | None:
        """The last outage (``kind`` is the phase on now, None once it is over), or None."""
        answer: dict[str, Any] | None = self._call("GET", "/_emulator/outage")
        return answer

    def end_outage(self) -> None:
        """End the outage now; not reachable while a ``refused`` phase is on."""
        self._call("DELETE", "/_emulator/outage")

    def wait_until_up(self, timeout: float = 60.0) -> None:
        """Wait until the emulator answers its health check again (after a ``refused`` phase)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.health()
                return
            except (httpx.HTTPError, EmulatorError):
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)

    def faults(self) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = self._call("GET", "/_emulator/faults")
        return answer

    def clear_faults(self) -> None:
        self._call("DELETE", "/_emulator/faults")

    def script_jobs(self, count: int = 1, **behaviour: Any) -> None:
        """Give the next `count` submissions a behaviour (outcome, error, durations, outputs...)."""
        self._call("POST", "/_emulator/script", {"count": count, **behaviour})

    def requests(self) -> list[dict[str, Any]]:
        """Every job since the last reset, in submission order, with epoch times and input."""
        answer: list[dict[str, Any]] = self._call("GET", "/_emulator/requests")
        return answer

    def close(self) -> None:
        self._http.close()

    def __enter__(self: ClientT) -> ClientT:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self._http.request(method, path, json=body)
        if response.status_code >= 400:
            raise EmulatorError(f"{method} {path} answered HTTP {response.status_code}: {response.text}")
        return response.json()


class EmulatorHandle(EmulatorClient):
    """An emulator subprocess started by `run_emulator`, and the client to control it."""

    def __init__(self, base_url: str, *, token: str, process: subprocess.Popen[bytes]) -> None:
        super().__init__(base_url, token=token)
        self.process = process

    @property
    def port(self) -> int:
        port = httpx.URL(self.base_url).port
        assert port is not None
        return port


@contextmanager
def run_emulator(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str = DEFAULT_TOKEN,
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_SECONDS,
    **options: Any,
) -> Iterator[EmulatorHandle]:
    """Run an emulator subprocess for the duration of the block, and stop it even if the block raises.

    :param options: startup settings, as for `EmulatorClient.configure`; `reset()` returns to them.
    :raises EmulatorError: when it does not answer its health check within `startup_timeout`.
    """
    command = [sys.executable, "-m", "airflow_provider_dreamina.emulator"]
    command += ["--host", host, "--port", str(port), "--token", token, "--config", json.dumps(options)]
    # The child must import this package even when it is not installed, as in a source checkout.
    package_root = str(Path(__file__).resolve().parents[2])
    python_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    environment = {**os.environ, "PYTHONPATH": python_path}
    # Files, not pipes: a pipe nobody reads would block a chatty emulator during a long benchmark.
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        # The command is this interpreter running this package: no untrusted input.
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=environment)  # noqa: S603
        try:
            base_url = _wait_until_listening(process, stdout, stderr, startup_timeout)
            with EmulatorHandle(base_url, token=token, process=process) as handle:
                _wait_until_healthy(handle, process, stderr, startup_timeout)
                yield handle
        finally:
            _stop(process)


def _wait_until_listening(
    process: subprocess.Popen[bytes], stdout: IO[bytes], stderr: IO[bytes], timeout: float
) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stdout.seek(0)
        listening = _LISTENING.search(stdout.read())
        if listening:
            return listening.group(1).decode()
        if process.poll() is not None:
            raise EmulatorError(
                f"the emulator exited with code {process.returncode} before listening; "
                f"stderr:\n{_tail(stderr)}"
            )
        time.sleep(0.05)
    raise EmulatorError(f"the emulator did not listen within {timeout} s; stderr:\n{_tail(stderr)}")


def _wait_until_healthy(
    client: EmulatorClient, process: subprocess.Popen[bytes], stderr: IO[bytes], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.health()
            return
        except (httpx.HTTPError, EmulatorError) as error:
            if process.poll() is not None or time.monotonic() > deadline:
                raise EmulatorError(
                    f"the emulator at {client.base_url} did not answer its health check ({error}); "
                    f"stderr:\n{_tail(stderr)}"
                ) from error
        time.sleep(0.05)


def _tail(stream: IO[bytes], limit: int = 4000) -> str:
    stream.seek(0)
    return stream.read().decode(errors="replace")[-limit:]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
