"""Where a recipient's mail goes next: MX lookup (RFC 5321 §5.1, RFC 7505) with dnspython's
async resolver, or one smarthost for everything.

MX hosts come in preference order, equal preferences shuffled; a domain without MX
records is its own implicit MX (its A/AAAA); a null MX (``MX 0 .``) accepts no mail. The
answers are cached for their TTL (at most ``max_ttl`` seconds), so a busy destination
costs one lookup a minute, not one a message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import random
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["Hop", "Router", "RoutingError"]


@dataclasses.dataclass(frozen=True)
class Hop:
    """One next hop to try: the name it was found by, an address to connect to, a port."""

    host: str
    address: str
    port: int

    def __str__(self) -> str:
        return self.label

    @functools.cached_property
    def label(self) -> str:
        """``host[address]:port``, as log lines and replies name it (made once)."""
        return f"{self.host}[{self.address}]:{self.port}"

    @functools.cached_property
    def key(self) -> str:
        """``address:port``: the destination whose slots a transaction takes."""
        return f"{self.address}:{self.port}"


class RoutingError(Exception):
    """No next hop: ``permanent`` failures bounce, the others are retried later."""

    def __init__(self, status: str, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text

    @property
    def permanent(self) -> bool:
        return self.status.startswith("5")


def _literal(domain: str) -> str | None:
    """The address of an address literal (``[192.0.2.1]``, ``[IPv6:...]``), else None."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    text = domain[1:-1]
    if text[:5].lower() == "ipv6:":
        text = text[5:]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


class Router:
    """Next hops for a domain. ``relayhost`` (host, port) sends everything there;
    ``nameserver`` (host, port) is the one DNS server asked (else the system's);
    ``mx_port`` is the port of every MX host."""

    def __init__(
        self,
        *,
        relayhost: tuple[str, int] | None = None,
        nameserver: tuple[str, int] | None = None,
        mx_port: int = 25,
        timeout: float = 10.0,
        max_ttl: float = 60.0,
    ) -> None:
        self.relayhost = relayhost
        self.nameserver = nameserver
        self.mx_port = mx_port
        self.timeout = timeout
        self.max_ttl = max_ttl
        self._resolver: Any = None
        self._cache: dict[str, tuple[float, list[tuple[int, str, list[str]]]]] = {}
        # With a relayhost, every message has the same destination and hop: made once.
        self._relay_destination = "[{}]:{}".format(*relayhost) if relayhost else ""
        self._relay_hops = [Hop(relayhost[0], relayhost[0], relayhost[1])] if relayhost else []

    def destination(self, recipient: str) -> str:
        """The key recipients are grouped by: one transaction per destination."""
        if self.relayhost is not None:
            return self._relay_destination
        return recipient.rpartition("@")[2].lower().rstrip(".")

    def _get_resolver(self) -> Any:
        if self._resolver is None:
            try:
                import dns.asyncresolver
            except ImportError as error:  # a hard dependency; say so clearly if broken
                raise RoutingError("4.4.3", f"dnspython is not installed: {error}") from error
            if self.nameserver is not None:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = [self.nameserver[0]]
                resolver.port = self.nameserver[1]
            else:
                resolver = dns.asyncresolver.Resolver()
            resolver.lifetime = self.timeout
            self._resolver = resolver
        return self._resolver

    async def route(self, destination: str) -> list[Hop]:
        """Hops to try in order. Raises RoutingError."""
        if self.relayhost is not None:
            return self._relay_hops  # callers only read it
        literal = _literal(destination)
        if literal is not None:
            return [Hop(destination, literal, self.mx_port)]
        now = time.monotonic()
        cached = self._cache.get(destination)
        if cached is not None and cached[0] > now:
            records = cached[1]
        else:
            records, ttl = await self._lookup(destination)
            self._cache[destination] = (now + min(ttl, self.max_ttl), records)
            if len(self._cache) > 10000:  # bounded: forget the oldest half
                for key in list(self._cache)[:5000]:
                    del self._cache[key]
        hops: list[Hop] = []
        for preference in sorted({p for p, _, _ in records}):
            group = [r for r in records if r[0] == preference]
            random.shuffle(group)
            for _, host, addresses in group:
                hops.extend(Hop(host, address, self.mx_port) for address in addresses)
        if not hops:
            raise RoutingError("4.4.4", f"no address for any MX host of {destination}")
        return hops

    async def _lookup(self, domain: str) -> tuple[list[tuple[int, str, list[str]]], float]:
        import dns.exception
        import dns.resolver

        resolver = self._get_resolver()
        try:
            answer = await resolver.resolve(domain, "MX", search=False)
        except dns.resolver.NXDOMAIN as error:
            raise RoutingError("5.1.2", f"Host or domain name not found: {domain}") from error
        except dns.resolver.NoAnswer:
            addresses, ttl = await self._addresses(domain)
            if not addresses:
                raise RoutingError(
                    "5.1.2", f"Host or domain name not found: {domain} has no MX, A or AAAA"
                ) from None
            return [(0, domain, addresses)], ttl
        except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.exception.DNSException) as e:
            raise RoutingError("4.4.3", f"Host or domain name lookup failed: {domain}: {e}") from e
        mx = [(int(r.preference), r.exchange.to_text(omit_final_dot=True)) for r in answer]
        if len(mx) == 1 and mx[0][1] in ("", "."):
            raise RoutingError("5.1.10", f"Domain {domain} does not accept mail (nullMX)")
        ttl = float(answer.rrset.ttl) if answer.rrset is not None else self.max_ttl
        found = await asyncio.gather(*(self._addresses(host) for _, host in mx))
        records = [(p, host, addrs) for (p, host), (addrs, _) in zip(mx, found, strict=True)]
        return records, ttl

    async def _addresses(self, host: str) -> tuple[list[str], float]:
        import dns.exception
        import dns.resolver

        resolver = self._get_resolver()
        addresses: list[str] = []
        ttl = self.max_ttl
        temporary: Exception | None = None
        for kind in ("A", "AAAA"):
            try:
                answer = await resolver.resolve(host, kind, search=False)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except dns.exception.DNSException as error:
                temporary = error
                continue
            if answer.rrset is not None:
                ttl = min(ttl, float(answer.rrset.ttl))
            addresses.extend(r.to_text() for r in answer)
        if not addresses and temporary is not None:
            raise RoutingError("4.4.3", f"Host lookup failed: {host}: {temporary}")
        return addresses, ttl


def group_by_destination(router: Router, recipients: Sequence[str]) -> dict[str, list[str]]:
    """The recipients grouped by the destination the router gives each (one delivery per group)."""
    groups: dict[str, list[str]] = {}
    for address in recipients:
        groups.setdefault(router.destination(address), []).append(address)
    return groups
