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


def is_blocked(address: str) -> bool:
    """Whether an IP address is private, loopback, link-local or otherwise not public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


class BlockedAddress(OSError):
    """A fetch was refused because the host resolves to a non-public address."""


async def check_url(url: str, *, allow_private: bool, param: str, what: str = "URL") -> None:
    """Refuse (400, naming `param`) a URL that is not http(s) or resolves to a private address."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # an unclosed IPv6 bracket, a port out of range or not a number
        parts, port = None, 0
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"The {what} must be an http(s) URL.", param=param, code="invalid_url")
    if allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError, UnicodeError) as e:  # ValueError: a NUL in the name
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
