"""Who may relay, and the hop limit: the relay's acceptance rules (as Postfix's
``permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination`` and
``hopcount_limit``)."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable
from typing import Any

__all__ = [
    "HOP_LIMIT",
    "RELAY_DENIED",
    "TOO_MANY_HOPS",
    "HopCounter",
    "RelayPolicy",
    "client_address",
]

RELAY_DENIED = "554 5.7.1 Relay access denied"
TOO_MANY_HOPS = "554 5.4.6 Too many hops"
HOP_LIMIT = 50  # Postfix's hopcount_limit

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_address(session: Any) -> str | None:
    """The client's IP address: the one a PROXY header speaks for, else the peer's."""
    proxied = getattr(session, "proxy_data", None)
    if proxied is not None and getattr(proxied, "valid", False) and proxied.src_addr is not None:
        return str(proxied.src_addr)
    peer = getattr(session, "peer", None)
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


@dataclasses.dataclass
class RelayPolicy:
    """Relaying is allowed for clients in ``mynetworks``, for sessions authenticated over
    TLS, and to recipients in ``relay_domains`` (a domain and its subdomains when written
    with a leading dot). Nothing else: no default makes an open relay."""

    mynetworks: list[Network] = dataclasses.field(default_factory=list)
    relay_domains: frozenset[str] = frozenset()
    # Addresses already looked up in mynetworks (parsing an address and testing every
    # network costs more than the rest of a RCPT); mynetworks does not change.
    _trusted: dict[str, bool] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def parse(cls, mynetworks: Iterable[str], relay_domains: Iterable[str]) -> RelayPolicy:
        """Raises ValueError naming a bad network."""
        networks = [ipaddress.ip_network(n.strip(), strict=False) for n in mynetworks if n.strip()]
        domains = frozenset(d.strip().lower().rstrip(".") for d in relay_domains if d.strip())
        return cls(networks, domains)

    def trusted_client(self, session: Any) -> bool:
        """Whether the client may relay anywhere: authenticated over TLS, or in ``mynetworks``."""
        if getattr(session, "authenticated", False) and getattr(session, "ssl", None):
            return True
        address = client_address(session)
        if address is None:
            return False
        known = self._trusted.get(address)
        if known is None:
            known = self._in_mynetworks(address)
            if len(self._trusted) >= 4096:  # bounded: many clients cannot grow it
                self._trusted.clear()
            self._trusted[address] = known
        return known

    def _in_mynetworks(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.mynetworks)

    def relay_domain(self, recipient: str) -> bool:
        """Whether ``recipient``'s domain is one of ``relay_domains`` (a leading dot: and its
        subdomains)."""
        domain = recipient.rpartition("@")[2].lower().rstrip(".")
        if not domain:
            return False
        if domain in self.relay_domains:
            return True
        parts = domain.split(".")
        return any("." + ".".join(parts[i:]) in self.relay_domains for i in range(1, len(parts)))

    def may_relay(self, session: Any, recipient: str) -> bool:
        """Whether mail from this session to ``recipient`` is accepted: a trusted client, or a relay
        domain."""
        return self.trusted_client(session) or self.relay_domain(recipient)


class HopCounter:
    """Counts the Received headers of a message's header section as it streams past,
    keeping at most one partial line between chunks."""

    __slots__ = ("_at_line_start", "_done", "_partial", "count")

    def __init__(self) -> None:
        self.count: int = 0
        self._partial = b""
        self._done = False
        self._at_line_start = True

    def feed(self, data: bytes) -> None:
        """Count the Received headers in the next piece of the message's header."""
        if self._done:
            return
        data = self._partial + data
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                # Only the start of a line matters: keep enough of it to read a field name.
                self._partial = data[start : start + 16]
                return
            line = data[start:end]
            if line in (b"", b"\r"):
                self._done = True  # the end of the header section
                return
            if line[:9].lower() == b"received:":
                self.count += 1
            start = end + 1

    @property
    def too_many(self) -> bool:
        return self.count > HOP_LIMIT
