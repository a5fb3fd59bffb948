"""The PROXY protocol (HAProxy, versions 1 and 2): the header a load balancer sends before
the SMTP session, saying who the client really is.

``Server(proxy_protocol_timeout=...)`` turns it on (as in aiosmtpd): the server then waits
for the header before its greeting, parses it here, puts the result in
``session.proxy_data`` and calls the handler's ``handle_PROXY(server, session, envelope,
proxy_data)`` hook, which accepts the connection by returning a true value. Only put it
on a port that nothing but the load balancer can reach: the header is believed.

``read_header`` is sans-IO and incremental, like the codec: fed the bytes received so far,
it answers "incomplete" (None) or the parsed header and how many bytes it took. A header
is at most 107 octets (version 1) or 16 + 65,535 octets (version 2), so the buffer that
waits for it is bounded. This is Python, not the Rust core: it runs once per connection,
on at most a few hundred bytes. Attribute names follow aiosmtpd's ``ProxyData``.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import struct
from dataclasses import dataclass, field

__all__ = ["AF", "PROTO", "V1_MAX", "V2_CMD", "V2_SIGNATURE", "ProxyData", "read_header"]

V1_MAX = 107  # octets, CRLF included (the specification's worst case)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V1_ADDRESS = re.compile(r"[0-9A-Fa-f.:]+")
_V1_PORT = re.compile(r"0|[1-9][0-9]{0,4}")


class AF(enum.IntEnum):
    """Address family; version 1's UNKNOWN is UNSPEC."""

    UNSPEC = 0
    INET = 1
    INET6 = 2
    UNIX = 3


class PROTO(enum.IntEnum):
    """Transport protocol; version 1's UNKNOWN is UNSPEC."""

    UNSPEC = 0
    STREAM = 1
    DGRAM = 2


class V2_CMD(enum.IntEnum):  # aiosmtpd's name
    """The command of a PROXY protocol v2 header: LOCAL (a health check) or PROXY."""

    LOCAL = 0
    PROXY = 1


Address = ipaddress.IPv4Address | ipaddress.IPv6Address | str


@dataclass
class ProxyData:
    """A parsed PROXY header (aiosmtpd's ``ProxyData`` attributes)."""

    version: int | None
    command: V2_CMD | None = None
    family: AF | None = None
    protocol: PROTO | None = None
    src_addr: Address | None = None
    dst_addr: Address | None = None
    src_port: int | None = None
    dst_port: int | None = None
    rest: bytes = b""  # after UNKNOWN (v1), or the undecoded TLVs (v2)
    whole_raw: bytes = b""  # the header as received
    tlv_start: int | None = None  # offset of the first TLV in whole_raw
    error: str = ""
    _tlv: dict[int, bytes] | None = field(default=None, repr=False)

    @property
    def valid(self) -> bool:
        return not (self.error or self.version is None or self.protocol is None)

    @property
    def tlv(self) -> dict[int, bytes] | None:
        """Version 2 TLVs by type (the last of a type wins), None if malformed."""
        if self._tlv is None and self.version == 2:
            self._tlv = _tlvs(self.rest)
        return self._tlv


def read_header(buffer: bytes) -> tuple[ProxyData, int] | None:
    """The header at the start of ``buffer`` and the octets it took, or None while more
    bytes are needed. A malformed header gives a ``ProxyData`` with ``error`` set."""
    if buffer.startswith(b"PROXY"):
        end = buffer.find(b"\r\n", 0, V1_MAX)
        if end < 0:
            if len(buffer) >= V1_MAX or b"\n" in buffer:
                return _failed(1, buffer[:V1_MAX], "PROXYv1 header too long or malformed")
            return None
        return _v1(buffer[: end + 2]), end + 2
    if len(buffer) < len(V2_SIGNATURE):
        if V2_SIGNATURE.startswith(buffer) or b"PROXY".startswith(buffer[:5]):
            return None
        return _failed(None, buffer, "PROXY unrecognized signature")
    if not buffer.startswith(V2_SIGNATURE):
        return _failed(None, buffer[:16], "PROXY unrecognized signature")
    if len(buffer) < 16:
        return None
    (length,) = struct.unpack_from("!H", buffer, 14)
    if len(buffer) < 16 + length:
        return None
    return _v2(buffer[: 16 + length]), 16 + length


def _failed(version: int | None, raw: bytes, error: str) -> tuple[ProxyData, int]:
    return ProxyData(version, whole_raw=bytes(raw), error=error), len(raw)


def _v1(raw: bytes) -> ProxyData:
    data = ProxyData(1, whole_raw=raw)
    parts = raw[5:-2].split(b" ")  # two spaces make an empty field: refused below
    if parts[0] != b"" or len(parts) < 2:
        data.error = "PROXYv1 wrong signature"
        return data
    if parts[1] == b"UNKNOWN":
        data.family, data.protocol = AF.UNSPEC, PROTO.UNSPEC
        data.rest = b" " + b" ".join(parts[2:]) if len(parts) > 2 else b""
        return data
    families = {b"TCP4": AF.INET, b"TCP6": AF.INET6}
    if parts[1] not in families:
        data.error = "PROXYv1 unrecognized protocol or family"
        return data
    data.family, data.protocol = families[parts[1]], PROTO.STREAM
    if len(parts) != 6:
        data.error = "PROXYv1 wrong number of fields"
        return data
    try:
        text = [part.decode("ascii") for part in parts[2:]]
        if not all(_V1_ADDRESS.fullmatch(a) for a in text[:2]):
            raise ValueError
        src, dst = ipaddress.ip_address(text[0]), ipaddress.ip_address(text[1])
        if not all(_V1_PORT.fullmatch(p) for p in text[2:]):
            raise ValueError
        ports = int(text[2]), int(text[3])
    except ValueError:
        data.error = "PROXYv1 address or port malformed"
        return data
    version = 4 if data.family is AF.INET else 6
    if src.version != version or dst.version != version or max(ports) > 65535:
        data.error = "PROXYv1 address not of its family, or port out of range"
        return data
    data.src_addr, data.dst_addr = src, dst
    data.src_port, data.dst_port = ports
    return data


def _v2(raw: bytes) -> ProxyData:
    data = ProxyData(2, whole_raw=raw)
    ver_cmd, fam_proto = raw[12], raw[13]
    if ver_cmd >> 4 != 2:
        data.error = "PROXYv2 illegal version"
        return data
    try:
        data.command = V2_CMD(ver_cmd & 0x0F)
        data.family = AF(fam_proto >> 4)
        data.protocol = PROTO(fam_proto & 0x0F)
    except ValueError:
        data.error = "PROXYv2 unsupported command, family or protocol"
        return data
    body = raw[16:]
    if data.command is V2_CMD.LOCAL or data.family is AF.UNSPEC:
        data.rest = body  # a health check from the proxy itself: no addresses
        return data
    if data.family is AF.UNIX:
        size = 216
        if len(body) < size:
            data.error = "PROXYv2 truncated address"
            return data
        data.src_addr = body[:108].rstrip(b"\0").decode("utf-8", "replace")
        data.dst_addr = body[108:216].rstrip(b"\0").decode("utf-8", "replace")
    else:
        layout = "!4s4sHH" if data.family is AF.INET else "!16s16sHH"
        size = struct.calcsize(layout)
        if len(body) < size:
            data.error = "PROXYv2 truncated address"
            return data
        src, dst, data.src_port, data.dst_port = struct.unpack_from(layout, body)
        data.src_addr, data.dst_addr = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    data.rest = body[size:]
    data.tlv_start = 16 + size
    return data


def _tlvs(raw: bytes) -> dict[int, bytes] | None:
    out: dict[int, bytes] = {}
    at = 0
    while at < len(raw):
        if at + 3 > len(raw):
            return None
        kind, length = raw[at], int.from_bytes(raw[at + 1 : at + 3], "big")
        if at + 3 + length > len(raw):
            return None
        out[kind] = raw[at + 3 : at + 3 + length]
        at += 3 + length
    return out
