"""The SSRF guard: every address a remote URL resolves to, checked before use and again in
the HTTP client's connector for every connection it opens (redirects included).
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from typing import Any

import aiohttp
from yarl import URL

from pipeline.data.errors import DataError
from pipeline.data.remote.limits import _METADATA, ALLOW_PRIVATE_ENV, CONNECT_TIMEOUT_S, READ_TIMEOUT_S, redact

# ------------------------------------------------------------------------------ SSRF guard


class UnsafeAddressError(DataError):
    """A connection was refused by the SSRF guard (raised inside the HTTP client too)."""

    def __init__(self, host: str, address: str, problem: str):
        self.host, self.address, self.problem = host, address, problem
        where = host if host == address else f"{host} ({address})"
        super().__init__(f"refused to connect to {where}: {problem}")


def address_problem(address: str, *, allow_private: bool = False) -> str | None:
    """Why connecting to IP ``address`` is refused, or None when it is allowed.

    >>> address_problem("169.254.169.254", allow_private=True)
    'it is a link-local address (169.254.0.0/16, fe80::/10: where cloud metadata services live)'
    >>> address_problem("10.0.0.1") is not None, address_problem("10.0.0.1", allow_private=True)
    (True, None)
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):  # an IPv4 address hiding inside an IPv6 one, judged first
        candidates[:0] = [a for a in (ip.ipv4_mapped, ip.sixtofour, ip.teredo and ip.teredo[1]) if a]
    for ip in candidates:
        if ip.is_link_local:
            return "it is a link-local address (169.254.0.0/16, fe80::/10: where cloud metadata services live)"
        if ip in _METADATA:
            return "it is a cloud metadata service address"
        if ip.is_multicast:
            return "it is a multicast address"
        if ip.is_unspecified:
            return "it is the unspecified address"
        if allow_private:
            continue
        if ip.is_loopback:
            return f"it is a loopback address (set {ALLOW_PRIVATE_ENV}=1 only for a local stack or tests)"
        if ip.is_private:
            return f"it is a private address (set {ALLOW_PRIVATE_ENV}=1 only for a local stack or tests)"
        if not ip.is_global:
            return "it is a reserved, non-public address"
    return None


def check_host(host: str, port: int | None, *, allow_private: bool = False) -> list[str]:
    """Resolve ``host`` and return its addresses; :class:`UnsafeAddressError` if any is refused.

    All or nothing: a name with one public and one private address is refused.
    """
    try:
        infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise DataError(f"cannot resolve host {host!r} ({exc})") from exc
    addresses = sorted({info[4][0] for info in infos})
    for address in addresses:
        problem = address_problem(address, allow_private=allow_private)
        if problem:
            raise UnsafeAddressError(host, address, problem)
    return addresses


def check_url(url: str, *, allow_private: bool = False, what: str = "URL") -> urllib.parse.SplitResult:
    """Check an http(s) URL's scheme, user info and host (resolved); return it split."""
    parts = urllib.parse.urlsplit(url)
    allowed = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in allowed:
        hint = "" if allow_private else f" (http:// only with {ALLOW_PRIVATE_ENV}=1)"
        raise DataError(f"{what} must use {' or '.join(s + '://' for s in allowed)}{hint}")
    if parts.username or parts.password:
        raise DataError(f"{what} must not carry credentials (user:password@); they come from the environment")
    if not parts.hostname:
        raise DataError(f"{what} has no host")
    try:
        port = parts.port
    except ValueError as exc:
        raise DataError(f"{what} has a bad port ({exc})") from exc
    check_host(parts.hostname, port, allow_private=allow_private)
    return parts


class _GuardedConnector(aiohttp.TCPConnector):
    """A connector that checks each address it is about to connect to.

    ``_resolve_host`` is where aiohttp turns the host of every connection (first request,
    every redirect, IP literals and names alike) into the addresses it then connects to;
    checking its result closes the DNS-rebinding window between check and connect.
    """

    def __init__(self, *, allow_private: bool, **kwargs: Any):
        super().__init__(**kwargs)
        self._allow_private = allow_private

    async def _resolve_host(self, host: str, port: int, traces: Any = None) -> list[Any]:
        results = await super()._resolve_host(host, port, traces=traces)
        for result in results:
            problem = address_problem(result["host"], allow_private=self._allow_private)
            if problem:
                raise UnsafeAddressError(host, result["host"], problem)
        return results


# aiohttp's hook is private API: fail loudly (and the tests fail) if a release renames it.
if not callable(getattr(aiohttp.TCPConnector, "_resolve_host", None)):  # pragma: no cover
    raise ImportError("aiohttp.TCPConnector._resolve_host is gone: the SSRF guard in pipeline.data.remote needs updating")


async def _guarded_client(*, allow_private: bool, redirects: list[str], **_: Any) -> aiohttp.ClientSession:
    async def on_redirect(session: Any, ctx: Any, params: aiohttp.TraceRequestRedirectParams) -> None:
        location = params.response.headers.get("Location", "")
        target = params.url.join(URL(location))
        redirects.append(str(target))
        allowed = ("https", "http") if allow_private else ("https",)
        if target.scheme not in allowed:
            raise DataError(f"redirected to {redact(str(target))}: only {' and '.join(allowed)} are followed")

    trace = aiohttp.TraceConfig()
    trace.on_request_redirect.append(on_redirect)
    return aiohttp.ClientSession(
        connector=_GuardedConnector(allow_private=allow_private),
        trace_configs=[trace],
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=READ_TIMEOUT_S),
        trust_env=False,  # no proxies from the environment: the guard must see the real target
    )
