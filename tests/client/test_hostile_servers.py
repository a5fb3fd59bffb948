"""The client against servers that fail or attack it, on loopback (security checklist B6,
B7, B9, B14).

Servers that die mid-transaction (connection reset or closed, or the process killed),
restart under a ``Pool``, answer STARTTLS with injected bytes or strip it, show a
self-signed certificate, send unsolicited, malformed, huge or 421 replies, go silent, and
an application that passes hostile arguments. Whatever happens, the client raises a
documented exception promptly (never hangs), the connection is closed when its state is
unknown, and nothing the caller did not ask for reaches the wire.

Every client here has a long ``timeout`` unless the test is about timeouts, and every
test asserts how long the failure took: a hang would show as a timeout instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import re
import selectors
import ssl
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ferrosmtp.client import Client, Pool, send
from ferrosmtp.errors import (
    SMTPConnectError,
    SMTPProtocolError,
    SMTPReadTimeoutError,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPServiceUnavailable,
    SMTPTimeoutError,
)
from ferrosmtp.server import Controller

from .conftest import run
from .fakeserver import FakeServer, FakeSession, fake_server, verbs
from .tls import client_context, server_context

REPO = Path(__file__).resolve().parents[2]
MESSAGE = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hostile\r\n\r\nHello.\r\n"
PROMPT = 3.0  # seconds: a failure must show up this fast (the client's timeout is longer)


def client(server: FakeServer | int, **options: Any) -> Client:
    options.setdefault("timeout", 15)
    options.setdefault("local_hostname", "client.test")
    port = server if isinstance(server, int) else server.port
    return Client("127.0.0.1", port, **options)


@contextlib.contextmanager
def prompt(limit: float = PROMPT) -> Iterator[None]:
    """The block must end (normally or by an exception) within ``limit`` seconds."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        yield
    finally:
        elapsed = loop.time() - start
        assert elapsed < limit, f"took {elapsed:.2f} s"


# --- A server process that can be killed -----------------------------------------------------


class ServerProcess:
    """``tests/client/server_proc.py``: the fake server in a process of its own."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.client.server_proc", json.dumps(config)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.port = self._read_port(timeout=15)

    def _read_port(self, timeout: float) -> int:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                self.kill()
                raise RuntimeError("the server process did not start")
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.kill()
            stderr = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"the server process failed: {line!r} {stderr[-2000:]}")
        return int(line.split()[1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


# --- The server dies mid-transaction ---------------------------------------------------------

STAGES = ["MAIL", "RCPT", "DATA", "content", "end"]


@pytest.mark.parametrize("how", ["reset", "close"])
@pytest.mark.parametrize("via", ["DATA", "BDAT"])
@pytest.mark.parametrize("stage", STAGES)
def test_server_dying_mid_transaction_is_a_prompt_disconnect(
    backend: ModuleType, stage: str, via: str, how: str
) -> None:
    """Reset (as by a crash) or closed (FIN) before the MAIL, RCPT or DATA reply, while
    the content arrives, or before the final reply: SMTPServerDisconnected at once. The
    client says whether any of the message went out (a pool may then retry elsewhere)."""

    def die(session: FakeSession) -> None:
        assert session.transport is not None
        if how == "reset":
            session.transport.abort()
        else:
            session.transport.close()

    async def main() -> None:
        caps = ["PIPELINING", "SIZE 100000000", "CHUNKING"]
        async with FakeServer(die=die) as server:
            server.behaviour.capabilities = caps
            # With BDAT there is no DATA command: die on the BDAT command (and its chunk).
            server.behaviour.die_at = "BDAT" if (via, stage) == ("BDAT", "DATA") else stage
            async with client(server, use_bdat=via == "BDAT") as c:
                with prompt(), pytest.raises(SMTPServerDisconnected) as info:
                    await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
                assert not isinstance(info.value, SMTPServiceUnavailable)
                assert not c.is_connected
                # Whether any of the message went out: a Pool may retry it elsewhere if not.
                nothing_sent = stage in ("MAIL", "RCPT") or (stage == "DATA" and via == "DATA")
                assert getattr(info.value, "message_not_sent", False) == nothing_sent
                with pytest.raises(SMTPServerDisconnected):
                    await c.noop()
            assert server.deaths == 1 and not server.messages

    run(main())


@pytest.mark.parametrize("size", [len(MESSAGE), 8 << 20])
@pytest.mark.parametrize("stage", ["DATA", "content", "end"])
def test_killed_server_process_mid_transaction(stage: str, size: int) -> None:
    """The server process is killed (SIGKILL) on reading DATA, on the first bytes of
    content (with 8 MiB, while the client is still writing it), or at the end of the
    content before its reply."""

    async def main() -> None:
        body = MESSAGE + b"x" * (size - len(MESSAGE))
        behaviour = {"die_at": stage, "capabilities": ["PIPELINING", "SIZE 100000000"]}
        with ServerProcess({"behaviour": behaviour}) as server:
            async with client(server.port) as c:
                with prompt(), pytest.raises(SMTPServerDisconnected):
                    await c.sendmail("a@example.org", ["b@example.org"], body)
                assert not c.is_connected
            assert server.proc.wait(timeout=5) == -9  # it did die by SIGKILL

    run(main())


def test_server_gone_before_the_greeting() -> None:
    async def main() -> None:
        with ServerProcess({"behaviour": {"greeting": ""}}) as server:
            server.kill()
            with prompt(), pytest.raises(SMTPConnectError):
                await client(server.port).connect()

    run(main())


# --- A Pool across server restarts -----------------------------------------------------------


class Recorder:
    """A ferrosmtp server handler that keeps the recipients of every message it accepts
    (the Controller runs it in another thread)."""

    def __init__(self) -> None:
        self.recipients: list[str] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.recipients.extend(envelope.rcpt_tos)
        return "250 2.0.0 OK"


async def send_batch(pool: Pool, names: list[str]) -> None:
    results = await asyncio.gather(
        *(pool.sendmail("a@example.org", [f"{name}@example.org"], MESSAGE) for name in names)
    )
    assert all(result.refused == {} for result in results)


def test_pool_recovers_from_a_controller_restart_on_the_same_port() -> None:
    """The ferrosmtp Controller stops (its connections close) and starts again on the same
    port: the pool's next messages go out on new connections; each message is delivered
    exactly once; while the server is down, sending fails at once."""
    recorder = Recorder()
    first = Controller(recorder, hostname="127.0.0.1", port=0)
    first.start()
    port = first.port
    second: Controller | None = None

    async def main() -> None:
        nonlocal second
        async with Pool("127.0.0.1", port, size=3, timeout=10, local_hostname="c.test") as pool:
            await send_batch(pool, [f"before{i}" for i in range(6)])
            assert pool.connections >= 1
            await asyncio.to_thread(first.stop)
            # Refused, or found closed: a ConnectionError either way, and at once.
            with prompt(), pytest.raises(ConnectionError):
                await pool.sendmail("a@example.org", ["down@example.org"], MESSAGE)
            second = Controller(recorder, hostname="127.0.0.1", port=port)
            await asyncio.to_thread(second.start)
            with prompt(10):
                await send_batch(pool, [f"after{i}" for i in range(6)])
            assert pool.connections <= 3

    try:
        run(main(), timeout=60)
    finally:
        first.stop(no_assert=True)
        if second is not None:
            second.stop(no_assert=True)
    expected = [f"before{i}@example.org" for i in range(6)] + [
        f"after{i}@example.org" for i in range(6)
    ]
    assert sorted(recorder.recipients) == sorted(expected)  # each exactly once


def test_pool_recovers_from_a_killed_server_process(tmp_path: Path) -> None:
    """SIGKILL, then a new process on the same port: messages acknowledged before the kill
    are never sent again, and the next ones are delivered once each."""
    log = tmp_path / "delivered.log"

    async def main() -> None:
        first = ServerProcess({"log": str(log)})
        port = first.port
        try:
            async with Pool("127.0.0.1", port, size=2, timeout=10, local_hostname="c.test") as pool:
                await send_batch(pool, [f"before{i}" for i in range(5)])
                first.kill()
                with ServerProcess({"log": str(log), "port": port}):
                    with prompt(10):
                        await send_batch(pool, [f"after{i}" for i in range(5)])
        finally:
            first.kill()

    run(main(), timeout=60)
    delivered = log.read_text().split()
    expected = [f"before{i}@example.org" for i in range(5)] + [
        f"after{i}@example.org" for i in range(5)
    ]
    assert sorted(delivered) == sorted(expected)


def test_pool_never_resends_a_message_whose_content_went_out() -> None:
    """The server dies after the content, before the final reply: the message may have
    been delivered, so the pool reports the failure instead of sending it again."""

    async def main() -> None:
        async with fake_server(die_at="end") as server:
            async with Pool("127.0.0.1", server.port, size=2, timeout=10) as pool:
                await pool.connect()  # a reused connection would be retried if not this
                with prompt(), pytest.raises(SMTPServerDisconnected):
                    await pool.sendmail("a@example.org", ["b@example.org"], MESSAGE)
                assert verbs(server).count(b"MAIL") == 1
                assert sum(read.count(b"Subject: hostile") for read in server.reads) == 1
                server.behaviour.die_at = None
                await pool.sendmail("a@example.org", ["c@example.org"], MESSAGE)
                assert [m.rcpt_to for m in server.messages] == [["c@example.org"]]

    run(main())


# --- STARTTLS (B6) ---------------------------------------------------------------------------


def accept_plain(line: bytes) -> bytes:
    return b"235 2.7.0 ok\r\n" if line.startswith(b"AUTH PLAIN ") else b"535 5.7.8 no\r\n"


def test_starttls_injection_in_a_later_write_breaks_the_handshake(ca: trustme.CA) -> None:
    """The 220 alone, the injected "capabilities" a moment later (in plaintext, while the
    client is already in the handshake): they can only be read as TLS, which fails."""

    async def main() -> None:
        async with fake_server(
            capabilities=["STARTTLS", "AUTH PLAIN"],
            starttls_reply=b"220 Ready\r\n",
            extra_after={"STARTTLS": b"250-evil\r\n250 AUTH LOGIN\r\n"},
            auth=accept_plain,
        ) as server:
            c = client(server, username="u", password="p", tls_context=client_context(ca))
            with prompt(), pytest.raises(SMTPConnectError, match="TLS"):
                await c.connect()
            assert b"AUTH" not in verbs(server) and not c.is_connected

    run(main())


@pytest.mark.parametrize("start_tls", [None, True])
def test_starttls_refused_aborts_before_auth(start_tls: bool | None) -> None:
    """Stripping by a 454 to STARTTLS: whether TLS was required or only offered, the
    client does not fall back to sending its password in plaintext."""

    async def main() -> None:
        async with fake_server(
            capabilities=["STARTTLS", "AUTH PLAIN"],
            starttls_reply=b"454 4.7.0 TLS not available\r\n",
            auth=accept_plain,
        ) as server:
            c = client(server, username="u", password="p", start_tls=start_tls)
            with prompt(), pytest.raises(SMTPResponseException) as info:
                await c.connect()
            assert info.value.code == 454
            assert verbs(server) == [b"EHLO", b"STARTTLS"] and not c.is_connected

    run(main())


def test_capabilities_after_tls_come_only_from_the_post_tls_ehlo(ca: trustme.CA) -> None:
    """Before TLS the server offers LOGIN, SIZE and PIPELINING; after it, only PLAIN. The
    client forgets the first list, EHLOs again and uses only the second."""
    seen: list[bytes] = []

    def plain_only(line: bytes) -> bytes:
        seen.append(line)
        return accept_plain(line)

    async def main() -> None:
        async with fake_server(
            capabilities=["PIPELINING", "SIZE 100", "STARTTLS", "AUTH LOGIN", "X-PRE-TLS"],
            capabilities_after_tls=["AUTH PLAIN", "X-POST-TLS"],
            tls_context=server_context(ca),
            auth=plain_only,
        ) as server:
            c = client(server, username="u", password="p", tls_context=client_context(ca))
            async with c:
                assert c.is_tls
                assert set(c.esmtp_extensions) == {"auth", "x-post-tls"}
                assert c.server_auth_methods == ["plain"]
                conn = c.connection
                assert conn is not None and not conn.pipelining and conn.max_size is None
                await c.sendmail("a@example.org", ["b@example.org"], b"x" * 500)  # > SIZE 100
            assert verbs(server)[:4] == [b"EHLO", b"STARTTLS", b"EHLO", b"AUTH"]
            assert [line.split()[1] for line in seen] == [b"PLAIN"]
            assert server.read_containing(b"MAIL", b"RCPT") is None  # no PIPELINING now

    run(main())


def self_signed_context() -> tuple[ssl.SSLContext, bytes]:
    """A server context with a self-signed certificate for 127.0.0.1, and its PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with trustme.Blob(cert_pem + key_pem).tempfile() as path:
        context.load_cert_chain(path)
    return context, cert_pem


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_self_signed_certificate_fails_verification_by_default(mode: str) -> None:
    async def main() -> None:
        context, cert_pem = self_signed_context()
        implicit = context if mode == "implicit" else None
        async with FakeServer(implicit_tls=implicit) as server:
            server.behaviour.capabilities = ["STARTTLS", "AUTH PLAIN"]
            server.behaviour.tls_context = context
            server.behaviour.auth = accept_plain
            options = {"use_tls": mode == "implicit", "username": "u", "password": "p"}
            with prompt(), pytest.raises(SMTPConnectError, match=r"self.signed|verify failed"):
                await client(server, **options).connect()
            assert b"AUTH" not in verbs(server)
            trusting = ssl.create_default_context(cadata=cert_pem.decode())
            async with client(server, tls_context=trusting, **options) as c:
                assert c.is_tls  # only trust was missing

    run(main())


# --- Replies (B7) ----------------------------------------------------------------------------


@pytest.mark.parametrize("same_write", [True, False])
def test_unsolicited_reply_before_any_command(same_write: bool) -> None:
    """``250 ok`` right after the greeting, before the client said anything: in the same
    read as the greeting, connecting fails; a moment later, the next operation raises, and
    its command never reaches the server."""

    async def main() -> None:
        options: dict[str, Any] = {"greeting": b"220 fake.test ESMTP\r\n250 ok\r\n"}
        if not same_write:
            options = {"extra_after": {"CONNECT": b"250 ok\r\n"}}
        async with fake_server(**options) as server:
            c = client(server, start_tls=False)
            if same_write:
                with prompt(), pytest.raises(SMTPConnectError, match="unsolicited"):
                    await c.connect()
            else:
                await c.connect()
                await asyncio.sleep(0.1)
                with prompt(), pytest.raises(SMTPProtocolError, match="unsolicited"):
                    await c.noop()
            assert verbs(server) == [] and not c.is_connected

    run(main())


@pytest.mark.parametrize(
    "reply",
    [
        b"250-a\r\n251 b\r\n",  # mixed codes
        b"250-mx\r\n550 no\r\n",
        b"25O ok\r\n",  # not a code
        b"2500 ok\r\n",
        b"650 ok\r\n",
        b"250 ok\n",  # bare LF
        b"250 ok\x00\r\n",  # NUL
        b"250 a\rb\r\n",  # bare CR
    ],
)
def test_malformed_replies_raise(reply: bytes) -> None:
    async def main() -> None:
        async with fake_server(ehlo_reply=reply) as server:
            c = client(server)
            with prompt(), pytest.raises(SMTPProtocolError):
                await c.connect()
            assert not c.is_connected
        async with fake_server(reject_rcpt={"b@example.org": reply}) as server:
            async with client(server) as c:
                with prompt(), pytest.raises(SMTPProtocolError):
                    await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
                assert not c.is_connected and not server.messages

    run(main())


@pytest.mark.parametrize("size", [1 << 20, 16 << 20])
def test_a_huge_reply_line_raises_with_bounded_memory(size: int) -> None:
    """A 1 MiB (and a 16 MiB) EHLO reply line from a server process: the client gives up
    after its line limit (2048 octets), without holding the line: tracemalloc's peak stays
    far below the line's size."""

    async def main() -> None:
        with ServerProcess({"huge_ehlo": size}) as server:
            c = client(server.port)
            tracemalloc.start()
            try:
                with prompt(), pytest.raises(SMTPProtocolError, match="too long"):
                    await c.connect()
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert not c.is_connected
            # One socket read (256 KiB in asyncio) and its bookkeeping, never the line.
            assert peak < 512 << 10, f"peak {peak} bytes"

    run(main())


@pytest.mark.parametrize("stage", ["MAIL", "RCPT", "DATA", "end", "idle"])
def test_421_anywhere_is_a_clean_disconnect(stage: str) -> None:
    async def main() -> None:
        options: dict[str, Any] = {}
        if stage in ("MAIL", "RCPT", "DATA"):
            options["reply_421_after"] = stage
        elif stage == "end":
            options["final_reply"] = b"421 4.3.0 shutting down\r\n"
        async with fake_server(**options) as server, client(server) as c:
            if stage == "idle":
                server.sessions[0].write(b"421 4.4.2 idle timeout\r\n")
                await asyncio.sleep(0.1)
                with prompt(), pytest.raises(SMTPServiceUnavailable) as info:
                    await c.noop()
                assert b"NOOP" not in verbs(server)
            else:
                with prompt(), pytest.raises(SMTPServiceUnavailable) as info:
                    await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
            assert isinstance(info.value, SMTPServerDisconnected) and info.value.code == 421
            assert not c.is_connected
            with pytest.raises(SMTPServerDisconnected):
                await c.noop()

    run(main())


@pytest.mark.parametrize("size", ["²", "١٢٣", "-1", "99999999999999999999999999"])
def test_odd_size_parameter_in_ehlo_does_not_break_the_client(
    backend: ModuleType, size: str
) -> None:
    """Regression: ``SIZE ²`` (``str.isdigit()`` is true, ``int()`` refuses it) made the
    sans-IO connection raise ValueError from receive_data; asyncio logged a fatal error
    and closed the connection, so the client could not send to such a server at all."""

    async def main() -> None:
        async with fake_server(capabilities=["PIPELINING", f"SIZE {size}"]) as server:
            async with client(server, timeout=5) as c:
                with prompt():
                    await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
            assert len(server.messages) == 1

    run(main())


# --- Servers that stop answering (B9) --------------------------------------------------------


@pytest.mark.parametrize("stage", ["EHLO", "MAIL", "RCPT", "DATA", "RSET"])
def test_a_silent_server_times_out_and_the_connection_is_closed(stage: str) -> None:
    async def main() -> None:
        async with fake_server(silent_after=stage) as server:
            c = client(server, timeout=0.3)
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(SMTPTimeoutError):
                await c.connect()
                if stage == "RSET":
                    await c.rset()
                else:
                    await c.sendmail("a@example.org", ["b@example.org"], MESSAGE)
            assert 0.25 < loop.time() - start < PROMPT
            assert not c.is_connected

    run(main())


def test_a_silent_server_times_out_during_auth() -> None:
    async def main() -> None:
        async with fake_server(capabilities=["AUTH PLAIN"], silent_after="AUTH") as server:
            c = client(server, timeout=0.3, username="u", password="p")
            with prompt(), pytest.raises(SMTPReadTimeoutError):
                await c.connect()
            assert not c.is_connected

    run(main())


def test_a_tls_handshake_that_never_completes_times_out() -> None:
    """220 to STARTTLS, then the server never reads the ClientHello."""

    async def main() -> None:
        async with fake_server(capabilities=["STARTTLS"], stop_reading_after="STARTTLS") as server:
            c = client(server, timeout=0.5, validate_certs=False)
            with prompt(), pytest.raises(SMTPTimeoutError):
                await c.connect()
            assert not c.is_connected
            assert verbs(server) == [b"EHLO", b"STARTTLS"]

    run(main())


# --- Injection through arguments (B14) -------------------------------------------------------

Call = Callable[[Client], Awaitable[Any]]
HOSTILE_RET: Any = "FULL\r\n"  # not one of the Literal values the signature allows
INJECTIONS: list[tuple[str, Call]] = [
    ("ehlo name", lambda c: c.ehlo(hostname="client.test\r\nMAIL FROM:<x@evil.test>")),
    ("helo name", lambda c: c.helo(hostname="a b")),
    ("mail sender", lambda c: c.mail("a@example.org\r\nRCPT TO:<x@evil.test>")),
    ("mail sender param", lambda c: c.mail("a@example.org> NOTIFY=NEVER")),
    ("mail options", lambda c: c.mail("a@example.org", options=["SIZE=1\r\nRSET"])),
    ("mail option space", lambda c: c.mail("a@example.org", options=["X=a b"])),
    ("rcpt address", lambda c: c.rcpt("b@example.org\nDATA")),
    ("rcpt options", lambda c: c.rcpt("b@example.org", options=["NOTIFY=NEVER\r\n"])),
    ("vrfy", lambda c: c.vrfy("postmaster\r\nRSET")),
    ("vrfy options", lambda c: c.vrfy("postmaster", options=["SMTPUTF8\r\nRSET"])),
    ("expn", lambda c: c.expn("staff\x00")),
    ("sendmail sender", lambda c: c.sendmail("a@example.org\x7f", ["b@example.org"], MESSAGE)),
    ("sendmail rcpt", lambda c: c.sendmail("a@example.org", ["b@example.org\r\n"], MESSAGE)),
    ("sendmail bracket", lambda c: c.sendmail("a@example.org", ["Bob <b@example.org>"], MESSAGE)),
    (
        "sendmail notify",
        lambda c: c.sendmail("a@example.org", ["b@example.org"], MESSAGE, notify=["SUCCESS\r\n"]),
    ),
    (
        "sendmail ret",
        lambda c: c.sendmail("a@example.org", ["b@example.org"], MESSAGE, ret=HOSTILE_RET),
    ),
    (
        "sendmail rcpt_options",
        lambda c: c.sendmail("a@example.org", ["b@example.org"], MESSAGE, rcpt_options=["A=\r\n"]),
    ),
    ("auth plain user", lambda c: c.auth_plain("u\x00admin", "p")),
    ("xoauth2 user", lambda c: c.auth_xoauth2("u\r\nRSET", "token")),
]


@pytest.mark.parametrize(("what", "call"), INJECTIONS, ids=[what for what, _ in INJECTIONS])
def test_injection_through_any_argument_writes_nothing(
    backend: ModuleType, what: str, call: Call
) -> None:
    async def main() -> None:
        caps = ["PIPELINING", "DSN", "SMTPUTF8", "AUTH PLAIN XOAUTH2"]
        async with fake_server(capabilities=caps) as server, client(server) as c:
            before = list(server.reads)
            with pytest.raises(ValueError):
                await call(c)
            await asyncio.sleep(0.05)
            assert server.reads == before, f"{what}: {server.reads[len(before) :]!r}"
            assert c.is_connected
            assert (await c.noop()).code == 250  # and the session is still in step

    run(main())


def test_injection_through_constructor_arguments_never_connects() -> None:
    async def main() -> None:
        async with fake_server() as server:
            bad = "client.test\r\nMAIL FROM:<x@evil.test>"
            with pytest.raises(ValueError):
                Client("127.0.0.1", server.port, local_hostname=bad)
            with pytest.raises(ValueError):
                Client("127.0.0.1\r\nRSET", server.port)
            with pytest.raises(ValueError):
                Pool("127.0.0.1", server.port, local_hostname=bad)
            with pytest.raises(ValueError):
                await send(
                    MESSAGE,
                    sender="a@example.org",
                    recipients=["b@example.org"],
                    hostname="127.0.0.1",
                    port=server.port,
                    local_hostname=bad,
                )
            assert server.sessions == [] and server.reads == []

    run(main())


def test_dsn_values_are_xtext_encoded_never_raw() -> None:
    """ENVID and ORCPT carry arbitrary text: it goes out xtext-encoded (RFC 3461), so a CR
    or LF in it can never end the command line."""

    async def main() -> None:
        async with fake_server(capabilities=["PIPELINING", "DSN"]) as server, client(server) as c:
            await c.sendmail(
                "a@example.org",
                ["b@example.org"],
                MESSAGE,
                envid="id\r\nRSET",
                orcpt={"b@example.org": "x@example.org\r\nDATA"},
            )
            mail, rcpt = server.commands[1], server.commands[2]
            assert mail.endswith(b"ENVID=id+0D+0ARSET")
            assert rcpt.endswith(b"ORCPT=rfc822;x@example.org+0D+0ADATA")
            assert verbs(server)[1:] == [b"MAIL", b"RCPT", b"DATA"]

    run(main())


def test_every_command_the_client_ever_wrote_is_one_clean_line(backend: ModuleType) -> None:
    """After a session with every kind of command, the server's raw input splits into
    command lines (no bare CR, LF or NUL in any) and message content only."""

    async def main() -> None:
        caps = ["PIPELINING", "DSN", "SMTPUTF8", "8BITMIME", "SIZE 1000000", "AUTH PLAIN"]
        async with fake_server(capabilities=caps, auth=accept_plain) as server:
            async with client(server, username="u", password="p") as c:
                await c.sendmail("a@example.org", ["b@example.org"], b"x\r\n.\r\nMAIL FROM:<e@v>\n")
                await c.vrfy("postmaster")
                await c.expn("staff")
                await c.help()
                await c.rset()
                await c.noop()
            raw = b"".join(server.reads)
            body = b"x\r\n..\r\nMAIL FROM:<e@v>\r\n.\r\n"
            assert raw.count(body) == 1
            for line in raw.replace(body, b"").split(b"\r\n")[:-1]:
                assert re.fullmatch(rb"[ -~]+", line), line  # printable ASCII, nothing else

    run(main())
