"""A client's address: as log lines show it, and as the per-address limits count it.

Behind a load balancer that speaks the PROXY protocol, the client is the one its header
names, not the balancer: ``client_peer`` is what every per-address limit, the AUTH
lockout and every log line use (issue 10, fault 4)."""

from __future__ import annotations

import functools
import ipaddress
from typing import Any

__all__ = ["address_key", "client_ip", "client_peer", "peer_text", "printable"]


def client_peer(peer: Any, proxy_data: Any) -> Any:
    """The client's ``(host, port)``: the one a valid PROXY header names (``proxy_data``,
    a ``proxy.ProxyData`` or aiosmtpd's), else the socket's peer. A header without an
    address (the LOCAL command of a health check, an UNKNOWN family) names nobody."""
    if proxy_data is not None and getattr(proxy_data, "valid", False):
        address = getattr(proxy_data, "src_addr", None)
        if address is not None:
            return (str(address), getattr(proxy_data, "src_port", None) or 0)
    return peer


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


@functools.lru_cache(maxsize=4096)
def address_key(host: str) -> str:
    """The key under which a client address is counted: the address, or its /64 for
    IPv6 (one client per /64). Cached as client_ip is (one lookup per connection)."""
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
