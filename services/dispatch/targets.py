"""Which network addresses dispatch may send alerts to.

Why: a webhook URL is typed by an operator, a push endpoint comes from a browser. Without a
check dispatch would POST signed alerts (and retry them for hours) to whatever they name: the
cloud metadata service at 169.254.169.254, a database or admin page on localhost or the
office LAN — server-side request forgery, with our signature on it. So only public unicast
addresses are reachable by default; an operator lists the private networks that really hold
receivers (a CAD on the city's LAN, a test receiver on loopback) in
``SHOTLINE_DISPATCH_ALLOWED_TARGET_NETWORKS``.

Where it is enforced:

* :func:`refusal` — the pure decision for one address;
* :class:`GuardedNetworkBackend` — the HTTP client's connector: it resolves the host, drops
  refused addresses and connects to an allowed one, so what was checked is what is connected
  to (a DNS answer that changes between a check and the connect cannot slip through);
  with none allowed it raises :class:`TargetRefused`, which delivery records as a failure
  that is not retried (``retry.Refused``);
* the admin API refuses a URL whose host is a refused IP literal (422 naming the field).

Not covered: requests sent through an HTTP proxy from the environment (``HTTPS_PROXY``) connect
to the proxy, which then does the egress filtering.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import httpcore

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
#: (host, port) -> the addresses it resolves to, in the resolver's order.
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]


class TargetRefused(Exception):
    """Every address of a delivery's host is refused (see :func:`refusal`). Not an
    ``httpcore`` error, so ``httpx`` passes it through unchanged to the caller."""


def refusal(address: IPAddress, allowed: Iterable[IPNetwork] = ()) -> str | None:
    """Why alerts may not be sent to ``address``, or None if they may.

    Allowed: a public (globally routable) unicast address, or any address inside one of
    ``allowed``. An IPv4 address embedded in IPv6 (mapped ``::ffff:a.b.c.d``, 6to4 or Teredo)
    is judged as that IPv4 address. An IPv4-compatible address (``::a.b.c.d``, ``::/96``) is
    never public: RFC 4291 §2.5.5.1 deprecates it, no router forwards it, and stacks that
    still honour it reach the embedded IPv4 address (``::127.0.0.1`` is loopback there).
    """
    inner = _embedded_v4(address)
    judged = inner if inner is not None else address
    if any(judged.version == net.version and judged in net for net in allowed):
        return None
    kind = _kind(judged)
    if kind is None:
        return None
    shown = f"{address} ({judged})" if judged is not address else str(address)
    return f"{shown} is a {kind} address"


def _embedded_v4(address: IPAddress) -> IPv4Address | None:
    if isinstance(address, IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address
    return None


#: RFC 4291 §2.5.5.1: "IPv4-Compatible IPv6 address", deprecated; :: and ::1 are inside it.
_IPV4_COMPATIBLE = IPv6Network("::/96")


def _kind(address: IPAddress) -> str | None:
    """The class of a non-public address (None for a public unicast one)."""
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_unspecified:
        return "unspecified"
    if address.is_private:
        return "private"
    if address.version == 6 and address in _IPV4_COMPATIBLE:
        return "IPv4-compatible (deprecated, RFC 4291)"
    if not address.is_global:
        return "reserved (not publicly routable)"
    return None


def literal_refusal(host: str, allowed: Iterable[IPNetwork] = ()) -> str | None:
    """:func:`refusal` of ``host`` if it is an IP literal (brackets allowed) or ``localhost``
    (RFC 6761: always loopback); None for other names, which are judged when they are
    resolved, at each connect."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        name = "127.0.0.1"
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return None
    return refusal(address, allowed)


async def resolve(host: str, port: int) -> list[IPAddress]:
    """The addresses of ``host`` (an IP literal is itself), through the event loop's resolver.

    Raises ``socket.gaierror`` when the name does not resolve.
    """
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[IPAddress, None] = {}
    for _family, _type, _proto, _name, sockaddr in infos:
        seen.setdefault(ipaddress.ip_address(sockaddr[0].split("%", 1)[0]), None)
    return list(seen)


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """httpcore's connector with :func:`refusal` applied to every TCP connect.

    Resolves the host itself and connects to the first allowed address that answers (TLS
    still verifies the certificate against the URL's host name: httpcore passes it as the
    server name). Raises :class:`TargetRefused` if no address is allowed; a name that does
    not resolve, or resolves too slowly, is an ``httpcore.ConnectError`` /
    ``httpcore.ConnectTimeout`` like any other network failure (retried).
    """

    def __init__(
        self,
        allowed: Sequence[IPNetwork] = (),
        *,
        inner: httpcore.AsyncNetworkBackend | None = None,
        resolver: Resolver = resolve,
    ) -> None:
        self.allowed = tuple(allowed)
        self._inner = inner or httpcore.AnyIOBackend()
        self._resolve = resolver

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await asyncio.wait_for(self._resolve(host, port), timeout)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"resolving {host}: {exc}") from exc
        reasons = [(a, refusal(a, self.allowed)) for a in addresses]
        permitted = [a for a, reason in reasons if reason is None]
        if not permitted:
            why = "; ".join(reason for _, reason in reasons if reason) or "no address"
            raise TargetRefused(
                f"{host}: {why}; dispatch sends only to public addresses and to the networks "
                "in SHOTLINE_DISPATCH_ALLOWED_TARGET_NETWORKS"
            )
        error: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in permitted:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise TargetRefused("unix sockets are not delivery targets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
