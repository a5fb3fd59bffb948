"""ferrosmtp.compat.aiosmtpd over a real socket: aiosmtpd 1.4.6's replies byte for byte,
its defaults and attributes, on ferrosmtp's engine (the incumbent's own suite is run by
tests/incumbents/run.py; these pin the behaviour it relies on)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.handlers import Sink

from ferrosmtp.compat import aiosmtpd as compat
from tests.server.support import HOST, Certs, Raw, running


class Refuser:
    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, _o: Any):
        return "550 5.1.1 No such user"


@pytest.fixture
def controller() -> Iterator[compat.Controller]:
    controller = compat.Controller(Refuser(), hostname=HOST, port=0, server_hostname="mx.test")
    controller.start()
    yield controller
    controller.stop()


def test_replies_are_aiosmtpds(controller: compat.Controller) -> None:
    with Raw(controller.port) as raw:
        assert raw.reply() == b"220 mx.test Python SMTP 1.4.6\r\n"
        raw.send(b"MAIL FROM:<a@example.com>\r\n")
        assert raw.reply() == b"503 Error: send HELO first\r\n"
        raw.send(b"EHLO c.example\r\n")
        assert raw.reply() == (
            b"250-mx.test\r\n250-SIZE 33554432\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 HELP\r\n"
        )
        raw.send(b"HELP\r\n")
        assert raw.reply() == (
            b"250 Supported commands: AUTH DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET VRFY\r\n"
        )
        raw.send(b"HELP MAIL\r\n")
        assert raw.reply() == b"250 Syntax: MAIL FROM: <address> [SP <mail-parameters>]\r\n"
        raw.send(b"MAIL FROM:<a@example.com>\r\n")
        assert raw.reply() == b"250 OK\r\n"
        raw.send(b"DATA\r\n")
        assert raw.reply() == b"503 Error: need RCPT command\r\n"
        # A handler's enhanced code is its own words: kept, though the server adds none.
        raw.send(b"RCPT TO:<b@example.com>\r\n")
        assert raw.reply() == b"550 5.1.1 No such user\r\n"
        raw.send(b"STARTTLS\r\n")
        assert raw.reply() == b"454 TLS not available\r\n"
        raw.send(b"FOO\r\n")
        assert raw.reply() == b'500 Error: command "FOO" not recognized\r\n'
        raw.send(b"QUIT\r\n")
        assert raw.reply() == b"221 Bye\r\n"


def test_codec_refusals_in_aiosmtpds_words(controller: compat.Controller) -> None:
    with Raw(controller.port) as raw:
        raw.greet()
        raw.send(b"MAIL FROM:\r\n")
        assert raw.reply() == b"501 Syntax: MAIL FROM: <address> [SP <mail-parameters>]\r\n"
        raw.send(b"X" * 600 + b"\r\n")
        assert raw.reply() == b"500 Command line too long\r\n"
        raw.send(b"AUTH\r\n")
        assert raw.reply() == (
            b"538 5.7.11 Encryption required for requested authentication mechanism\r\n"
        )
        raw.send(b"MAIL FROM:<a@example.com> FOO=BAR\r\n")
        assert raw.reply() == b"555 MAIL FROM parameters not recognized or not implemented\r\n"
        raw.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<\r\n")
        assert raw.replies(2) == [
            b"250 OK\r\n",
            b"501 Syntax: RCPT TO: <address> [SP <mail-parameters>]\r\n",
        ]


def test_controller_attributes_reset_by_stop() -> None:
    controller = compat.Controller(Sink(), hostname=HOST, port=0)
    controller.start()
    assert isinstance(controller.smtpd, compat.SMTP)
    assert controller.server is not None and controller.server.sockets
    assert controller.smtpd.line_length_limit == 1001
    assert controller.smtpd.max_command_size_limit == 512
    controller.stop()
    assert controller.smtpd is None and controller.server is None


def test_factory_subclass_and_lmtp() -> None:
    class LMTPController(compat.Controller):
        def factory(self) -> compat.SMTP:
            self.smtpd = compat.LMTP(self.handler)
            return self.smtpd

    controller = LMTPController(Sink(), hostname=HOST, port=0)
    controller.start()
    try:
        with Raw(controller.port) as raw:
            raw.reply()
            raw.send(b"HELO c.example\r\n")
            assert raw.reply() == b'500 Error: command "HELO" not recognized\r\n'
            raw.send(b"LHLO c.example\r\n")
            assert raw.reply().startswith(b"250-")
    finally:
        controller.stop()


def test_warnings_and_argument_checks() -> None:
    with pytest.warns(UserWarning, match="Requiring AUTH while not requiring TLS"):
        compat.SMTP(Sink(), auth_required=True, auth_require_tls=False)
    with pytest.raises(TypeError, match="command_call_limit must be int or Dict"):
        compat.SMTP(Sink(), command_call_limit="7")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="All command_call_limit values must be int"):
        compat.SMTP(Sink(), command_call_limit={"MAIL": "7"})  # type: ignore[dict-item]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compat.SMTP(Sink(), auth_required=True)  # TLS required: no warning


def test_smuggling_defence_stays_on() -> None:
    """A deliberate difference: a bare LF in DATA (the SMTP smuggling vector) is refused
    at the end of the message, as by ferrosmtp.Server; aiosmtpd 1.4.6 accepts it."""
    controller = compat.Controller(Sink(), hostname=HOST, port=0)
    controller.start()
    try:
        with Raw(controller.port) as raw:
            raw.greet()
            raw.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
            assert raw.replies(3)[2].startswith(b"354 ")
            raw.send(b"Subject: x\r\n\r\nhello\n.\nMAIL FROM:<evil@example.com>\r\n.\r\n")
            assert raw.reply() == b"550 Error: bare <LF> received\r\n"
    finally:
        controller.stop()


def test_command_call_limit_closes_with_aiosmtpds_421() -> None:
    controller = compat.Controller(
        Sink(), hostname=HOST, port=0, command_call_limit={"NOOP": 2, "*": 5}
    )
    controller.start()
    try:
        with Raw(controller.port) as raw:
            raw.greet()
            for _ in range(2):
                raw.send(b"NOOP\r\n")
                assert raw.reply() == b"250 OK\r\n"
            raw.send(b"NOOP\r\n")
            assert raw.read_to_eof() == b"421 4.7.0 NOOP sent too many times\r\n"
    finally:
        controller.stop()


def test_malformed_paths_get_aiosmtpds_553(controller: compat.Controller) -> None:
    with Raw(controller.port) as raw:
        raw.greet()
        raw.send(b"MAIL FROM:<@example.com>\r\n")
        assert raw.reply() == b"553 5.1.3 Error: malformed address\r\n"


# -- SMTP is one connection, as in aiosmtpd ------------------------------------------------


class Recorder:
    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        envelope.mail_from = address
        envelope.mail_options = ["REPLACED"]
        return "250 OK"


def test_smtpd_is_the_latest_connection() -> None:
    """controller.smtpd is the SMTP of the last connection (factory() runs for each), so
    its session and envelope are that client's."""
    controller = compat.Controller(Recorder(), hostname=HOST, port=0)
    controller.start()
    try:
        first = controller.smtpd  # start()'s own connection made one
        with Raw(controller.port) as raw:
            raw.greet()
            raw.send(b"MAIL FROM:<a@example.com> BODY=7BIT\r\n")
            assert raw.reply() == b"250 OK\r\n"
            smtpd = controller.smtpd
            assert isinstance(smtpd, compat.SMTP) and smtpd is not first
            assert smtpd.session is not None and smtpd.session.host_name == "c.example"
            assert smtpd.session.peer[1] == raw.sock.getsockname()[1]
            assert smtpd.envelope is not None and smtpd.envelope.mail_options == ["REPLACED"]
    finally:
        controller.stop()


def test_smtp_is_an_asyncio_protocol_factory() -> None:
    """aiosmtpd's own way without a controller: loop.create_server(lambda: SMTP(handler))."""

    async def serve() -> list[bytes]:
        loop = asyncio.get_running_loop()
        handler = Sink()
        server = await loop.create_server(lambda: compat.SMTP(handler), HOST, 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(HOST, port)
        lines = [await reader.readline()]
        for command in (b"HELO c.example\r\n", b"QUIT\r\n"):
            writer.write(command)
            lines.append(await reader.readline())
        writer.close()
        server.close()
        await server.wait_closed()
        return lines

    greeting, helo, bye = asyncio.run(serve())
    assert greeting.startswith(b"220 ") and greeting.endswith(b" Python SMTP 1.4.6\r\n")
    assert helo.startswith(b"250 ") and bye == b"221 Bye\r\n"


def test_a_finished_connection_is_freed_without_the_cycle_collector() -> None:
    """A connection's SMTP (its buffers, state machine and reader) goes when the session
    ends, by reference counting: a reference cycle would keep every finished connection
    until the cyclic collector runs (command_size_limits' default once made one)."""
    import gc
    import weakref

    made: list[weakref.ref[compat.SMTP]] = []
    handler = Sink()

    def factory() -> compat.SMTP:
        smtpd = compat.SMTP(handler)
        made.append(weakref.ref(smtpd))
        return smtpd

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(factory, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        for _ in range(3):
            reader, writer = await asyncio.open_connection(HOST, port)
            await reader.readline()
            writer.write(b"HELO c.example\r\nQUIT\r\n")
            while await reader.readline():
                pass
            writer.close()
            await writer.wait_closed()
        await asyncio.sleep(0.05)  # the server's side sees the close
        server.close()
        await server.wait_closed()

    gc.collect()
    gc.disable()
    try:
        asyncio.run(serve())
        assert len(made) == 3
        assert [ref() for ref in made] == [None, None, None]
    finally:
        gc.enable()

    async def make() -> compat.SMTP:
        return compat.SMTP(handler)

    smtpd = asyncio.run(make())
    assert smtpd.command_size_limits["MAIL"] == 512  # aiosmtpd's attribute still there
    smtpd.command_size_limit = 600
    assert smtpd.command_size_limits["RCPT"] == 600 and smtpd.max_command_size_limit == 600


def test_connections_of_one_handler_share_one_engine() -> None:
    """The limits that span connections (AUTH failures per address, connections counted)
    hold across the SMTP objects a controller makes: they share one ferrosmtp Server."""

    async def make() -> tuple[Any, Any, Any]:
        handler = Sink()
        a, b = compat.SMTP(handler, timeout=7), compat.SMTP(handler, timeout=7)
        c = compat.SMTP(handler, timeout=8)
        return a, b, c

    a, b, c = asyncio.run(make())
    assert a is not b and a._server is b._server
    assert c._server is not a._server and c._server.timeout == 8


# -- an SMTP subclass's smtp_<VERB> methods ----------------------------------------------


class PingSMTP(compat.SMTP):
    @compat.syntax("PING [ignored]")
    async def smtp_PING(self, arg: str | None) -> None:
        await self.push("259 Pong" if arg is None else f"259 Pong {arg}")

    async def smtp_EHLO(self, hostname: str | None) -> None:
        if hostname == "refused.example":
            await self.push("550 Not you")
            return
        await super().smtp_EHLO(hostname)

    async def smtp_NOOP(self, arg: str | None) -> None:
        raise ValueError("secret detail")


class PingController(compat.Controller):
    def factory(self) -> compat.SMTP:
        return PingSMTP(self.handler, **self.SMTP_kwargs)


def test_a_subclass_adds_and_overrides_commands() -> None:
    errors: list[Exception] = []

    class Handler:
        async def handle_exception(self, error: Exception) -> str:
            errors.append(error)
            return "451 Try again"

    controller = PingController(Handler(), hostname=HOST, port=0)
    controller.start()
    try:
        with Raw(controller.port) as raw:
            raw.reply()
            raw.send(b"PING\r\n")
            assert raw.reply() == b"259 Pong\r\n"
            raw.send(b"PING you\r\n")
            assert raw.reply() == b"259 Pong you\r\n"
            raw.send(b"HELP\r\n")
            assert raw.reply() == (
                b"250 Supported commands: AUTH DATA EHLO HELO HELP MAIL NOOP PING QUIT RCPT"
                b" RSET VRFY\r\n"
            )
            raw.send(b"HELP PING\r\n")
            assert raw.reply() == b"250 Syntax: PING [ignored]\r\n"
            raw.send(b"EHLO refused.example\r\n")
            assert raw.reply() == b"550 Not you\r\n"
            raw.send(b"MAIL FROM:<a@example.com>\r\n")  # the refused EHLO is no EHLO
            assert raw.reply() == b"503 Error: send HELO first\r\n"
            raw.send(b"EHLO c.example\r\n")  # super().smtp_EHLO(): the engine's answer
            assert raw.reply().endswith(b"250 HELP\r\n")
            raw.send(b"NOOP\r\n")  # what it raised goes to handle_exception
            assert raw.reply() == b"451 Try again\r\n"
            assert isinstance(errors[0], ValueError)
            # The subclass's own commands are not "unrecognized" (BOGUS_LIMIT is 5).
            for _ in range(compat.BOGUS_LIMIT + 1):
                raw.send(b"PING\r\n")
                assert raw.reply() == b"259 Pong\r\n"
    finally:
        controller.stop()


def test_an_exception_s_text_never_reaches_the_client() -> None:
    """A deliberate difference (CWE-209): aiosmtpd answers an exception nobody handled
    with "500 Error: (ValueError) <its text>"; ferrosmtp says 451 and logs it."""
    controller = PingController(Sink(), hostname=HOST, port=0)
    controller.start()
    try:
        with Raw(controller.port) as raw:
            raw.greet()
            raw.send(b"NOOP\r\n")
            assert raw.reply() == b"451 Error: internal server error\r\n"
    finally:
        controller.stop()


# -- aiosmtpd's limits and words ------------------------------------------------------------


def test_bogus_limit_closes_after_five_unknown_commands(controller: compat.Controller) -> None:
    with Raw(controller.port) as raw:
        raw.greet()
        for i in range(compat.BOGUS_LIMIT - 1):
            raw.send(b"BOGUS%d\r\n" % i)
            assert raw.reply() == b'500 Error: command "BOGUS%d" not recognized\r\n' % i
        raw.send(b"LASTBOGUS\r\n")
        assert raw.read_to_eof() == b"502 5.5.1 Too many unrecognized commands, goodbye.\r\n"


def test_starttls_needs_no_ehlo_in_compat_only() -> None:
    """aiosmtpd takes STARTTLS before EHLO, or after HELO; ferrosmtp.Server wants EHLO."""
    certs = Certs()
    controller = compat.Controller(
        Sink(), hostname=HOST, port=0, tls_context=certs.server_context()
    )
    controller.start()
    try:
        with Raw(controller.port) as raw:
            raw.reply()
            raw.send(b"HELO c.example\r\n")
            assert raw.reply().startswith(b"250 ")
            raw.send(b"STARTTLS\r\n")
            assert raw.reply() == b"220 Ready to start TLS\r\n"
            tls = certs.client_context().wrap_socket(raw.sock, server_hostname="localhost")
            tls.sendall(b"EHLO c.example\r\n")
            assert b"250 HELP\r\n" in tls.recv(4096)
            tls.close()
    finally:
        controller.stop()
    with running(Sink(), tls_context=certs.server_context()) as c, Raw(c.port) as raw:
        raw.reply()
        raw.send(b"HELO c.example\r\n")
        raw.reply()
        raw.send(b"STARTTLS\r\n")
        assert raw.reply().startswith(b"503 ")


# -- the controllers --------------------------------------------------------------------------


def test_implicit_tls_controller() -> None:
    certs = Certs()
    controller = compat.Controller(
        Sink(), hostname=HOST, port=0, ssl_context=certs.server_context()
    )
    controller.start()
    try:
        with socket.create_connection((HOST, controller.port), 5) as sock:
            tls = certs.client_context().wrap_socket(sock, server_hostname="localhost")
            assert tls.recv(1024).startswith(b"220 ")
            tls.sendall(b"EHLO c.example\r\n")
            reply = tls.recv(4096)
            assert b"250-AUTH LOGIN PLAIN\r\n" in reply  # TLS from the start: AUTH offered
            tls.close()
    finally:
        controller.stop()


def test_factory_errors_are_raised_by_start() -> None:
    class Broken(compat.Controller):
        def factory(self) -> compat.SMTP:
            raise ValueError("no SMTP today")

    controller = Broken(Sink(), hostname=HOST, port=0)
    with pytest.raises(ValueError, match="no SMTP today"):
        controller.start()
    controller.stop()
    assert controller.smtpd is None and controller.server is None

    unknown = compat.Controller(Sink(), hostname=HOST, port=0, no_such_argument=1)
    with pytest.raises(TypeError, match="no_such_argument"):
        unknown.start()
    unknown.stop()


def test_a_taken_port_fails_start_at_once() -> None:
    first = compat.Controller(Sink(), hostname=HOST, port=0)
    first.start()
    try:
        second = compat.Controller(Sink(), hostname=HOST, port=first.port, ready_timeout=30)
        started = time.monotonic()
        with pytest.raises(OSError, match="error while attempting to bind on address"):
            second.start()
        assert time.monotonic() - started < 10  # not after ready_timeout
        second.stop()
    finally:
        first.stop()


def test_unix_socket_controllers(tmp_path: Path) -> None:
    path = tmp_path / "smtp.sock"
    controller = compat.UnixSocketController(Sink(), unix_socket=path)
    controller.start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(path))
            assert sock.recv(1024).startswith(b"220 ")
            sock.sendall(b"HELO c.example\r\n")
            assert _read_until(sock, b"\r\n").startswith(b"250 ")
            sock.sendall(b"QUIT\r\n")
            assert _read_until(sock, b"\r\n") == b"221 Bye\r\n"
    finally:
        controller.stop()

    loop = asyncio.new_event_loop()
    unthreaded = compat.UnixSocketUnthreadedController(Sink(), unix_socket=path, loop=loop)
    unthreaded.begin()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(path))
            assert sock.recv(1024).startswith(b"220 ")
        loop.call_soon_threadsafe(unthreaded.end)
        assert unthreaded.ended.wait(5)
        with pytest.raises(OSError), socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(path))
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_unthreaded_controller_on_a_loop_the_caller_runs() -> None:
    async def session(port: int) -> bytes:
        reader, writer = await asyncio.open_connection(HOST, port)
        await reader.readline()
        writer.write(b"HELO c.example\r\n")
        line = await reader.readline()
        writer.close()
        return line

    loop = asyncio.new_event_loop()
    try:
        controller = compat.UnthreadedController(Sink(), hostname=HOST, port=0, loop=loop)
        controller.begin()
        assert loop.run_until_complete(session(controller.port)).startswith(b"250 ")
        controller.end()
        assert controller.ended.is_set() and controller.server is None
    finally:
        loop.close()


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_idle_timeout_closes_without_a_word() -> None:
    """aiosmtpd closes an idle connection silently; ferrosmtp.Server says 421 first."""
    controller = compat.Controller(Sink(), hostname=HOST, port=0, timeout=0.5)
    controller.start()
    try:
        with Raw(controller.port) as raw:
            raw.greet()
            assert raw.read_to_eof() == b""
    finally:
        controller.stop()
    with running(Sink(), timeout=0.5) as c, Raw(c.port) as raw:
        raw.greet()
        assert raw.read_to_eof().endswith(b"Error: timeout exceeded\r\n")


class Slow:
    async def handle_HELO(self, server: Any, session: Any, envelope: Any, hostname: str) -> str:
        await asyncio.sleep(0.2)
        return "250 slow.example"


@pytest.mark.parametrize("run", [running, "compat"])
def test_client_eof_while_a_hook_runs(run: Any) -> None:
    """A deliberate difference: input is not read while a hook runs (back-pressure), so a
    client's half-close is seen after the hook's reply has gone out; aiosmtpd reads on,
    sees the EOF first and cancels the hook."""
    if run == "compat":
        controller = compat.Controller(Slow(), hostname=HOST, port=0)
        controller.start()
    else:
        context = run(Slow())
        controller = context.__enter__()
    try:
        with Raw(controller.port) as raw:
            raw.reply()
            raw.send(b"HELO c.example\r\n")
            raw.sock.shutdown(socket.SHUT_WR)
            assert raw.read_to_eof() == b"250 slow.example\r\n"
    finally:
        if run == "compat":
            controller.stop()
        else:
            context.__exit__(None, None, None)


def test_vrfy_of_a_non_address(controller: compat.Controller) -> None:
    with Raw(controller.port) as raw:
        raw.greet()
        raw.send(b"VRFY @@\r\n")
        assert raw.reply() == b"502 Could not VRFY @@\r\n"
        raw.send(b"VRFY <anne@example.com>\r\n")
        assert raw.reply() == (
            b"252 Cannot VRFY user, but will accept message and attempt delivery\r\n"
        )


class OddCodes:
    """Replies whose codes RFC 5321's grammar has no room for (second digit 6 to 9)."""

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, _o: Any):
        if address.startswith("crlf"):
            return "599 Not today\r\n250 OK"  # a second reply smuggled in a hook's text
        if address.startswith("lines"):
            return "599-Not today\r\n599 Nor tomorrow"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "499 Could not accept the message"


def _odd_codes_dialog(port: int) -> list[bytes]:
    with Raw(port) as raw:
        raw.greet()
        raw.send(b"MAIL FROM:<a@example.com>\r\n")
        raw.reply()
        said = []
        for rcpt in (b"crlf@example.com", b"lines@example.com", b"b@example.com"):
            raw.send(b"RCPT TO:<" + rcpt + b">\r\n")
            said.append(raw.reply())
        raw.send(b"DATA\r\n")
        assert raw.reply().startswith(b"354 ")
        raw.send(b"Subject: x\r\n\r\nhi\r\n.\r\n")
        said.append(raw.reply())
        return said


def test_a_hook_s_code_outside_the_grammar_goes_out_as_aiosmtpd_sends_it() -> None:
    """aiosmtpd passes a hook's 499 or 599 on; the line is still checked as any other (a
    CRLF in the hook's text cannot start a second reply)."""
    controller = compat.Controller(OddCodes(), hostname=HOST, port=0)
    controller.start()
    try:
        assert _odd_codes_dialog(controller.port) == [
            b"451 Error: internal server error\r\n",
            b"599-Not today\r\n599 Nor tomorrow\r\n",
            b"250 OK\r\n",
            b"499 Could not accept the message\r\n",
        ]
    finally:
        controller.stop()
    # ferrosmtp.Server keeps RFC 5321's grammar: such a code is the handler's bug.
    with running(OddCodes()) as server:
        assert _odd_codes_dialog(server.port) == [
            b"451 4.3.0 Error: internal server error\r\n",
            b"451 4.3.0 Error: internal server error\r\n",
            b"250 2.1.5 OK\r\n",
            b"451 4.3.0 Error: internal server error\r\n",
        ]


def test_auth_with_too_many_values() -> None:
    controller = compat.Controller(Sink(), hostname=HOST, port=0, auth_require_tls=False)
    controller.start()
    try:
        with Raw(controller.port) as raw:
            raw.greet()
            raw.send(b"AUTH PLAIN NONE NONE\r\n")
            assert raw.reply() == b"501 Too many values\r\n"
            raw.send(b"AUTH\r\n")
            assert raw.reply() == b"501 Not enough value\r\n"
    finally:
        controller.stop()


@pytest.mark.parametrize(
    ("body", "reply"),
    [
        # a too-long line first, then too much data: the line's refusal (aiosmtpd's order)
        (
            b"z" * 1999 + b"\r\n" + b"z" * 1999 + b"\r\n",
            b"500 Line too long (see RFC5321 4.5.3.1.6)",
        ),
        # too much data first, then a too-long line: the size's
        (b"abc\r\n" * 500 + b"z" * 1999 + b"\r\n", b"552 Error: Too much mail data"),
    ],
)
def test_data_refusal_names_the_limit_crossed_first(body: bytes, reply: bytes) -> None:
    controller = compat.Controller(Sink(), hostname=HOST, port=0, data_size_limit=2000)
    controller.start()
    try:
        with Raw(controller.port) as raw:
            raw.greet()
            raw.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
            assert raw.replies(3)[2].startswith(b"354 ")
            raw.send(body + b".\r\n")
            assert raw.reply() == reply + b"\r\n"
            raw.send(b"NOOP\r\n")  # the session goes on
            assert raw.reply() == b"250 OK\r\n"
    finally:
        controller.stop()
