"""The PROXY protocol (v1 and v2): the parser (sans-IO, every split point), and the live
server: the header before the greeting, ``session.proxy_data``, ``handle_PROXY``, and
everything that must close the connection without a greeting. swaks is the real peer."""

from __future__ import annotations

import ipaddress
import smtplib
import socket
import struct
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferrosmtp.proxy import AF, PROTO, V2_CMD, V2_SIGNATURE, ProxyData, read_header
from ferrosmtp.server import Server
from tests.peers import swaks
from tests.server.support import HOST, running

V1_TCP4 = b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 25\r\n"
V1_TCP6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 25\r\n"


def v2(command: int = 1, fam_proto: int = 0x11, body: bytes | None = None) -> bytes:
    if body is None:
        body = struct.pack("!4s4sHH", bytes([203, 0, 113, 7]), bytes([192, 0, 2, 1]), 40000, 25)
        body += bytes([0x04, 0x00, 0x03]) + b"abc"  # a TLV: type 4 (NOOP), 3 octets
    return V2_SIGNATURE + bytes([0x20 | command, fam_proto]) + struct.pack("!H", len(body)) + body


def test_v1_tcp4_and_tcp6() -> None:
    header, used = read_header(V1_TCP4 + b"rest")  # type: ignore[misc]
    assert used == len(V1_TCP4) and header.valid and header.version == 1
    assert (header.family, header.protocol) == (AF.INET, PROTO.STREAM)
    assert header.src_addr == ipaddress.ip_address("203.0.113.7")
    assert (header.src_port, header.dst_port) == (40000, 25)
    header, _ = read_header(V1_TCP6)  # type: ignore[misc]
    assert header.valid and header.src_addr == ipaddress.ip_address("2001:db8::7")
    header, _ = read_header(b"PROXY UNKNOWN whatever\r\n")  # type: ignore[misc]
    assert header.valid and header.family is AF.UNSPEC and header.rest == b" whatever"


def test_v2_proxy_local_and_tlvs() -> None:
    raw = v2()
    header, used = read_header(raw + b"more")  # type: ignore[misc]
    assert used == len(raw) and header.valid and header.command is V2_CMD.PROXY
    assert header.src_addr == ipaddress.ip_address("203.0.113.7") and header.dst_port == 25
    assert header.tlv == {4: b"abc"} and header.whole_raw == raw
    header, _ = read_header(v2(command=0, fam_proto=0x00, body=b""))  # type: ignore[misc]
    assert header.valid and header.command is V2_CMD.LOCAL and header.src_addr is None
    six = struct.pack("!16s16sHH", b"\x20\x01" + b"\0" * 13 + b"\x07", b"\0" * 15 + b"\1", 1, 2)
    header, _ = read_header(v2(fam_proto=0x21, body=six))  # type: ignore[misc]
    assert header.valid and header.src_addr == ipaddress.ip_address("2001::7")


@pytest.mark.parametrize("raw", [V1_TCP4, V1_TCP6, v2()])
def test_every_prefix_is_incomplete_and_the_whole_is_the_same_header(raw: bytes) -> None:
    for cut in range(len(raw)):
        assert read_header(raw[:cut]) is None, cut
    whole = read_header(raw)
    assert whole is not None and whole[0].valid


@pytest.mark.parametrize(
    "raw",
    [
        b"PROXY TCP4 203.0.113.7  192.0.2.1 40000 25\r\n",  # two spaces
        b"PROXY TCP4 203.0.113.7 192.0.2.1 040000 25\r\n",  # leading zero
        b"PROXY TCP4 203.0.113.7 192.0.2.1 70000 25\r\n",  # port out of range
        b"PROXY TCP4 2001:db8::7 192.0.2.1 1 2\r\n",  # not IPv4
        b"PROXY TCP5 203.0.113.7 192.0.2.1 1 2\r\n",
        b"PROXY TCP4 203.0.113.7 192.0.2.1 1\r\n",
        b"PROXY TCP4 " + b"1" * 120 + b"\r\n",  # longer than 107 octets
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",  # bare LF
        b"EHLO client.example\r\n",  # not a PROXY header at all
        v2(fam_proto=0x11, body=b"\x01\x02"),  # truncated addresses
        V2_SIGNATURE + b"\x30\x11\x00\x00",  # version 3
        v2(fam_proto=0x41, body=b""),  # family 4
    ],
)
def test_malformed_headers_are_refused(raw: bytes) -> None:
    found = read_header(raw)
    assert found is not None
    header, _ = found
    assert not header.valid and header.error


class ProxyHandler:
    def __init__(self, accept: Any = True) -> None:
        self.accept = accept
        self.seen: list[ProxyData] = []
        self.messages: list[tuple[Any, bytes]] = []

    async def handle_PROXY(self, server: Any, session: Any, envelope: Any, data: Any) -> Any:
        self.seen.append(data)
        if isinstance(self.accept, Exception):
            raise self.accept
        return self.accept

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((session.proxy_data, envelope.content))
        return "250 2.0.0 OK"


def connect(port: int, header: bytes) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=5)
    sock.sendall(header)
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


@pytest.mark.parametrize("header", [V1_TCP4, v2()], ids=["v1", "v2"])
def test_accepted_header_then_a_normal_session(header: bytes) -> None:
    handler = ProxyHandler()
    with running(handler, proxy_protocol_timeout=5) as c:
        sock = connect(c.port, header)
        client = smtplib.SMTP()
        client.sock, client.file = sock, None  # smtplib over our already-open socket
        code, _ = client.getreply()
        assert code == 220
        client.ehlo("c.example")
        client.sendmail("a@b.example", ["c@d.example"], b"Subject: proxied\r\n\r\nhi\r\n")
        client.quit()
    [data] = handler.seen
    assert data.src_addr == ipaddress.ip_address("203.0.113.7") and data.src_port == 40000
    [(session_data, content)] = handler.messages
    assert session_data is data and b"Subject: proxied" in content


@pytest.mark.parametrize(
    ("header", "accept"),
    [
        (V1_TCP4, False),  # handle_PROXY says no
        (V1_TCP4, RuntimeError("boom")),  # a hook that raises refuses
        (b"PROXY TCP4 nonsense\r\n", True),  # malformed
        (b"EHLO client.example\r\n", True),  # a client that is not the load balancer
        (V1_TCP4 + b"EHLO c.example\r\n", True),  # talks before the greeting
        (b"PROXY TCP4 203.0.113.7", True),  # never finishes: the timeout
    ],
)
def test_refusals_close_without_a_greeting(header: bytes, accept: Any) -> None:
    handler = ProxyHandler(accept)
    with running(handler, proxy_protocol_timeout=0.5) as c:
        sock = connect(c.port, header)
        started = time.monotonic()
        data = read_all(sock)
        sock.close()
        assert time.monotonic() - started < 4
        assert not data.startswith(b"220"), data
        assert data in (b"", b"554 5.5.0 Error: SMTP protocol synchronization\r\n"), data
        assert handler.messages == []
        # The server goes on serving.
        ok = connect(c.port, V1_TCP4)
        assert ok.recv(100).startswith(b"220") or handler.accept is not True
        ok.close()


def test_bad_options() -> None:
    with pytest.raises(ValueError):
        Server(ProxyHandler(), proxy_protocol_timeout=0)


@pytest.mark.parametrize("version", ["1", "2"])
def test_swaks_sends_the_header(version: str) -> None:
    handler = ProxyHandler()
    with running(handler, proxy_protocol_timeout=5) as c:
        family = "TCP4" if version == "1" else "AF_INET"
        result = swaks(
            *("--to", "bob@example.net", "--from", "alice@example.com"),
            *("--proxy-version", version, "--proxy-family", family),
            *("--proxy-source", "198.51.100.9", "--proxy-source-port", "5555"),
            *("--proxy-dest", "192.0.2.25", "--proxy-dest-port", "25"),
            port=c.port,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    [data] = handler.seen
    assert data.version == int(version) and data.valid
    assert data.src_addr == ipaddress.ip_address("198.51.100.9") and data.src_port == 5555
    assert len(handler.messages) == 1


@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(lambda tail: b"PROXY " + tail, st.binary(max_size=200)),
        st.builds(lambda tail: V2_SIGNATURE + tail, st.binary(max_size=300)),
    )
)
@settings(max_examples=2000, deadline=None)
def test_arbitrary_bytes_never_raise_and_stay_bounded(raw: bytes) -> None:
    found = read_header(raw)
    if found is None:
        # Waiting for more is only allowed while a header can still come, and a v1 header
        # cannot grow past 107 octets.
        assert (
            raw.startswith((b"PROXY", V2_SIGNATURE))
            or V2_SIGNATURE.startswith(raw)
            or (b"PROXY".startswith(raw[:5]))
        )
        assert not raw.startswith(b"PROXY") or len(raw) < 107
        return
    header, used = found
    assert 0 < used <= len(raw) or (used == 0 and raw == b"")
    assert header.whole_raw == raw[:used] or not header.valid
    if header.valid:
        assert header.version in (1, 2)
