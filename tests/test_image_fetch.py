"""The preflight fetches only public https images: no internal host, no port scan, one deadline.

Nothing here leaves 127.0.0.1: internal addresses are refused before any connection, and the
"public" host of the pinning tests is answered by an in-process transport.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from airflow_provider_dreamina.emulator import EmulatorHandle
from airflow_provider_dreamina.exceptions import (
    DreaminaConnectionError,
    DreaminaError,
    DreaminaImageRefusedError,
    DreaminaInvalidInputError,
)
from airflow_provider_dreamina.hooks.dreamina import DreaminaHook
from tests.bounds import bounded
from tests.helpers import Api, fast_hook, image_bytes, sample_input
from tests.hostile_server import HostileServer, hostile_server

PNG = image_bytes(640, 480)
PUBLIC_ADDRESS = "93.184.216.34"
SIGNATURE = "X-Amz-Signature=5ecret5ignature"


@pytest.fixture
def server() -> Iterator[HostileServer]:
    with hostile_server() as running:
        yield running


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection as in production: no host is vouched for (nothing is ever sent to it here)."""
    connection = {"conn_type": "dreamina", "host": "https://model-api.invalid", "password": "t"}
    monkeypatch.setenv("AIRFLOW_CONN_DREAMINA_DEFAULT", json.dumps(connection))


@pytest.fixture
def vouched(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection that vouches for 127.0.0.1, as the emulator's does."""
    connection = {
        "conn_type": "dreamina",
        "host": "https://model-api.invalid",
        "password": "t",
        "extra": {"allowed_image_hosts": ["127.0.0.1"], "allowed_output_hosts": ["127.0.0.1"]},
    }
    monkeypatch.setenv("AIRFLOW_CONN_DREAMINA_DEFAULT", json.dumps(connection))


def preflight(url: str, transport: httpx.BaseTransport | None = None, **kwargs: Any) -> str:
    return DreaminaHook(transport=transport).prepare_image(url, **kwargs)


class Recorder(httpx.BaseTransport):
    """Answers every request with a PNG, and remembers where each one went."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200, content=PNG, headers={"Content-Type": "image/png"})


INTERNAL = [
    "https://127.0.0.1/x.png",
    "https://localhost/x.png",
    "https://[::1]/x.png",
    "https://0x7f.1/x.png",
    "https://2130706433/x.png",
    "https://017700000001/x.png",
    "https://[::ffff:127.0.0.1]/x.png",
    "https://[::ffff:7f00:1]/x.png",
    "https://169.254.169.254/latest/meta-data/x.png",
    "https://10.0.0.1/x.png",
    "https://172.16.0.1/x.png",
    "https://192.168.1.1/x.png",
    "https://100.64.0.1/x.png",
    "https://0.0.0.0/x.png",
    "https://[fe80::1]/x.png",
    "https://[fc00::1]/x.png",
    "https://224.0.0.1/x.png",
    "https://[2002:7f00:1::]/x.png",
    "https://[64:ff9b::a9fe:a9fe]/x.png",
]


@pytest.mark.usefixtures("production")
@pytest.mark.parametrize("url", INTERNAL)
def test_internal_hosts_are_refused_before_connecting(url: str) -> None:
    recorder = Recorder()
    with pytest.raises(DreaminaImageRefusedError, match="public addresses only"):
        preflight(url, recorder)
    assert recorder.requests == []


@pytest.mark.usefixtures("production")
def test_plain_http_is_refused_even_unchecked() -> None:
    for validate in (True, False):
        with pytest.raises(DreaminaImageRefusedError, match="not an https URL"):
            preflight("http://example.com/x.png", Recorder(), validate=validate)


@pytest.mark.usefixtures("production")
def test_a_refusal_cannot_scan_ports(server: HostileServer) -> None:
    """An open and a closed port give the very same answer: neither is connected to."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    open_port = int(server.base_url.rsplit(":", 1)[1])
    messages = []
    for port in (open_port, closed_port):
        with pytest.raises(DreaminaImageRefusedError) as caught:
            preflight(f"https://127.0.0.1:{port}/x.png")
        messages.append(str(caught.value).replace(str(port), "<port>"))
    assert messages[0] == messages[1]
    assert server.requests == []


@pytest.mark.usefixtures("vouched")
def test_every_redirect_hop_is_checked(server: HostileServer) -> None:
    """A host the connection allows redirects to an internal one: the second hop is refused."""
    with hostile_server() as internal:
        internal.answer("/", "image", body=PNG)
        target = internal.base_url.replace("http://127.0.0.1", "https://localhost") + "/latest/meta-data.png"
        url = server.answer("/hop", "redirect", body=target)
        with pytest.raises(DreaminaImageRefusedError, match="public addresses only"):
            preflight(url)
        assert internal.requests == []
    metadata = server.answer("/metadata", "redirect", body="http://169.254.169.254/latest/meta-data")
    with pytest.raises(DreaminaImageRefusedError, match="not an https URL"):
        preflight(metadata)


@pytest.fixture
def public_dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``images.example.test`` resolves to a public address (and to nothing else); resolutions are
    counted. Nothing is sent there: the tests answer in-process."""
    resolved: list[str] = []

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        resolved.append(host)
        if host == "images.example.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_ADDRESS, port))]
        if host == "mixed.example.test":
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_ADDRESS, port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", port)),
            ]
        raise socket.gaierror("not in this test's DNS")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return resolved


@pytest.mark.usefixtures("production")
def test_the_request_goes_to_the_checked_address(public_dns: list[str]) -> None:
    """No second DNS answer (rebinding) can swap the address between the check and the connect."""
    recorder = Recorder()
    url = "https://images.example.test/frames/lighthouse.png?" + SIGNATURE
    assert preflight(url, recorder) == url
    (request,) = recorder.requests
    assert request.url.host == PUBLIC_ADDRESS
    assert request.headers["Host"] == "images.example.test"
    assert request.extensions["sni_hostname"] == "images.example.test"  # TLS checks the name
    assert request.headers["Accept-Encoding"] == "identity"
    assert public_dns == ["images.example.test"]


@pytest.mark.usefixtures("production")
def test_a_host_with_any_internal_address_is_refused(public_dns: list[str]) -> None:
    recorder = Recorder()
    with pytest.raises(DreaminaImageRefusedError):
        preflight("https://mixed.example.test/x.png", recorder)
    assert recorder.requests == []


# -- errors say what rule failed, never what the network revealed ---------------------------


def test_errors_of_an_allowed_host_reveal_no_status_and_no_signature(
    emulator: EmulatorHandle, server: HostileServer, caplog: pytest.LogCaptureFixture
) -> None:
    hook = fast_hook()
    missing = server.answer("/gone.png", status=404, body={"detail": "no"}) + "?" + SIGNATURE
    with pytest.raises(DreaminaInvalidInputError) as caught:
        hook.prepare_image(missing)
    # The port in the URL may contain "404" too.
    assert "404" not in str(caught.value).replace(server.base_url, "")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/x.png?{SIGNATURE}"
    with pytest.raises(DreaminaConnectionError) as unreachable:
        hook.prepare_image(closed)
    assert "refused" not in str(unreachable.value).lower() and "errno" not in str(unreachable.value).lower()
    texts = [str(caught.value), str(unreachable.value), caplog.text]
    assert not [text for text in texts if "5ecret" in text]


def test_a_signed_url_query_is_in_no_error_log_line_or_record(
    emulator: EmulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    from airflow_provider_dreamina.operators.dreamina import DreaminaImageToVideoOperator
    from tests.helpers import make_context

    small = emulator.image_url(300, 300) + "&" + SIGNATURE
    with pytest.raises(DreaminaInvalidInputError) as caught:
        fast_hook().submit(sample_input(emulator, image_urls=[small]))
    assert "5ecret" not in str(caught.value)
    signed = emulator.sample_image_url + "?" + SIGNATURE
    operator = DreaminaImageToVideoOperator(
        task_id="generate", prompt="a pier", image_url=signed, wait_for_completion=True, deferrable=False
    )
    caplog.set_level("INFO")
    result = operator.execute(make_context())
    assert result["input"]["image_url"] == emulator.sample_image_url
    assert "Submitting" in caplog.text
    assert "5ecret" not in caplog.text


# -- one deadline ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_slow_image_cannot_stretch_the_preflight(
    emulator: EmulatorHandle, server: HostileServer, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DREAMINA_DEFAULT", emulator.connection_json(preflight_deadline=2))
    url = server.answer("/slow.png", "slow_image", body=PNG)
    with bounded(deadline=2), pytest.raises(DreaminaConnectionError, match="preflight deadline of 2 s"):
        api(fast_hook(), "submit", sample_input(emulator, image_urls=[url]))
    assert emulator.counters()["calls"]["submit"] == 0


@pytest.mark.usefixtures("production")
def test_refusals_are_typed_and_not_retried() -> None:
    with pytest.raises(DreaminaError) as caught:
        preflight("https://127.0.0.1/x.png")
    assert isinstance(caught.value, DreaminaInvalidInputError) and not caught.value.retryable
