"""Where alerts may go: public addresses and the allowed networks, nothing else (no SSRF)."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import ip_address, ip_network

import httpcore
import pytest

from services.dispatch.delivery import build_http_client
from services.dispatch.push import HttpRequest, send
from services.dispatch.retry import HttpResponse, Refused
from services.dispatch.settings import DispatchSettings
from services.dispatch.targets import (
    GuardedNetworkBackend,
    IPAddress,
    TargetRefused,
    literal_refusal,
    refusal,
)
from tests.support.webhook_receiver import WebhookReceiver

LAN = [ip_network("10.20.0.0/16")]
LOOPBACK = [ip_network("127.0.0.0/8")]


@pytest.mark.parametrize(
    ("address", "allowed", "refused_as"),
    [
        # public unicast: allowed
        ("93.184.215.14", [], None),
        ("2606:4700::6810:84e5", [], None),
        # the classic SSRF targets: refused
        ("127.0.0.1", [], "loopback"),
        ("::1", [], "loopback"),
        ("169.254.169.254", [], "link-local"),  # cloud metadata service
        ("fe80::1", [], "link-local"),
        ("10.1.2.3", [], "private"),
        ("172.16.0.9", [], "private"),
        ("192.168.1.1", [], "private"),
        ("fd00::5", [], "private"),  # unique local
        ("0.0.0.0", [], "unspecified"),
        ("224.0.0.1", [], "multicast"),
        ("100.64.0.1", [], "reserved"),  # carrier-grade NAT: neither private nor public
        # IPv4 hidden in IPv6 is judged as that IPv4 address
        ("::ffff:127.0.0.1", [], "loopback"),
        ("2002:a01:203::1", [], "private"),  # 6to4 of 10.1.2.3
        ("::ffff:93.184.215.14", [], None),
        # IPv4-compatible (::/96, deprecated): never public, whatever IPv4 it holds
        ("::127.0.0.1", [], "IPv4-compatible"),
        ("::93.184.215.14", [], "IPv4-compatible"),
        ("::a00:1", [], "IPv4-compatible"),  # ::10.0.0.1
        # an operator's allowed network lets exactly its addresses through
        ("10.20.3.4", LAN, None),
        ("10.21.3.4", LAN, "private"),
        ("127.0.0.1", LOOPBACK, None),
        ("::ffff:127.0.0.1", LOOPBACK, None),
        # an IPv4 network never admits an IPv6 address (and vice versa)
        ("::1", LOOPBACK, "loopback"),
    ],
)
def test_refusal(address: str, allowed: list, refused_as: str | None) -> None:
    reason = refusal(ip_address(address), allowed)
    if refused_as is None:
        assert reason is None
    else:
        assert reason is not None and refused_as in reason and str(ip_address(address)) in reason


@pytest.mark.parametrize(
    ("host", "refused"),
    [
        ("127.0.0.1", True),
        ("[::1]", True),  # as urlsplit leaves it in a netloc
        ("localhost", True),  # RFC 6761: always loopback, whatever DNS says
        ("LOCALHOST.", True),
        ("cad.localhost", True),
        ("169.254.169.254", True),
        ("93.184.215.14", False),
        ("cad.example.org", False),  # a name: judged when resolved, at each connect
    ],
)
def test_literal_refusal(host: str, refused: bool) -> None:
    assert (literal_refusal(host) is not None) is refused


class _Inner(httpcore.AsyncNetworkBackend):
    """Records connects; connecting to an address in ``unreachable`` fails."""

    def __init__(self, unreachable: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.connects: list[str] = []
        self.unreachable = unreachable

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):  # type: ignore[no-untyped-def]  # noqa: ASYNC109
        self.connects.append(host)
        if host in self.unreachable:
            raise httpcore.ConnectError(f"{host} unreachable")
        return object()  # a stream stand-in: the backend returns it untouched

    async def sleep(self, seconds: float) -> None:
        pass


def _resolving(*addresses: str):  # type: ignore[no-untyped-def]
    async def resolver(host: str, port: int) -> list[IPAddress]:
        return [ip_address(a) for a in addresses]

    return resolver


async def test_a_name_resolving_to_private_and_allowed_addresses_connects_only_to_allowed() -> None:
    # DNS rebinding: the name answers a private address first; the check and the connect use
    # the same answer, so the private one is never connected to.
    inner = _Inner()
    backend = GuardedNetworkBackend(
        LOOPBACK, inner=inner, resolver=_resolving("10.9.9.9", "127.0.0.1")
    )
    await backend.connect_tcp("cad.example.org", 443)
    assert inner.connects == ["127.0.0.1"]


async def test_the_next_allowed_address_is_tried_when_one_does_not_answer() -> None:
    inner = _Inner(unreachable={"127.0.0.2"})
    backend = GuardedNetworkBackend(
        LOOPBACK, inner=inner, resolver=_resolving("127.0.0.2", "127.0.0.3")
    )
    await backend.connect_tcp("cad.example.org", 443)
    assert inner.connects == ["127.0.0.2", "127.0.0.3"]


async def test_a_name_with_only_refused_addresses_is_refused_without_connecting() -> None:
    inner = _Inner()
    backend = GuardedNetworkBackend(inner=inner, resolver=_resolving("169.254.169.254"))
    with pytest.raises(TargetRefused, match=r"169\.254\.169\.254 is a link-local address"):
        await backend.connect_tcp("metadata.internal", 80)
    assert inner.connects == []


async def test_a_name_that_does_not_resolve_is_a_network_error_retried_like_others() -> None:
    async def broken(host: str, port: int) -> list[IPAddress]:
        raise OSError("Name or service not known")

    backend = GuardedNetworkBackend(inner=_Inner(), resolver=broken)
    with pytest.raises(httpcore.ConnectError, match="Name or service not known"):
        await backend.connect_tcp("gone.example.org", 443)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


def _settings(**overrides: object) -> DispatchSettings:
    return DispatchSettings(admin_token="targets-test-token-0123456789", **overrides)  # type: ignore[arg-type]


async def test_the_delivery_client_refuses_loopback_unless_it_is_allowed(
    receiver: WebhookReceiver,
) -> None:
    request = HttpRequest("POST", receiver.url("/hook"), {}, b"{}")
    async with build_http_client(_settings()) as client:
        refused = await send(client, request)
    assert isinstance(refused, Refused) and "loopback" in refused.detail
    assert receiver.received("/hook") == []  # nothing was sent

    async with build_http_client(_settings(allowed_target_networks=["127.0.0.0/8"])) as client:
        delivered = await send(client, request)
    assert isinstance(delivered, HttpResponse) and delivered.status == 200
    assert len(receiver.received("/hook")) == 1
