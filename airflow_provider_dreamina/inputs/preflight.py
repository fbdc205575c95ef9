"""The preflight of an image URL: fetched as RunComfy would, public HTTPS only, every hop checked.

Only as much of the image is read as the schema's checks need (its header, or its whole size when
no ``Content-Length`` says it), within one deadline for the whole preflight, redirects included.

An image URL comes from a DAG-run param as often as from a DAG author, so fetching it must not
let a triggerer reach what only the worker can: before each connection (the first and every
redirect) the host is resolved, and it is refused unless every address it resolves to is public
(RunComfy could not fetch anything else either). The request then goes to the checked address
itself, with the original name for the ``Host`` header, TLS's SNI and certificate check, so a
second DNS answer cannot swap the address in between (DNS rebinding). Plain ``http`` is refused.

Hosts that the connection lists in ``allowed_image_hosts`` (a local emulator in tests and the
demo) are fetched as they are, over ``http`` too. Env proxies are not used: a proxy would resolve
the name itself, after the check.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from airflow_provider_dreamina.exceptions import (
    DreaminaConnectionError,
    DreaminaError,
    DreaminaImageRefusedError,
    DreaminaInvalidInputError,
)
from airflow_provider_dreamina.inputs.rules import HEAD_BYTES, IMAGE_MAX_BYTES, ImageInfo, check_image
from airflow_provider_dreamina.runcomfy import deadlines
from airflow_provider_dreamina.runcomfy.clients import USER_AGENT, tls_context
from airflow_provider_dreamina.runcomfy.reading import raw_chunks

MAX_REDIRECTS = 5
_HEADERS = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
# Well-known prefix of NAT64 (RFC 6052): the last 32 bits are an IPv4 address.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RefusedURL(Exception):
    """A hop of the fetch broke the policy; the message names the rule, never what was found."""


@dataclass(frozen=True)
class _Target:
    """Where one hop's request goes: the URL to send, and what keeps it pointed at its host."""

    url: str
    headers: dict[str, str]
    extensions: dict[str, Any]


def is_public(address: IPAddress) -> bool:
    """Whether ``address`` is reachable on the public internet (and so by RunComfy).

    IPv6 forms that carry an IPv4 address (IPv4-mapped, 6to4, Teredo, NAT64) are judged by it.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded: list[ipaddress.IPv4Address | None] = [address.ipv4_mapped, address.sixtofour]
        if address.teredo:
            embedded.extend(address.teredo)
        if address in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if any(inner is not None and not is_public(inner) for inner in embedded):
            return False
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def host_allowed(url: httpx.URL, allowed_hosts: Sequence[str]) -> bool:
    """Whether the connection vouches for ``url``'s host (by name, or name and port)."""
    host = url.host.lower()
    netloc = url.netloc.decode("ascii", "replace").lower()
    return host in allowed_hosts or netloc in allowed_hosts


def _pinned(url: httpx.URL, addresses: list[IPAddress]) -> _Target:
    if not addresses or not all(is_public(address) for address in addresses):
        raise RefusedURL("its host does not resolve to public addresses only")
    name = url.raw_host.decode("ascii")
    return _Target(
        str(url.copy_with(host=str(addresses[0]))),
        {**_HEADERS, "Host": url.netloc.decode("ascii")},
        {"sni_hostname": name},
    )


def parsed(target: str, allowed_hosts: Sequence[str]) -> tuple[httpx.URL, bool]:
    """The URL of one hop, and whether its host is vouched for; raises when it may not be fetched."""
    try:
        url = httpx.URL(target)
    except (httpx.InvalidURL, ValueError):
        raise RefusedURL("it is not a valid URL") from None
    if not url.host:
        raise RefusedURL("it names no host")
    allowed = host_allowed(url, allowed_hosts)
    if url.scheme not in ("https", "http") or (url.scheme == "http" and not allowed):
        raise RefusedURL("it is not an https URL (RunComfy fetches only public https URLs)")
    if url.userinfo:
        raise RefusedURL("it carries a user name or password")
    return url, allowed


def _resolve(url: httpx.URL) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(url.raw_host.decode("ascii"), url.port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return _addresses(infos)


def _addresses(infos: list[Any]) -> list[IPAddress]:
    found: list[IPAddress] = []
    for info in infos:
        try:
            found.append(ipaddress.ip_address(str(info[4][0]).partition("%")[0]))
        except ValueError:
            return []  # an address that cannot be judged is not public
    return found


def _redirect(response: httpx.Response, target: str) -> str | None:
    if not response.is_redirect:
        return None
    # Joined to the URL as the user gave it (not the pinned address), so a relative Location
    # keeps the host name and is checked like any other hop.
    return str(httpx.URL(target).join(response.headers.get("Location", "")))


@contextlib.contextmanager
def open_url(
    source: str, *, allowed_hosts: Sequence[str], seconds: float, transport: httpx.BaseTransport | None = None
) -> Iterator[tuple[httpx.Response, float]]:
    """Stream a GET of ``source``, checking every hop; yields the answer and the monotonic
    deadline (the caller checks it between chunks; every socket operation is bounded by it)."""
    with deadlines.within(seconds) as deadline:
        client = httpx.Client(
            timeout=httpx.Timeout(seconds),
            follow_redirects=False,
            transport=transport,
            trust_env=False,
            verify=tls_context(trust_env=False),
        )
        with deadlines.install(client):
            target = source
            for _hop in range(MAX_REDIRECTS + 1):
                url, allowed = parsed(target, allowed_hosts)
                hop = _Target(target, dict(_HEADERS), {}) if allowed else _pinned(url, _resolve(url))
                with client.stream(
                    "GET", hop.url, headers=hop.headers, extensions=hop.extensions
                ) as response:
                    following = _redirect(response, target)
                    if following is None:
                        yield response, deadline
                        return
                target = following
    raise RefusedURL(f"it redirects more than {MAX_REDIRECTS} times")


def refused(label: str, reason: str) -> DreaminaImageRefusedError:
    """The error for an image URL the preflight would not fetch."""
    return DreaminaImageRefusedError(
        f"image_urls[0] ({label}) was not fetched: {reason}. Give a public https URL or a data: URI; "
        "a host used for testing (such as a local emulator) can be listed in the connection's "
        "'allowed_image_hosts' extra"
    )


def preflight_url(
    source: str,
    label: str,
    *,
    allowed_hosts: Sequence[str],
    seconds: float,
    transport: httpx.BaseTransport | None,
) -> None:
    """Fetch as much of the image at ``source`` as its check needs, and check it; raises otherwise.

    :param label: how messages name the image (never its query, never inline data).
    """
    failure: DreaminaError | None = None
    try:
        with open_url(source, allowed_hosts=allowed_hosts, seconds=seconds, transport=transport) as (
            response,
            deadline,
        ):
            probe = _Probe(label, response)
            for chunk in raw_chunks(response):
                if probe.feed(chunk):
                    break
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("preflight deadline")
            probe.finish()
    except RefusedURL as refusal:
        failure = refused(label, str(refusal))
    except httpx.TimeoutException:
        failure = _too_slow(label, seconds)
    except httpx.HTTPError:
        failure = _unreachable(label)
    if failure is not None:  # raised here, so no httpx error (and its URL) rides along
        raise failure


def _unreachable(label: str) -> DreaminaConnectionError:
    # No status, no "connection refused": the text must not map what answers where.
    return DreaminaConnectionError(
        f"image_urls[0] ({label}) could not be fetched for its preflight check; nothing was submitted. "
        "Check that the URL is public and reachable (or set validate_image=False)"
    )


def _too_slow(label: str, seconds: float) -> DreaminaConnectionError:
    return DreaminaConnectionError(
        f"image_urls[0] ({label}) did not arrive within the preflight deadline of {seconds:g} s; nothing "
        "was submitted (the connection's 'preflight_deadline' extra sets it)"
    )


class _Probe:
    """Reads an image stream only as far as the checks need, never past the size limit."""

    def __init__(self, label: str, response: httpx.Response) -> None:
        self.label = label
        if response.status_code >= 400:
            raise DreaminaInvalidInputError(
                f"image_urls[0] ({label}): the image could not be fetched (the server answered with an "
                "error); RunComfy must be able to fetch it: check that the URL is public and not expired",
                field="image_urls",
            )
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise DreaminaInvalidInputError(
                f"image_urls[0] ({label}): the server sent the image compressed; it is not decoded",
                field="image_urls",
            )
        length = response.headers.get("Content-Length")
        self.declared_size = int(length) if length and length.isdigit() else None
        self.buffer = bytearray()
        self._next_attempt = HEAD_BYTES
        if self.declared_size is not None and self.declared_size >= IMAGE_MAX_BYTES:
            # Refuse from the header alone: no need to download an oversized image.
            check_image(b"", self.declared_size, source=label)

    def feed(self, chunk: bytes) -> bool:
        """Take the next chunk; True once nothing more needs to be read."""
        self.buffer += chunk
        if len(self.buffer) >= IMAGE_MAX_BYTES:
            check_image(b"", len(self.buffer), source=self.label)
        if self.declared_size is None or len(self.buffer) < self._next_attempt:
            return False
        self._next_attempt += HEAD_BYTES
        return _header_readable(bytes(self.buffer))

    def finish(self) -> ImageInfo:
        size = self.declared_size if self.declared_size is not None else len(self.buffer)
        return check_image(bytes(self.buffer), size, source=self.label)


def _header_readable(head: bytes) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(head)):
            return True
    except (UnidentifiedImageError, OSError, ValueError):
        return False
