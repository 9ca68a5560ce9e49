"""Which subscriber URLs may be called: `http`/`https` to hosts with global addresses only (no loopback,
private, link-local, shared, reserved, multicast or unspecified address), unless DLR_SUBSCRIPTION_ALLOW_PRIVATE.

Checked twice: when a URL is registered (a clear code 1 for the client), and at every new connection, on the
address the connection is then made to, so that a name re-pointed at an internal address after registration
(DNS rebinding) is refused too. Redirects are never followed (dispatch), and the environment's proxy
settings are ignored: a proxy would make the connection instead of us, past this check.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import SplitResult, urlsplit

from aiohappyeyeballs import AddrInfoType, SocketFactoryType

MAX_URL = 2000
RESOLVE_TIMEOUT = 5.0
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(ValueError):
    """A URL or address a delivery may not go to; the message says why."""


def parse_url(url: str) -> SplitResult:
    """The URL split, or AddressRefused: http(s), a host, no credentials, no fragment, sane length."""
    if len(url) > MAX_URL:
        raise AddressRefused(f"longer than {MAX_URL} characters")
    if not url.isascii() or any(c.isspace() or ord(c) < 32 for c in url):
        raise AddressRefused("must be an ASCII URL without spaces (IDNA- and percent-encode it)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as exc:
        raise AddressRefused(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise AddressRefused("must be an http:// or https:// URL")
    if not parts.hostname:
        raise AddressRefused("must name a host")
    if parts.username is not None or parts.password is not None:
        raise AddressRefused("must not carry credentials (user:password@); put a token in the path or query")
    if parts.fragment:
        raise AddressRefused("must not have a #fragment")
    return parts


def refusal(address: IPAddress) -> str | None:
    """Why a delivery may not connect to this address, or None when it is a global unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_multicast:
        return f"{address} is a multicast address"
    if not address.is_global:
        return f"{address} is not a global address (loopback, private, link-local, shared or reserved)"
    return None


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (an IP literal to itself)."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError) as exc:
        raise AddressRefused(f"host {host!r} does not resolve ({type(exc).__name__})") from None
    # The scope of a link-local IPv6 address (`%eth0`) is no part of the address.
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def _check(addresses: Iterable[IPAddress], host: str) -> list[IPAddress]:
    found = list(addresses)
    if not found:
        raise AddressRefused(f"host {host!r} does not resolve")
    for address in found:
        reason = refusal(address)
        if reason is not None:
            # Any address refused refuses the host: which one a connection would use is the resolver's choice.
            raise AddressRefused(f"host {host!r} resolves to {reason}")
    return found


async def check_url(url: str, allow_private: bool) -> str:
    """The URL, or AddressRefused saying why it may not be registered."""
    parts = parse_url(url)
    if not allow_private:
        host = parts.hostname or ""
        _check(await resolve(host, parts.port or (443 if parts.scheme == "https" else 80)), host)
    return url


def socket_factory(allow_private: bool) -> SocketFactoryType | None:
    """What the HTTP client makes its sockets with: None (the default) when private addresses are allowed,
    else a factory that refuses to make one for an address the guard does not allow. It is called with the
    address each connection is about to be made to, after any name resolution: a name re-pointed at an
    internal address after registration is refused here, an IP literal too."""
    if allow_private:
        return None

    def guarded(addr_info: AddrInfoType) -> socket.socket:
        family, kind, proto, _, sockaddr = addr_info
        # The scope of a link-local IPv6 address (`%eth0`) is no part of the address.
        reason = refusal(ipaddress.ip_address(str(sockaddr[0]).split("%")[0]))
        if reason is not None:
            raise OSError(errno.EACCES, f"address refused: {reason}")
        return socket.socket(family, kind, proto)

    return guarded
