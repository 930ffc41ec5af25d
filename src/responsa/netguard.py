"""The private-network guard for server-side fetches (MCP servers, image and file URLs).

A URL from a request may point anywhere, including the server's own network: by default
every address a fetch connects to must be public. `--allow-private-network` lifts this for
deployments that fetch from their own network on purpose, and `--allow-private-address`
lets through only the networks named. `Guard.permits` is the one rule; the fetch client
(fetcher.py) applies it to every connection it opens, and `check_url` applies it to a URL
before anything is sent, for a clear 400.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .errors import InvalidRequest

if TYPE_CHECKING:
    from .config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# IPv6 forms that carry an IPv4 address in their last 32 bits and reach it: NAT64 (RFC 6052),
# IPv4-compatible (deprecated, RFC 4291) and IPv4-translated (RFC 2765). IPv4-mapped and 6to4
# have their own properties on IPv6Address.
_EMBEDDING = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("::/96"),
              ipaddress.IPv6Network("::ffff:0:0:0/96"))
# Local-use NAT64 (RFC 8215): translates into the operator's own network, wherever the IPv4
# address sits in it.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")

NOT_PUBLIC = "a private, loopback or link-local address"
HOW_TO_ALLOW = "start it with --allow-private-network or --allow-private-address to allow it"


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


def parse_network(text: str) -> str:
    """An address or CIDR network for --allow-private-address, normalized (`10.1.2.3` -> `10.1.2.3/32`)."""
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address or CIDR network (e.g. 10.0.0.0/8, fd00::/8, "
                         "192.168.1.20)") from None


class BlockedAddress(OSError):
    """A connection was refused because its address is not public (and not allowed)."""


class Guard:
    """Which addresses server-side fetches may connect to: public ones, and those the settings allow."""

    def __init__(self, allow_private: bool = False, allowed: Iterable[str] = ()) -> None:
        self.allow_private = allow_private
        self.allowed: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in allowed)

    @classmethod
    def from_settings(cls, settings: Settings) -> Guard:
        return cls(settings.allow_private_network, settings.allow_private_address)

    def permits(self, address: str) -> bool:
        """Whether a connection to this IP address is allowed."""
        if self.allow_private:
            return True
        ip = _parse(address)
        if self.allowed:
            candidates: list[IPAddress] = [ip]
            if isinstance(ip, ipaddress.IPv6Address) and (inner := embedded_ipv4(ip)) is not None:
                candidates.append(inner)
            if any(c in n for c in candidates for n in self.allowed if c.version == n.version):
                return True
        return not is_blocked(address)

    def check_address(self, address: str) -> None:
        """Raise BlockedAddress unless a connection to this IP address is allowed."""
        if not self.permits(address):
            raise BlockedAddress(f"{address} is {NOT_PUBLIC}")

    async def check_url(self, url: str, *, param: str, what: str = "URL") -> None:
        """Refuse (400, naming `param`) a URL that is not http(s) or whose host resolves to an
        address this guard does not permit."""
        try:
            parts = urlsplit(url)
        except ValueError:  # an unclosed IPv6 bracket
            raise InvalidRequest(f"The {what} must be an http(s) URL.", param=param, code="invalid_url") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidRequest(f"The {what} must be an http(s) URL.", param=param, code="invalid_url")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise InvalidRequest(f"The {what} has an invalid port.", param=param, code="invalid_url") from None
        if self.allow_private:
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
        except (OSError, ValueError, UnicodeError) as e:  # ValueError: a NUL in the name
            raise InvalidRequest(f"The {what} host '{parts.hostname}' cannot be resolved: {e}", param=param,
                                 code="invalid_url") from e
        for info in infos:
            if not self.permits(str(info[4][0])):  # an IPv4/IPv6 sockaddr starts with the address string
                raise InvalidRequest(
                    f"The {what} '{parts.hostname}' resolves to {NOT_PUBLIC}, which this server does not "
                    f"fetch from ({HOW_TO_ALLOW}).", param=param, code="url_not_allowed")
