"""Routing by MX against a real DNS server: dnsmasq on a loopback port answering MX, A,
AAAA and null MX records from its command line, MX hosts on 127.0.0.2, 127.0.0.3... all
on one --mx-port."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferrosmtp.relay.routing import Router, RoutingError
from tests.peers import free_port
from tests.relay.support import Dnsmasq, RelayProcess, message, next_hop, send, wait_until
from tests.relay.test_delivery import listed, report_parts

RECORDS = [
    "--local=/test/",  # answer .test from these records only (NXDOMAIN, NODATA)
    "--mx-host=a.test,mx1.a.test,10",
    "--mx-host=a.test,mx2.a.test,20",
    "--host-record=mx1.a.test,127.0.0.2",
    "--host-record=mx2.a.test,127.0.0.3",
    "--mx-host=eq.test,mx1.a.test,5",
    "--mx-host=eq.test,mx2.a.test,5",
    "--host-record=nomx.test,127.0.0.4,::1",
    "--mx-host=nullmx.test,.,0",
    "--mx-host=sender.test,mx.sender.test,10",
    "--host-record=mx.sender.test,127.0.0.5",
]

# Each test runs on both queue backends (tests/relay/conftest.py).
pytestmark = pytest.mark.usefixtures("relay_backend")


@pytest.fixture(scope="module")
def dns() -> Iterator[Dnsmasq]:
    with Dnsmasq(RECORDS) as server:
        yield server


def router(dns: Dnsmasq, port: int = 2525) -> Router:
    return Router(nameserver=("127.0.0.1", dns.port), mx_port=port)


def test_mx_in_preference_order_with_addresses(dns: Dnsmasq) -> None:
    hops = asyncio.run(router(dns).route("a.test"))
    assert [(h.host, h.address, h.port) for h in hops] == [
        ("mx1.a.test", "127.0.0.2", 2525),
        ("mx2.a.test", "127.0.0.3", 2525),
    ]


def test_equal_preferences_are_shuffled(dns: Dnsmasq) -> None:
    async def firsts() -> collections.Counter[str]:
        seen: collections.Counter[str] = collections.Counter()
        r = router(dns)
        for _ in range(60):
            r._cache.clear()
            seen[(await r.route("eq.test"))[0].host] += 1
        return seen

    seen = asyncio.run(firsts())
    assert set(seen) == {"mx1.a.test", "mx2.a.test"}, seen


def test_no_mx_falls_back_to_a_and_aaaa(dns: Dnsmasq) -> None:
    hops = asyncio.run(router(dns).route("nomx.test"))
    assert [h.address for h in hops] == ["127.0.0.4", "::1"]


def test_null_mx_and_unknown_domains_are_permanent(dns: Dnsmasq) -> None:
    with pytest.raises(RoutingError) as null:
        asyncio.run(router(dns).route("nullmx.test"))
    assert null.value.status == "5.1.10" and null.value.permanent
    with pytest.raises(RoutingError) as unknown:
        asyncio.run(router(dns).route("nowhere.test"))
    assert unknown.value.status == "5.1.2"


def test_unreachable_nameserver_is_temporary() -> None:
    dead = Router(nameserver=("127.0.0.1", free_port()), timeout=1)
    with pytest.raises(RoutingError) as error:
        asyncio.run(dead.route("a.test"))
    assert error.value.status == "4.4.3" and not error.value.permanent


@contextlib.contextmanager
def mx_hosts(port: int, *addresses: str) -> Iterator[list[object]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(next_hop(a, port))[0] for a in addresses]


def test_delivery_by_mx_next_mx_on_4xx_or_refused_connection(dns: Dnsmasq, tmp_path: Path) -> None:
    port = free_port()
    spool = tmp_path / "spool"
    with RelayProcess(spool, "--dns", dns.address, "--mx-port", str(port)) as relay:
        # mx1 answers 451 to the message: mx2 takes it; then mx1 takes the next one.
        with mx_hosts(port, "127.0.0.2", "127.0.0.3") as (mx1, mx2):
            mx1.data_replies = ["451 4.3.2 not now"]  # type: ignore[attr-defined]
            assert send(relay.port, "s@x.test", ["u@a.test", "v@a.test"], message("4xx"))[0] == 250
            (got,) = mx2.wait(1)  # type: ignore[attr-defined]
            assert got.rcpt_tos == ["u@a.test", "v@a.test"]  # one transaction per destination
            assert send(relay.port, "s@x.test", ["w@a.test"], message("mx1"))[0] == 250
            (got,) = mx1.wait(1)  # type: ignore[attr-defined]
            assert got.rcpt_tos == ["w@a.test"]
        # mx1 is down (connection refused): mx2 takes the message in the same attempt.
        with mx_hosts(port, "127.0.0.3") as (mx2,):
            assert send(relay.port, "s@x.test", ["u@a.test"], message("mx2"))[0] == 250
            (got,) = mx2.wait(1)  # type: ignore[attr-defined]
            assert got.rcpt_tos == ["u@a.test"]
        wait_until(lambda: listed(spool) == [], 10, "an empty queue")
        log = relay.log()
    assert "relay=mx2.a.test[127.0.0.3]" in log and "relay=mx1.a.test[127.0.0.2]" in log


def test_null_mx_bounces_at_once_to_the_senders_mx(dns: Dnsmasq, tmp_path: Path) -> None:
    port = free_port()
    spool = tmp_path / "spool"
    with mx_hosts(port, "127.0.0.5") as (sender_mx,):
        with RelayProcess(spool, "--dns", dns.address, "--mx-port", str(port)) as relay:
            code, _, _ = send(relay.port, "s@sender.test", ["u@nullmx.test"], message("null"))
            assert code == 250
            (bounce,) = sender_mx.wait(1)  # type: ignore[attr-defined]
            assert bounce.mail_from == "<>" and bounce.rcpt_tos == ["s@sender.test"]
            _, groups = report_parts(bounce)
            assert groups[1]["Status"] == "5.1.10"
            assert groups[1]["Final-Recipient"] == "rfc822; u@nullmx.test"
            wait_until(lambda: listed(spool) == [], 10, "an empty queue")
            del relay
