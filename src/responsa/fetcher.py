"""Server-side downloads of URLs from requests (image and file URLs), behind the private-network guard.

One client for all of them. The guard is applied where connections are made, so nothing
gets around it: the resolver refuses a host name with any address the guard does not
permit, and the socket factory refuses every connection to such an address, which covers
IP-literal hosts (never given to a resolver) and addresses a name resolves to at connection
time (DNS rebinding). Redirects are followed here, one hop at a time, so a hop that leads to
a refused address is named in the error.
"""

from __future__ import annotations

import asyncio
import functools
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from .netguard import NOT_PUBLIC, BlockedAddress, Guard

if TYPE_CHECKING:
    import aiohttp

FETCH_TIMEOUT = 30.0
MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})


class FetchFailed(Exception):
    """A download failed; `str()` says why, for a message that names the URL first."""


class Refused(FetchFailed):
    """The URL, or a redirect from it, leads to an address the guard does not permit."""


class TooLarge(FetchFailed):
    """The body is larger than the limit."""


@dataclass(frozen=True)
class Download:
    """A downloaded body, its declared Content-Type and the URL it came from after redirects."""

    data: bytes
    content_type: str | None
    url: str


@functools.cache
def guarded_resolver() -> type:
    """The class of an aiohttp resolver that refuses names resolving to an address the guard does
    not permit. Made on first use: aiohttp (20 MiB resident) is loaded by the first download,
    which most servers never make."""
    from aiohttp.abc import AbstractResolver, ResolveResult
    from aiohttp.resolver import DefaultResolver

    class GuardedResolver(AbstractResolver):
        def __init__(self, guard: Guard) -> None:
            self.guard = guard
            self._inner = DefaultResolver()

        async def resolve(self, host: str, port: int = 0,
                          family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
            results = await self._inner.resolve(host, port, family)
            for result in results:
                self.guard.check_address(result["host"])
            return results

        async def close(self) -> None:
            await self._inner.close()

    return GuardedResolver


class Fetcher:
    """GETs URLs for the server with every connection checked by the guard."""

    def __init__(self, guard: Guard, *, max_redirects: int = MAX_REDIRECTS) -> None:
        self.guard = guard
        self.max_redirects = max_redirects
        self._session: aiohttp.ClientSession | None = None

    def _socket(self, info: tuple) -> socket.socket:
        family, type_, proto, _, address = info
        self.guard.check_address(str(address[0]))
        return socket.socket(family=family, type=type_, proto=proto)

    def _client(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None or self._session.closed:
            resolver: Any = guarded_resolver()(self.guard)
            connector = aiohttp.TCPConnector(resolver=resolver, socket_factory=self._socket, limit=32)
            # trust_env stays off: a proxy from the environment would make the peer address the proxy's.
            self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(connect=10))
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def get(self, url: str, limit: int, *, time_limit: float = FETCH_TIMEOUT) -> Download:
        """The body of `url` (at most `limit` bytes), following up to `max_redirects` redirects."""
        try:
            async with asyncio.timeout(time_limit):
                return await self._get(url, limit)
        except TimeoutError:
            raise FetchFailed(f"no answer within {time_limit:g} seconds") from None

    async def _get(self, url: str, limit: int) -> Download:
        import aiohttp

        target = url
        for hop in range(self.max_redirects + 1):
            host = _http_host(target)
            if host is None:
                raise FetchFailed("it is not an http(s) URL" if hop == 0 else
                                  f"it redirects to '{target}', which is not an http(s) URL")
            try:
                async with self._client().get(target, allow_redirects=False) as resp:
                    location = resp.headers.get("location")
                    if resp.status in REDIRECTS and location:
                        target = _join(target, location)
                        continue
                    if resp.status != 200:
                        raise FetchFailed(f"HTTP {resp.status}")
                    if resp.content_length is not None and resp.content_length > limit:
                        raise TooLarge(f"larger than the limit of {limit} bytes")
                    data = bytearray()
                    async for chunk in resp.content.iter_chunked(65536):
                        data += chunk
                        if len(data) > limit:
                            raise TooLarge(f"larger than the limit of {limit} bytes")
                    return Download(bytes(data), resp.headers.get("content-type"), target)
            except aiohttp.ClientConnectorError as e:
                if isinstance(e.os_error, BlockedAddress) or isinstance(e.__cause__, BlockedAddress):
                    raise Refused(f"resolves to {NOT_PUBLIC}" if hop == 0 else
                                  f"redirects to '{host}', {NOT_PUBLIC}") from None
                raise FetchFailed(str(e)) from None
            except aiohttp.ClientError as e:
                raise FetchFailed(str(e) or type(e).__name__) from None
        raise FetchFailed(f"more than {self.max_redirects} redirects")


def _http_host(url: str) -> str | None:
    """The host of an http(s) URL; None for anything else (or a URL that does not parse)."""
    try:
        parts = urlsplit(url)
        return parts.hostname if parts.scheme in ("http", "https") else None
    except ValueError:
        return None


def _join(base: str, location: str) -> str:
    try:
        return urljoin(base, location)
    except ValueError:
        return location  # refused as not an http(s) URL on the next hop
