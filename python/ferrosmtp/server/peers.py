"""A client's address: as log lines show it, and as the per-address limits count it."""

from __future__ import annotations

import functools
import ipaddress
from typing import Any

__all__ = ["address_key", "client_ip", "peer_text", "printable"]


def peer_text(peer: Any) -> str:
    """A client's address for a log line: ``host:port``, IPv6 in brackets."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = f"[{peer[0]}]" if ":" in str(peer[0]) else str(peer[0])
        return f"{host}:{peer[1]}"
    return repr(peer)


@functools.lru_cache(maxsize=4096)
def client_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A client's address (an IPv4-mapped IPv6 address as the IPv4 one), None if the
    peer is not an IP address. Cached: clients come back, and parsing is most of the cost
    of admitting a connection."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return getattr(ip, "ipv4_mapped", None) or ip


def address_key(host: str) -> str:
    """The key under which a client address is counted: the address, or its /64 for
    IPv6 (one client per /64)."""
    ip = client_ip(host)
    if ip is None:
        return host
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def printable(text: str, limit: int = 200) -> str:
    """Text safe to log: control characters escaped, length capped."""
    if len(text) <= limit and text.isprintable():
        return text
    out = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text[:limit])
    return out + ("..." if len(text) > limit else "")
