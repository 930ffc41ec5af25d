"""The private-network guard for server-side fetches (MCP servers, image and file URLs).

A URL from a request may point anywhere, including the server's own network: by default
every address it resolves to must be public. `--allow-private-network` lifts this for
deployments that fetch from their own network on purpose. The check happens at resolve time
in `PublicResolver`, so a name that resolves to a public address for the check and a
private one for the connection (DNS rebinding) is still refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from .errors import InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# IPv6 forms that carry an IPv4 address in their last 32 bits and reach it: NAT64 (RFC 6052),
# IPv4-compatible (deprecated, RFC 4291) and IPv4-translated (RFC 2765). IPv4-mapped and 6to4
# have their own properties on IPv6Address.
_EMBEDDING = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("::/96"),
              ipaddress.IPv6Network("::ffff:0:0:0/96"))
# Local-use NAT64 (RFC 8215): translates into the operator's own network, wherever the IPv4
# address sits in it.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 transition address reaches, if it is one."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    for network in _EMBEDDING:
        if ip in network:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _parse(address: str) -> IPAddress:
    return ipaddress.ip_address(address.split("%", 1)[0])


def _not_public(ip: IPAddress) -> bool:
    return not ip.is_global or ip.is_multicast


def is_blocked(address: str) -> bool:
    """Whether an IP address is private, loopback, link-local or otherwise not public, including
    IPv6 addresses that embed such an IPv4 address (mapped, 6to4, NAT64, compatible, translated)."""
    ip = _parse(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _LOCAL_NAT64:
            return True
        inner = embedded_ipv4(ip)
        if inner is not None:
            return _not_public(inner)
    return _not_public(ip)


class BlockedAddress(OSError):
    """A fetch was refused because the host resolves to a non-public address."""


async def check_url(url: str, *, allow_private: bool, param: str, what: str = "URL") -> None:
    """Refuse (400, naming `param`) a URL that is not http(s) or resolves to a private address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"The {what} must be an http(s) URL.", param=param, code="invalid_url")
    if allow_private:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise InvalidRequest(f"The {what} host '{parts.hostname}' cannot be resolved: {e}", param=param,
                             code="invalid_url") from e
    for info in infos:
        if is_blocked(str(info[4][0])):  # an IPv4/IPv6 sockaddr starts with the address string
            raise InvalidRequest(
                f"The {what} '{parts.hostname}' resolves to a private, loopback or link-local address, which "
                "this server does not fetch from (start it with --allow-private-network to allow it).",
                param=param, code="url_not_allowed")


class PublicResolver(AbstractResolver):
    """An aiohttp resolver that refuses names resolving to non-public addresses."""

    def __init__(self, allow_private: bool = False) -> None:
        self.allow_private = allow_private
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not self.allow_private:
            for result in results:
                if is_blocked(result["host"]):
                    raise BlockedAddress(f"{host} resolves to a non-public address ({result['host']})")
        return results

    async def close(self) -> None:
        await self._inner.close()


def resolver(allow_private: bool) -> Any:
    return PublicResolver(allow_private)
