"""A pytest plugin: a real SMTP server for the tests of an application that sends mail.

Installed with ferrosmtp and registered through the ``pytest11`` entry point, so the
fixtures are there in every test suite of an environment that has ferrosmtp::

    def test_signup_sends_a_welcome_mail(smtp_server):
        app.config["SMTP_HOST"], app.config["SMTP_PORT"] = smtp_server.host, smtp_server.port
        app.signup("new@example.org")
        mail = smtp_server.assert_received(to="new@example.org", subject="Welcome")
        assert "Hello" in mail.message.get_content()

``smtp_server`` is a ferrosmtp ``Server`` on a free loopback port, in a thread of its own
(so synchronous and asyncio tests alike can talk to it), recording every message it
accepts. It is started once per pytest session for each set of options and handed to
each test reset (no messages, no refusals; a transaction begun during an earlier test is
accepted but not recorded), so a test pays microseconds for it, not a server start. TLS
and AUTH are switched on with a marker::

    @pytest.mark.smtp_server(tls="starttls", users={"alice": "secret"}, auth_required=True)
    def test_...(smtp_server): ...

(``tls="implicit"`` for port-465 style; ``smtp_server.client_context()`` and
``smtp_server.cafile`` make clients trust its certificate; TLS needs ``trustme``:
``pip install trustme``). Other marker keywords go to ``ferrosmtp.Server`` as they are
(``data_size_limit=1000``, ``lmtp=True``...). ``smtp_server_factory(**options)`` starts
servers of the test's own, each stopped when the test ends.
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

__all__ = [
    "ReceivedMessage",
    "SMTPTestServer",
    "smtp_server",
    "smtp_server_factory",
]

TLSMode = Literal["starttls", "implicit"]


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the test server accepted: its envelope and its bytes as received."""

    mail_from: str
    """The envelope sender (``MAIL FROM``), ``""`` for the null sender ``<>``."""
    rcpt_tos: tuple[str, ...]
    """The envelope recipients (``RCPT TO``) the server accepted, in order."""
    data: bytes
    """The message as it arrived (after dot-unstuffing), headers and body."""
    mail_options: tuple[str, ...] = ()
    """ESMTP parameters of ``MAIL FROM`` (``SIZE=...``, ``BODY=8BITMIME``, ``SMTPUTF8``)."""
    tls: bool = False
    """Whether the message came over TLS (STARTTLS or implicit)."""
    login: str | None = None
    """The user the client authenticated as, or None."""
    peer: Any = None
    """The client's address, as ``Session.peer``."""
    _parsed: list[email.message.EmailMessage] = field(
        default_factory=list, repr=False, compare=False
    )

    @property
    def message(self) -> email.message.EmailMessage:
        """The message parsed with ``email.policy.default`` (parsed once, on first use)."""
        if not self._parsed:
            parser = email.parser.BytesParser(policy=email.policy.default)
            parsed = parser.parsebytes(self.data)
            assert isinstance(parsed, email.message.EmailMessage)
            self._parsed.append(parsed)
        return self._parsed[0]

    @property
    def subject(self) -> str | None:
        """The decoded ``Subject`` header, or None."""
        subject = self.message["Subject"]
        return None if subject is None else str(subject)


class _Recorder:
    """The handler of the test server: accepts, refuses as told, and records."""

    def __init__(self, owner: SMTPTestServer) -> None:
        self.owner = owner

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        # The transaction belongs to the test during which its first RCPT came.
        envelope.__dict__.setdefault("ferrosmtp_testing_generation", self.owner.generation)
        refusal = self.owner.refuse_recipients.get(address.lower())
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.owner.refuse_data is not None:
            return self.owner.refuse_data
        if getattr(envelope, "ferrosmtp_testing_generation", None) != self.owner.generation:
            return "250 2.0.0 OK"  # begun during an earlier test: not that one's business
        login = session.login_data or session.auth_data  # (the authenticator's auth_data)
        if isinstance(login, bytes):
            login = login.decode("utf-8", "replace")
        self.owner._record(
            ReceivedMessage(
                mail_from="" if envelope.mail_from in (None, "<>") else envelope.mail_from,
                rcpt_tos=tuple(envelope.rcpt_tos),
                data=bytes(envelope.original_content or envelope.content or b""),
                mail_options=tuple(envelope.mail_options),
                tls=session.ssl is not None,
                login=login if session.authenticated else None,
                peer=session.peer,
            )
        )
        return "250 2.0.0 OK"


class SMTPTestServer:
    """A ferrosmtp server on loopback, in a thread, recording what it receives.

    ``host`` and ``port`` are where to send; ``messages`` is what arrived, in order.
    ``refuse_recipients[address] = "550 5.1.1 No such user"`` and ``refuse_data =
    "452 4.3.1 Try later"`` make it refuse, to test an application's error handling.
    """

    def __init__(
        self,
        *,
        tls: TLSMode | None = None,
        users: Mapping[str, str] | None = None,
        auth_required: bool = False,
        host: str = "127.0.0.1",
        **server_options: Any,
    ) -> None:
        if tls not in (None, "starttls", "implicit"):
            raise ValueError(f"tls must be None, 'starttls' or 'implicit', not {tls!r}")
        if auth_required and not users:
            raise ValueError("auth_required needs users={'name': 'password', ...}")
        self.host = host
        self.port: int = 0
        self.tls: TLSMode | None = tls
        self.users: dict[str, str] = dict(users or {})
        self._initial_users = dict(self.users)
        self.auth_required = auth_required
        self.server_options = server_options
        self.messages: list[ReceivedMessage] = []
        self.refuse_recipients: dict[str, str] = {}
        self.refuse_data: str | None = None
        self.generation: int = 0
        """Counts ``reset()`` calls: a transaction is recorded in the generation it began."""
        self.cafile: str | None = None
        """Path of the PEM file of the CA that signed the server's certificate (TLS)."""
        self._changed = threading.Condition()
        self._controller: Any = None
        self._ca: Any = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> SMTPTestServer:
        """Start listening on a free port of ``host``; returns self."""
        from ferrosmtp.server import Controller

        options: dict[str, Any] = {"hostname": self.host, "server_hostname": "localhost"}
        if self.tls is not None:
            context = self._server_context()
            options["ssl_context" if self.tls == "implicit" else "tls_context"] = context
        if self.users:
            options["authenticator"] = self._authenticate
            options["auth_required"] = self.auth_required
            # A loopback test server: AUTH is offered without TLS unless asked for TLS.
            options["auth_require_tls"] = self.tls is not None
        # Failed logins are part of tests: no delay, no per-address lockout.
        options["auth_failure_delay"] = 0.0
        options["max_auth_failures_per_ip"] = None
        options.update(self.server_options)
        hostname = options.pop("hostname")
        self._controller = Controller(_Recorder(self), hostname=hostname, port=0, **options)
        self._controller.start()
        self.port = int(self._controller.port)
        return self

    def stop(self) -> None:
        """Stop the server (clients still connected get 421) and remove its files."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> SMTPTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- TLS and AUTH -----------------------------------------------------------------

    def _server_context(self) -> ssl.SSLContext:
        self._ca, certificate = _certificate()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certificate.configure_cert(context)
        self._tmp = tempfile.TemporaryDirectory(prefix="ferrosmtp-testing-")
        self.cafile = str(Path(self._tmp.name) / "ca.pem")
        self._ca.cert_pem.write_to_path(self.cafile)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A new SSL context for a client that trusts this server's certificate (and
        nothing else: not the system's CAs, whose loading costs milliseconds)."""
        if self._ca is None:
            raise RuntimeError("this smtp_server has no TLS (use tls='starttls' or 'implicit')")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._ca.configure_trust(context)
        return context

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> Any:
        from ferrosmtp.server import AuthResult

        login = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        ok = login in self.users and self.users[login] == password
        return AuthResult(success=ok, handled=False, auth_data=auth_data.login if ok else None)

    # -- what arrived -----------------------------------------------------------------

    def _record(self, message: ReceivedMessage) -> None:
        with self._changed:
            self.messages.append(message)
            self._changed.notify_all()

    def clear(self) -> None:
        """Forget the messages received so far."""
        with self._changed:
            self.messages.clear()

    def reset(self) -> None:
        """As new for the next test: no messages, no refusals, the users it started with;
        transactions still open are not recorded when they end."""
        with self._changed:
            self.generation += 1
            self.messages.clear()
            self.refuse_recipients.clear()
            self.refuse_data = None
            self.users.clear()
            self.users.update(self._initial_users)

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Wait until at least ``count`` messages have arrived (for an application that
        sends in the background); returns them. AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"expected {count} message(s) within {timeout} s, "
                        f"received {len(self.messages)}"
                    )
                self._changed.wait(left)
            return list(self.messages)

    def received(
        self,
        *,
        to: str | None = None,
        sender: str | None = None,
        subject: str | None = None,
        where: Callable[[ReceivedMessage], bool] | None = None,
    ) -> list[ReceivedMessage]:
        """The messages matching every criterion given: ``to`` among the envelope
        recipients, ``sender`` the envelope sender (both compared case-insensitively),
        ``subject`` the decoded Subject, ``where`` a predicate."""
        with self._changed:
            messages = list(self.messages)
        return [m for m in messages if _matches(m, to, sender, subject, where)]

    def assert_received(
        self,
        *,
        to: str | None = None,
        sender: str | None = None,
        subject: str | None = None,
        where: Callable[[ReceivedMessage], bool] | None = None,
        count: int | None = 1,
    ) -> ReceivedMessage:
        """Assert that ``count`` messages match (any number >= 1 with ``count=None``) and
        return the last of them; the AssertionError lists what did arrive."""
        found = self.received(to=to, sender=sender, subject=subject, where=where)
        if (count is None and not found) or (count is not None and len(found) != count):
            wanted = ", ".join(
                f"{k}={v!r}"
                for k, v in (("to", to), ("sender", sender), ("subject", subject))
                if v is not None
            )
            seen = "; ".join(
                f"from {m.mail_from!r} to {list(m.rcpt_tos)} subject {m.subject!r}"
                for m in self.messages
            )
            expected = "at least 1" if count is None else str(count)
            raise AssertionError(
                f"expected {expected} message(s) matching {wanted or 'anything'}, found "
                f"{len(found)}; received: {seen or 'nothing'}"
            )
        return found[-1]

    def assert_nothing_received(self) -> None:
        """Assert that no message arrived."""
        if self.messages:
            raise AssertionError(f"expected no message, received {len(self.messages)}")

    def __repr__(self) -> str:
        return f"<SMTPTestServer {self.host}:{self.port} tls={self.tls} {len(self.messages)} msgs>"


_CERTIFICATE: list[tuple[Any, Any]] = []


def _certificate() -> tuple[Any, Any]:
    """A CA and a certificate for localhost, 127.0.0.1 and ::1, made once per process
    (making them is most of the cost of a TLS server start)."""
    if not _CERTIFICATE:
        try:
            import trustme
        except ImportError:
            raise RuntimeError(
                "smtp_server(tls=...) makes its certificate with trustme: pip install trustme"
            ) from None
        ca = trustme.CA()
        _CERTIFICATE.append((ca, ca.issue_cert("localhost", "127.0.0.1", "::1")))
    return _CERTIFICATE[0]


def _matches(
    message: ReceivedMessage,
    to: str | None,
    sender: str | None,
    subject: str | None,
    where: Callable[[ReceivedMessage], bool] | None,
) -> bool:
    if to is not None and to.lower() not in (r.lower() for r in message.rcpt_tos):
        return False
    if sender is not None and sender.lower() != message.mail_from.lower():
        return False
    if subject is not None and message.subject != subject:
        return False
    return where is None or where(message)


# -- the pytest side -------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``smtp_server`` marker."""
    config.addinivalue_line(
        "markers",
        "smtp_server(tls=None|'starttls'|'implicit', users=None, auth_required=False, "
        "**server_options): options of the smtp_server fixture (ferrosmtp.testing)",
    )


@pytest.fixture
def smtp_server_factory() -> Iterator[Callable[..., SMTPTestServer]]:
    """Start test servers with the given options (those of ``SMTPTestServer``); each is
    the test's own, stopped when the test ends."""
    started: list[SMTPTestServer] = []

    def start(**options: Any) -> SMTPTestServer:
        server = SMTPTestServer(**options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


class _Pool:
    """The session's servers, one for each set of options asked for."""

    def __init__(self) -> None:
        self.servers: dict[str, SMTPTestServer] = {}

    def get(self, options: dict[str, Any]) -> SMTPTestServer:
        key = repr(sorted(options.items()))
        server = self.servers.get(key)
        if server is None:
            server = self.servers[key] = SMTPTestServer(**options).start()
        else:
            server.reset()
        return server

    def close(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.servers.clear()


@pytest.fixture(scope="session")
def _ferrosmtp_servers() -> Iterator[_Pool]:
    pool = _Pool()
    yield pool
    pool.close()


@pytest.fixture
def smtp_server(request: pytest.FixtureRequest, _ferrosmtp_servers: _Pool) -> SMTPTestServer:
    """A ferrosmtp server on a free loopback port that records what it receives; options
    from the ``smtp_server`` marker. Shared by the tests with the same options, and reset
    for each of them."""
    marker = request.node.get_closest_marker("smtp_server")
    options = dict(marker.kwargs) if marker is not None else {}
    return _ferrosmtp_servers.get(options)
