"""An asyncio SMTP/LMTP client with aiosmtplib's API, and a connection pool.

``Client`` drives the sans-IO ``protocol.client.ClientConnection`` from an
``asyncio.Protocol``: the connection decides what may be sent and pairs every reply with
its command; this module does the I/O, the timeouts, TLS and the policy (which
extensions to use for a message). ``send()`` is the one-call helper and ``Pool`` keeps a
fixed number of connections to one server for bulk sending.

What it adds to aiosmtplib's behaviour: MAIL, RCPT and DATA pipelined in one write when
the server offers PIPELINING; BDAT when it offers CHUNKING (opt-in, and automatic for
big messages); SIZE checked before sending; SMTPUTF8 and BODY=8BITMIME declared when the
message needs them; DSN options; LMTP with one result per recipient; a strict STARTTLS
(bytes after the 220 abort the connection); cleartext passwords only over TLS or to a
loopback peer unless ``allow_insecure_auth=True``.
"""

from __future__ import annotations

import asyncio
import copy
import email.generator
import email.message
import email.policy
import email.utils
import enum
import io
import ipaddress
import os
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple, TypeVar

from ferrosmtp import auth as sasl
from ferrosmtp import codec as _codec
from ferrosmtp.errors import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPNotSupported,
    SMTPProtocolError,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPServiceUnavailable,
    SMTPTimeoutError,
)
from ferrosmtp.protocol.client import (
    ClientConnection,
    Command,
    ExtensionNotSupported,
    LocalProtocolError,
    MessageTooLarge,
    Phase,
    RemoteProtocolError,
    Response,
    ServerClosing,
    check_hello_name,
    parse_option,
)

__all__ = [
    "DEFAULT_DATA_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "Client",
    "Pool",
    "SMTPResponse",
    "SendResult",
    "send",
]

DEFAULT_TIMEOUT = 60.0  # seconds: connecting, and each reply (aiosmtplib's default)
DEFAULT_DATA_TIMEOUT = 600.0  # seconds: message content up to its final reply (RFC 5321
# §4.5.3.2.6 asks clients to wait 10 minutes for the reply to the end of data)
BDAT_THRESHOLD = 4 << 20  # messages this big go by BDAT when the server offers CHUNKING
CHUNK_SIZE = 1 << 20  # message content is encoded and written in pieces of this size
WRITE_BUFFER_HIGH = 1 << 20  # transport buffer above which writing waits for the socket
SMTP_PORT, SUBMISSION_PORT, SUBMISSIONS_PORT, LMTP_PORT = 25, 587, 465, 24

_T = TypeVar("_T")
SMTPTokenGenerator = Callable[[], Awaitable[str]]
SocketPathType = str | bytes | os.PathLike[str]


class _Default(enum.Enum):
    """Marks "use the value given to the constructor" (aiosmtplib's ``Default.token``)."""

    token = 0


_DEFAULT: Literal[_Default.token] = _Default.token
Timeout = float | None | Literal[_Default.token]


class SMTPResponse(NamedTuple):
    """A server reply: ``code`` and ``message`` (the reply lines joined by newlines),
    as in aiosmtplib."""

    code: int
    message: str

    def __str__(self) -> str:
        return f"{self.code} {self.message}"


class SendResult(tuple[dict[str, SMTPResponse], str]):
    """What ``sendmail``/``send_message`` return: aiosmtplib's ``(refused, message)``
    tuple, so ``errors, reply = await client.sendmail(...)`` works as before.

    ``refused`` maps each refused recipient to the server's reply (RCPT refusals, and
    for LMTP, per-recipient delivery failures); ``message`` is the text of the reply to
    the message content; ``delivered`` maps each recipient the message went to, to the
    final reply for it (the one reply to the content in SMTP, its own reply in LMTP).
    """

    delivered: dict[str, SMTPResponse]

    def __new__(
        cls,
        refused: dict[str, SMTPResponse],
        message: str,
        delivered: dict[str, SMTPResponse] | None = None,
    ) -> SendResult:
        self = super().__new__(cls, (refused, message))
        self.delivered = delivered if delivered is not None else {}
        return self

    @property
    def refused(self) -> dict[str, SMTPResponse]:
        return self[0]

    @property
    def message(self) -> str:
        return self[1]


def _response(reply: Any) -> SMTPResponse:
    return SMTPResponse(int(reply.code), str(reply.text))


def _clone(exc: SMTPException) -> SMTPException:
    """A fresh copy, so that each waiter raises its own exception object (tracebacks
    attached to a shared instance would pile up)."""
    return type(exc)(*exc.args)


# --- The asyncio protocol: bytes in, replies out ---------------------------------------------


class _Waiter:
    """Someone waiting for the next ``count`` replies, until ``deadline`` (loop time)."""

    __slots__ = ("count", "deadline", "future", "responses")

    def __init__(
        self, count: int, future: asyncio.Future[list[Response]], deadline: float | None
    ) -> None:
        self.count = count
        self.future = future
        self.deadline = deadline
        self.responses: list[Response] = []


class _SMTPProtocol(asyncio.Protocol):
    """Feeds the socket to the ClientConnection and hands replies to waiters in order.

    Waiters are queued in the order their commands were written, so replies reach them in
    that order whatever the read boundaries. Any failure (lost connection, protocol
    error, 421, timeout) fails every waiter and makes the protocol unusable.

    Timeouts use one alarm per connection rather than a timer per reply: each waiter
    has a deadline, and the alarm, set for the earliest one, re-arms itself when it fires
    early because that waiter has been answered meanwhile.
    """

    def __init__(
        self,
        conn: ClientConnection,
        loop: asyncio.AbstractEventLoop,
        greeting_timeout: float | None,
    ) -> None:
        self.conn = conn
        self.loop = loop
        self.greeting_timeout = greeting_timeout
        self.greeting: asyncio.Future[list[Response]] | None = None
        self.transport: asyncio.Transport | None = None
        self.error: SMTPException | None = None  # why the connection can no longer be used
        self._waiters: deque[_Waiter] = deque()
        self._paused = False
        self._drain: asyncio.Future[None] | None = None
        self._drain_deadline: float | None = None
        self._alarm: asyncio.TimerHandle | None = None
        self._alarm_at = 0.0

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        # The greeting may arrive before the connecting coroutine resumes: wait for it
        # from the start.
        self.greeting = self.expect(1, self.greeting_timeout)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except RemoteProtocolError as exc:
            self.fail(SMTPProtocolError(f"{exc}; connection closed"))
            return
        waiters = self._waiters
        for event in events:
            if type(event) is ServerClosing or event.reply.code == 421:
                self.fail(SMTPServiceUnavailable(421, str(event.reply.text)), graceful=True)
                return
            if not waiters:  # a reply to a command nobody waits for: cannot happen
                self.fail(SMTPProtocolError("reply without a waiting command"))
                return
            waiter = waiters[0]
            responses = waiter.responses
            responses.append(event)  # type: ignore[arg-type]
            if len(responses) == waiter.count:
                waiters.popleft()
                if not waiter.future.done():  # a cancelled waiter just drops its replies
                    waiter.future.set_result(responses)
        if self.conn.phase is Phase.TLS_HANDSHAKE and self.transport is not None:
            # Read nothing more in plaintext: the next bytes belong to the TLS handshake.
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        return False  # close the transport; connection_lost reports it

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.connection_lost()
        reason = f"Connection lost: {exc}" if exc else "Connection lost"
        self.fail(SMTPServerDisconnected(reason))
        self.transport = None

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # used by the client

    def expect(self, count: int, timeout: float | None) -> asyncio.Future[list[Response]]:
        """Register for the next ``count`` replies (before writing their commands)."""
        if self.error is not None:
            raise _clone(self.error)
        deadline = None
        if timeout is not None:
            deadline = self.loop.time() + timeout
            if self._alarm is None or deadline < self._alarm_at:
                self._set_alarm(deadline)
        waiter = _Waiter(count, self.loop.create_future(), deadline)
        self._waiters.append(waiter)
        return waiter.future

    def write(self, data: bytes) -> None:
        if self.error is not None:
            raise _clone(self.error)
        assert self.transport is not None
        self.transport.write(data)

    async def drain(self, timeout: float | None) -> None:
        """Wait until the transport's buffer is below its low-water mark."""
        if self.error is not None:
            raise _clone(self.error)
        if not self._paused:
            return
        self._drain = self.loop.create_future()
        if timeout is not None:
            self._drain_deadline = self.loop.time() + timeout
            if self._alarm is None or self._drain_deadline < self._alarm_at:
                self._set_alarm(self._drain_deadline)
        try:
            await self._drain
        finally:
            self._drain = None
            self._drain_deadline = None

    def fail(self, exc: SMTPException, *, graceful: bool = False) -> None:
        """Make the connection unusable: close it, fail every waiter with ``exc``."""
        if self.error is None:
            self.error = exc
        if self._alarm is not None:
            self._alarm.cancel()
            self._alarm = None
        self.conn.connection_lost()
        if self.transport is not None and not self.transport.is_closing():
            if graceful:
                self.transport.close()
            else:
                self.transport.abort()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(_clone(self.error))
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(_clone(self.error))

    def _set_alarm(self, when: float) -> None:
        if self._alarm is not None:
            self._alarm.cancel()
        self._alarm = self.loop.call_at(when, self._on_alarm)
        self._alarm_at = when

    def _on_alarm(self) -> None:
        self._alarm = None
        now = self.loop.time() + 0.001  # the loop may run a timer a little early
        deadlines = [w.deadline for w in self._waiters if w.deadline is not None]
        if self._drain_deadline is not None:
            deadlines.append(self._drain_deadline)
        if not deadlines:
            return
        if min(deadlines) <= now:
            self.fail(SMTPReadTimeoutError("Timed out waiting for server response"))
        else:
            self._set_alarm(min(deadlines))


# --- Messages ---------------------------------------------------------------------------


def wire_size(body: bytes) -> int:
    """The size of ``body`` as transmitted (RFC 1870): bare CR and LF counted as CRLF and
    a final CRLF added if missing, without the dot-stuffing.

    Counted by running the codec's line-end normalizer over the body, a piece at a time
    (memory stays bounded; in Rust this is several times faster than ``bytes.count``)."""
    normalizer = _codec.DotStuffer(dots=False)
    size = 0
    for start in range(0, len(body), CHUNK_SIZE):
        size += len(normalizer.feed(body[start : start + CHUNK_SIZE]))
    return size + len(normalizer.finish())


def flatten_message(
    message: email.message.Message, *, utf8: bool = False, cte_type: str = "8bit"
) -> bytes:
    """The message as bytes with CRLF line ends, without its Bcc and Resent-Bcc headers."""
    message = copy.copy(message)
    del message["Bcc"]
    del message["Resent-Bcc"]
    policy: email.policy.Policy
    if isinstance(message, email.message.EmailMessage):
        policy = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
    else:
        policy = email.policy.compat32.clone(linesep="\r\n")
    if cte_type != "8bit":
        policy = policy.clone(cte_type=cte_type)
    buffer = io.BytesIO()
    email.generator.BytesGenerator(buffer, policy=policy).flatten(message)
    return buffer.getvalue()


def _header_addresses(message: email.message.Message, names: Iterable[str]) -> list[str]:
    values = [str(v) for name in names for v in message.get_all(name, [])]
    return [address for _, address in email.utils.getaddresses(values) if address]


def extract_sender(message: email.message.Message) -> str | None:
    """The envelope sender from the headers: Sender, else From (Resent-* for a resent
    message, RFC 5322 §3.6.6)."""
    prefix = _resent_prefix(message)
    for name in (prefix + "Sender", prefix + "From"):
        if name in message:
            addresses = _header_addresses(message, [name])
            return addresses[0] if addresses else None
    return None


def extract_recipients(message: email.message.Message) -> list[str]:
    """The envelope recipients from To, Cc and Bcc (Resent-* for a resent message)."""
    prefix = _resent_prefix(message)
    return _header_addresses(message, [prefix + "To", prefix + "Cc", prefix + "Bcc"])


def _resent_prefix(message: email.message.Message) -> str:
    resent = message.get_all("Resent-Date")
    if resent is not None and len(resent) > 1:
        raise ValueError("Message has more than one 'Resent-' header block")
    return "Resent-" if resent else ""


def _is_loopback(peer: Any) -> bool:
    if isinstance(peer, tuple) and peer:
        try:
            return ipaddress.ip_address(str(peer[0]).split("%")[0]).is_loopback
        except ValueError:
            return False
    return isinstance(peer, (str, bytes))  # a Unix socket path


_local_name_cache: str | None = None


async def _default_local_name(sockname: Any) -> str:
    """The EHLO name: this host's FQDN if it is a valid domain, else the address literal
    of the local end of the connection (RFC 5321 §4.1.4)."""
    global _local_name_cache
    if _local_name_cache is None:
        fqdn = await asyncio.to_thread(socket.getfqdn)
        try:
            check_hello_name(fqdn)
        except ValueError:
            fqdn = ""
        _local_name_cache = fqdn
    if _local_name_cache:
        return _local_name_cache
    if isinstance(sockname, tuple) and sockname:
        try:
            ip = ipaddress.ip_address(str(sockname[0]).split("%")[0])
        except ValueError:
            return "localhost"
        return f"[{ip}]" if ip.version == 4 else f"[IPv6:{ip}]"
    return "localhost"


# --- The client ---------------------------------------------------------------------------


class Client:
    """An SMTP (or LMTP) client connection, used like aiosmtplib's ``SMTP``::

        async with ferrosmtp.Client("mx.example", 587, username="u", password="p") as c:
            refused, reply = await c.send_message(message)

    Connecting reads the greeting, upgrades with STARTTLS if the server offers it
    (``start_tls=None``; ``True`` requires it, ``False`` never) and logs in when
    ``username`` is given. Implicit TLS with ``use_tls=True``. Certificates are verified
    against the system's trust store (or ``cert_bundle``) unless ``validate_certs=False``.

    Beyond aiosmtplib: ``lmtp=True`` speaks LMTP (LHLO, one reply per recipient);
    ``use_bdat=True`` sends messages with BDAT when the server offers CHUNKING (always
    done for messages of ``bdat_threshold`` octets or more); ``data_timeout`` bounds the
    sending of the message content until its final reply; ``allow_insecure_auth=True``
    allows PLAIN/LOGIN/XOAUTH2 over an unencrypted connection to a non-loopback peer.
    """

    AUTH_METHODS: tuple[str, ...] = ("cram-md5", "plain", "login")

    def __init__(
        self,
        hostname: str | None = None,
        port: int | None = None,
        *,
        username: str | bytes | None = None,
        password: str | bytes | None = None,
        oauth_token_generator: SMTPTokenGenerator | None = None,
        local_hostname: str | None = None,
        source_address: tuple[str, int] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        data_timeout: float | None = DEFAULT_DATA_TIMEOUT,
        use_tls: bool = False,
        start_tls: bool | None = None,
        validate_certs: bool = True,
        client_cert: str | None = None,
        client_key: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        cert_bundle: str | None = None,
        socket_path: SocketPathType | None = None,
        sock: socket.socket | None = None,
        lmtp: bool = False,
        use_bdat: bool = False,
        bdat_threshold: int | None = BDAT_THRESHOLD,
        allow_insecure_auth: bool = False,
    ) -> None:
        self.hostname = hostname
        self.port = port
        self.username = username
        self.password = password
        self.oauth_token_generator = oauth_token_generator
        self.local_hostname = local_hostname
        self.source_address = source_address
        self.timeout = timeout
        self.data_timeout = data_timeout
        self.use_tls = use_tls
        self.start_tls = start_tls
        self.validate_certs = validate_certs
        self.client_cert = client_cert
        self.client_key = client_key
        self.tls_context = tls_context
        self.cert_bundle = cert_bundle
        self.socket_path = socket_path
        self.sock = sock
        self.lmtp = lmtp
        self.use_bdat = use_bdat
        self.bdat_threshold = bdat_threshold
        self.allow_insecure_auth = allow_insecure_auth

        self.last_helo_response: SMTPResponse | None = None
        self.last_ehlo_response: SMTPResponse | None = None
        self._conn: ClientConnection | None = None
        self._protocol: _SMTPProtocol | None = None
        self._lock = _Mutex()  # one transaction (or command exchange) at a time
        self._turns: deque[_Turn] = deque()  # envelopes waiting to follow a message's content
        self._handed: _Turn | None = None  # the turn whose envelope we sent with our content
        self._validate_config()

    def _validate_config(self) -> None:
        if self.password is not None and self.oauth_token_generator is not None:
            raise ValueError("password and oauth_token_generator are mutually exclusive")
        if self.start_tls and self.use_tls:
            raise ValueError("The start_tls and use_tls options are not compatible.")
        if self.tls_context is not None and self.client_cert is not None:
            raise ValueError("Either a TLS context or a certificate/key must be provided")
        if self.sock is not None and self.socket_path is not None:
            raise ValueError("Either a socket or a socket path must be provided, not both")
        if (self.sock is not None or self.socket_path is not None) and self.port is not None:
            raise ValueError("If using a socket, port is not required")
        if (self.sock or self.socket_path) and self.use_tls and self.hostname is None:
            raise ValueError("If using a socket with TLS, hostname is required")
        if self.hostname is not None and any(c in self.hostname for c in "\r\n\x00"):
            raise ValueError("The hostname param contains prohibited control characters")
        if self.local_hostname is not None:
            check_hello_name(self.local_hostname)

    # --- State ----------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        protocol = self._protocol
        return (
            protocol is not None
            and protocol.error is None
            and protocol.transport is not None
            and not protocol.transport.is_closing()
        )

    @property
    def connection(self) -> ClientConnection | None:
        """The sans-IO session state (phase, extensions), for inspection."""
        return self._conn

    @property
    def esmtp_extensions(self) -> dict[str, str]:
        """The extensions of the last EHLO, keyword lower-cased -> parameters."""
        if self._conn is None or self._conn.extensions is None:
            return {}
        return {k.lower(): str(v) for k, v in self._conn.extensions.extensions.items()}

    @property
    def supports_esmtp(self) -> bool:
        return self._conn is not None and self._conn.esmtp

    @property
    def is_ehlo_or_helo_needed(self) -> bool:
        return self._conn is None or self._conn.phase is Phase.UNIDENTIFIED

    @property
    def server_auth_methods(self) -> list[str]:
        mechanisms = self.esmtp_extensions.get("auth", "")
        return [m.lower() for m in mechanisms.split()]

    @property
    def supported_auth_methods(self) -> list[str]:
        return [m for m in self.AUTH_METHODS if m in self.server_auth_methods]

    def supports_extension(self, extension: str, /) -> bool:
        return extension.lower() in self.esmtp_extensions

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._protocol.transport if self._protocol else None

    def get_transport_info(self, key: str) -> Any:
        if not self.is_connected or self.transport is None:
            raise SMTPServerDisconnected("Server not connected")
        return self.transport.get_extra_info(key)

    @property
    def is_tls(self) -> bool:
        return self._conn is not None and self._conn.tls

    # --- Connecting ---------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        if not self.is_connected:
            await self.connect()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if isinstance(exc, (ConnectionError, TimeoutError)) or not self.is_connected:
            self.close()
            return
        try:
            await self.quit()
        except (SMTPServerDisconnected, SMTPResponseException, SMTPTimeoutError):
            self.close()

    async def connect(
        self,
        *,
        hostname: str | Literal[_Default.token] | None = _DEFAULT,
        port: int | Literal[_Default.token] | None = _DEFAULT,
        username: str | bytes | Literal[_Default.token] | None = _DEFAULT,
        password: str | bytes | Literal[_Default.token] | None = _DEFAULT,
        local_hostname: str | Literal[_Default.token] | None = _DEFAULT,
        source_address: tuple[str, int] | Literal[_Default.token] | None = _DEFAULT,
        timeout: Timeout = _DEFAULT,
        use_tls: bool | None = None,
        start_tls: bool | Literal[_Default.token] | None = _DEFAULT,
        validate_certs: bool | None = None,
        client_cert: str | Literal[_Default.token] | None = _DEFAULT,
        client_key: str | Literal[_Default.token] | None = _DEFAULT,
        tls_context: ssl.SSLContext | Literal[_Default.token] | None = _DEFAULT,
        cert_bundle: str | Literal[_Default.token] | None = _DEFAULT,
        socket_path: SocketPathType | Literal[_Default.token] | None = _DEFAULT,
        sock: socket.socket | Literal[_Default.token] | None = _DEFAULT,
    ) -> SMTPResponse:
        """Connect, read the greeting, then STARTTLS and log in as configured.

        Keyword arguments override (and replace) the constructor's. Returns the greeting.
        Any failure closes the connection before the exception propagates."""
        overrides: dict[str, Any] = {
            "hostname": hostname,
            "port": port,
            "username": username,
            "password": password,
            "local_hostname": local_hostname,
            "source_address": source_address,
            "start_tls": start_tls,
            "client_cert": client_cert,
            "client_key": client_key,
            "tls_context": tls_context,
            "cert_bundle": cert_bundle,
            "socket_path": socket_path,
            "sock": sock,
        }
        for name, value in overrides.items():
            if value is not _DEFAULT:
                setattr(self, name, value)
        if use_tls is not None:
            self.use_tls = use_tls
        if validate_certs is not None:
            self.validate_certs = validate_certs
        self._validate_config()
        if self.is_connected:
            raise SMTPException("SMTP instance is already connected")
        connect_timeout = self.timeout if timeout is _DEFAULT else timeout
        try:
            greeting = await self._open(connect_timeout)
            await self._maybe_starttls_on_connect()
            await self._maybe_login_on_connect()
        except BaseException:
            self.close()
            raise
        return greeting

    def _default_port(self) -> int:
        if self.lmtp:
            return LMTP_PORT
        if self.use_tls:
            return SUBMISSIONS_PORT
        if self.start_tls:
            return SUBMISSION_PORT
        return SMTP_PORT

    async def _open(self, timeout: float | None) -> SMTPResponse:
        loop = asyncio.get_running_loop()
        conn = ClientConnection(lmtp=self.lmtp)
        conn.tls = self.use_tls
        protocol = _SMTPProtocol(conn, loop, timeout)
        context = self._build_tls_context() if self.use_tls else None
        hostname = self.hostname or "localhost"
        port = self.port or self._default_port()
        where = f"{hostname} on port {port}"
        server_hostname = hostname if context is not None else None
        handshake_timeout = timeout if context is not None else None
        coro: Awaitable[tuple[asyncio.BaseTransport, asyncio.BaseProtocol]]
        if self.sock is not None:
            where = "the given socket"
            coro = loop.create_connection(
                lambda: protocol,
                sock=self.sock,
                ssl=context,
                server_hostname=server_hostname,
                ssl_handshake_timeout=handshake_timeout,
            )
        elif self.socket_path is not None:
            path = os.fsdecode(self.socket_path)
            where = f"socket {path}"
            coro = loop.create_unix_connection(
                lambda: protocol,
                path,
                ssl=context,
                server_hostname=server_hostname,
                ssl_handshake_timeout=handshake_timeout,
            )
        else:
            coro = loop.create_connection(
                lambda: protocol,
                host=hostname,
                port=port,
                ssl=context,
                server_hostname=server_hostname,
                ssl_handshake_timeout=handshake_timeout,
                local_addr=self.source_address,
            )
        try:
            await asyncio.wait_for(coro, timeout)
        except (asyncio.TimeoutError, TimeoutError) as exc:
            raise SMTPConnectTimeoutError(f"Timed out connecting to {where}") from exc
        except OSError as exc:
            raise SMTPConnectError(f"Error connecting to {where}: {exc}") from exc
        self._conn = conn
        self._protocol = protocol
        try:
            assert protocol.greeting is not None
            (response,) = await protocol.greeting
        except SMTPServiceUnavailable as exc:
            raise SMTPConnectResponseError(exc.code, exc.message) from exc
        except SMTPReadTimeoutError as exc:
            raise SMTPConnectTimeoutError("Timed out waiting for server ready message") from exc
        except SMTPServerDisconnected as exc:
            raise SMTPConnectError(f"Error connecting to {where}: {exc.message}") from exc
        greeting = _response(response.reply)
        if greeting.code != 220:
            raise SMTPConnectResponseError(greeting.code, greeting.message)
        return greeting

    def _build_tls_context(self) -> ssl.SSLContext:
        if self.tls_context is not None:
            return self.tls_context
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.cert_bundle)
        if not self.validate_certs:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.client_cert is not None:
            context.load_cert_chain(self.client_cert, keyfile=self.client_key)
        return context

    async def _maybe_starttls_on_connect(self) -> None:
        if self.use_tls or self.start_tls is False:
            return
        await self._ehlo_or_helo_if_needed()
        if self.start_tls is True or self.supports_extension("starttls"):
            await self.starttls()

    async def _maybe_login_on_connect(self) -> None:
        if self.oauth_token_generator is not None:
            if self.username is None:
                raise SMTPException("username is required when using oauth_token_generator")
            await self._ehlo_or_helo_if_needed()
            if "xoauth2" not in self.server_auth_methods:
                raise SMTPException(
                    "oauth_token_generator provided but server does not support XOAUTH2"
                )
            token = await self.oauth_token_generator()
            await self.auth_xoauth2(self.username, token)
        elif self.username is not None:
            await self.login(self.username, self.password if self.password is not None else "")

    def close(self) -> None:
        """Close the connection now (no QUIT). Pending operations fail with
        SMTPServerDisconnected."""
        protocol = self._protocol
        if protocol is not None:
            protocol.fail(SMTPServerDisconnected("Connection closed"), graceful=True)
        self._protocol = None
        self._conn = None
        self.last_ehlo_response = None
        self.last_helo_response = None

    # --- Exchanging commands ------------------------------------------------------------

    def _session(self) -> tuple[ClientConnection, _SMTPProtocol]:
        if self._protocol is None or self._conn is None:
            raise SMTPServerDisconnected("Server not connected")
        if self._protocol.error is not None:
            raise _clone(self._protocol.error)
        return self._conn, self._protocol

    def _timeout(self, timeout: Timeout) -> float | None:
        return self.timeout if timeout is _DEFAULT else timeout

    def _encode(self, conn: ClientConnection, commands: Sequence[Command]) -> bytes:
        """The bytes of ``commands``, with the sans-IO layer's refusals as client errors."""
        try:
            return conn.send_all(commands)
        except MessageTooLarge as exc:
            sender = next((c.argument for c in commands if c.verb == "MAIL"), "")
            raise SMTPSenderRefused(552, f"5.3.4 {exc} (refused before sending)", sender) from None
        except ExtensionNotSupported as exc:
            raise SMTPNotSupported(str(exc)) from None
        except LocalProtocolError as exc:
            raise SMTPException(str(exc)) from None

    async def _exchange(self, commands: Sequence[Command], timeout: Timeout) -> list[Response]:
        """Send ``commands`` and return their replies: in one write when the server
        pipelines, one by one otherwise."""
        conn, protocol = self._session()
        seconds = self._timeout(timeout)
        if len(commands) == 1 or conn.pipelining:
            data = self._encode(conn, commands)
            waiter = protocol.expect(len(commands), seconds)
            protocol.write(data)
            return await waiter
        responses = []
        for command in commands:
            data = self._encode(conn, [command])
            waiter = protocol.expect(1, seconds)
            protocol.write(data)
            responses.extend(await waiter)
        return responses

    async def _command(self, command: Command, timeout: Timeout) -> SMTPResponse:
        (response,) = await self._exchange([command], timeout)
        return _response(response.reply)

    async def _locked(self, operation: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``operation`` while no other command exchange is in progress."""
        lock = self._lock
        if not lock.try_acquire():
            await lock.acquire()
        try:
            return await operation()
        finally:
            lock.release()

    # --- Basic commands -------------------------------------------------------------------

    async def ehlo(
        self, *, hostname: str | None = None, timeout: Timeout = _DEFAULT
    ) -> SMTPResponse:
        """EHLO (LHLO for LMTP). Raises SMTPHeloError unless the reply is 250."""
        return await self._locked(
            lambda: self._hello("LHLO" if self.lmtp else "EHLO", hostname, timeout)
        )

    async def helo(
        self, *, hostname: str | None = None, timeout: Timeout = _DEFAULT
    ) -> SMTPResponse:
        """HELO. Raises SMTPHeloError unless the reply is 250."""
        return await self._locked(lambda: self._hello("HELO", hostname, timeout))

    async def _hello(self, verb: str, hostname: str | None, timeout: Timeout) -> SMTPResponse:
        _, protocol = self._session()
        if hostname is None:
            if self.local_hostname is None:
                sockname = (
                    protocol.transport.get_extra_info("sockname") if protocol.transport else None
                )
                self.local_hostname = await _default_local_name(sockname)
            hostname = self.local_hostname
        command = Command.hello(verb, hostname)
        response = await self._command(command, timeout)
        if response.code != 250:
            raise SMTPHeloError(response.code, response.message)
        if verb == "HELO":
            self.last_helo_response = response
        else:
            self.last_ehlo_response = response
        return response

    async def _ehlo_or_helo_if_needed(self) -> None:
        if not self.is_ehlo_or_helo_needed:
            return
        if self.lmtp:
            await self._hello("LHLO", None, _DEFAULT)
            return
        try:
            await self._hello("EHLO", None, _DEFAULT)
        except SMTPHeloError:
            if not self.is_connected:
                raise
            await self._hello("HELO", None, _DEFAULT)

    async def help(self, *, timeout: Timeout = _DEFAULT) -> str:
        async def run() -> str:
            await self._ehlo_or_helo_if_needed()
            response = await self._command(Command.help(), timeout)
            if response.code not in (211, 214):
                raise SMTPResponseException(response.code, response.message)
            return response.message

        return await self._locked(run)

    async def rset(self, *, timeout: Timeout = _DEFAULT) -> SMTPResponse:
        return await self._locked(lambda: self._simple("RSET", timeout))

    async def noop(self, *, timeout: Timeout = _DEFAULT) -> SMTPResponse:
        return await self._locked(lambda: self._simple("NOOP", timeout))

    async def _simple(self, verb: str, timeout: Timeout) -> SMTPResponse:
        await self._ehlo_or_helo_if_needed()
        response = await self._command(Command.simple(verb), timeout)
        if response.code != 250:
            raise SMTPResponseException(response.code, response.message)
        return response

    async def quit(self, *, timeout: Timeout = _DEFAULT) -> SMTPResponse:
        """QUIT, then close the connection."""

        async def run() -> SMTPResponse:
            try:
                response = await self._command(Command.simple("QUIT"), timeout)
            finally:
                self.close()
            if response.code != 221:
                raise SMTPResponseException(response.code, response.message)
            return response

        return await self._locked(run)

    async def vrfy(
        self, address: str, /, *, options: Iterable[str] | None = None, timeout: Timeout = _DEFAULT
    ) -> SMTPResponse:
        """VRFY. Returns 250, 251 or 252 replies; raises SMTPResponseException otherwise."""
        return await self._locked(lambda: self._query("VRFY", address, options, timeout))

    async def expn(
        self, address: str, /, *, options: Iterable[str] | None = None, timeout: Timeout = _DEFAULT
    ) -> SMTPResponse:
        """EXPN. Returns 250, 251 or 252 replies; raises SMTPResponseException otherwise."""
        return await self._locked(lambda: self._query("EXPN", address, options, timeout))

    async def _query(
        self, verb: str, argument: str, options: Iterable[str] | None, timeout: Timeout
    ) -> SMTPResponse:
        command = Command.query(verb, argument, smtputf8=True)  # validate before any I/O
        if options and any(o.upper() != "SMTPUTF8" for o in options):
            raise ValueError(f"{verb} takes no options other than SMTPUTF8")
        await self._ehlo_or_helo_if_needed()
        response = await self._command(command, timeout)
        if response.code not in (250, 251, 252):
            raise SMTPResponseException(response.code, response.message)
        return response

    # --- TLS ---------------------------------------------------------------------------------

    async def starttls(
        self,
        *,
        server_hostname: str | None = None,
        validate_certs: bool | None = None,
        client_cert: str | Literal[_Default.token] | None = _DEFAULT,
        client_key: str | Literal[_Default.token] | None = _DEFAULT,
        cert_bundle: str | Literal[_Default.token] | None = _DEFAULT,
        tls_context: ssl.SSLContext | Literal[_Default.token] | None = _DEFAULT,
        timeout: Timeout = _DEFAULT,
    ) -> SMTPResponse:
        """Upgrade the connection with STARTTLS (RFC 3207), then EHLO again.

        Raises SMTPException if TLS is already on or the server does not offer STARTTLS,
        and SMTPProtocolError (closing the connection) if the server sends anything after
        its 220 before the handshake: such bytes would be read as if they came from the
        encrypted server (security checklist B6)."""
        for name, value in (
            ("client_cert", client_cert),
            ("client_key", client_key),
            ("cert_bundle", cert_bundle),
            ("tls_context", tls_context),
        ):
            if value is not _DEFAULT:
                setattr(self, name, value)
        if validate_certs is not None:
            self.validate_certs = validate_certs
        self._validate_config()
        return await self._locked(lambda: self._starttls(server_hostname, timeout))

    async def _starttls(self, server_hostname: str | None, timeout: Timeout) -> SMTPResponse:
        conn, protocol = self._session()
        if conn.tls:
            raise SMTPException("Connection already using TLS")
        await self._ehlo_or_helo_if_needed()
        if not conn.supports("STARTTLS"):
            raise SMTPException("SMTP STARTTLS extension not supported by server.")
        context = self._build_tls_context()
        response = await self._command(Command.simple("STARTTLS"), timeout)
        if response.code != 220:
            raise SMTPResponseException(response.code, response.message)
        assert protocol.transport is not None
        loop = asyncio.get_running_loop()
        seconds = self._timeout(timeout)
        try:
            transport = await loop.start_tls(
                protocol.transport,
                protocol,
                context,
                server_hostname=server_hostname or self.hostname or "localhost",
                ssl_handshake_timeout=seconds,
            )
        except (asyncio.TimeoutError, TimeoutError, ConnectionAbortedError) as exc:
            self.close()
            raise SMTPTimeoutError("Timed out during the TLS handshake") from exc
        except (OSError, ssl.SSLError) as exc:
            self.close()
            raise SMTPConnectError(f"TLS handshake failed: {exc}") from exc
        if transport is None:
            self.close()
            raise SMTPServerDisconnected("Connection lost during the TLS handshake")
        assert isinstance(transport, asyncio.Transport)
        protocol.transport = transport
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        conn.tls_started()
        self.last_ehlo_response = None
        self.last_helo_response = None
        await self._ehlo_or_helo_if_needed()
        return response

    # --- Authentication -------------------------------------------------------------------

    async def login(
        self, username: str | bytes, password: str | bytes, /, *, timeout: Timeout = _DEFAULT
    ) -> SMTPResponse:
        """Log in with the best mechanism both sides support (CRAM-MD5, PLAIN, LOGIN),
        trying the next one if the server refuses."""
        await self._locked(self._ehlo_or_helo_if_needed)
        if not self.supports_extension("auth"):
            hint = "" if self.is_tls else " Try connecting via TLS (or STARTTLS)."
            raise SMTPException("The SMTP AUTH extension is not supported by this server." + hint)
        methods = self.supported_auth_methods
        if not methods:
            raise SMTPException("No suitable authentication method found.")
        error: SMTPAuthenticationError | None = None
        for method in methods:
            function = getattr(self, "auth_" + method.replace("-", ""))
            try:
                response: SMTPResponse = await function(username, password, timeout=timeout)
            except SMTPAuthenticationError as exc:
                error = exc
                continue
            return response
        assert error is not None
        raise error

    def _check_cleartext_allowed(self, mechanism: str) -> None:
        if self.allow_insecure_auth or self.is_tls:
            return
        peer = self.transport.get_extra_info("peername") if self.transport else None
        if self.socket_path is not None or _is_loopback(peer):
            return
        raise SMTPException(
            f"Refusing AUTH {mechanism} over an unencrypted connection: the password would "
            "be sent in clear. Use TLS (use_tls=True or STARTTLS), or pass "
            "allow_insecure_auth=True."
        )

    async def auth_plain(
        self, username: str | bytes, password: str | bytes, /, *, timeout: Timeout = _DEFAULT
    ) -> SMTPResponse:
        self._check_cleartext_allowed("PLAIN")
        initial = sasl.plain_response(username, password)
        return await self._locked(lambda: self._sasl("PLAIN", initial, None, timeout))

    async def auth_login(
        self, username: str | bytes, password: str | bytes, /, *, timeout: Timeout = _DEFAULT
    ) -> SMTPResponse:
        self._check_cleartext_allowed("LOGIN")
        initial = sasl.b64(username.encode() if isinstance(username, str) else username)

        def respond(challenge: str) -> str:
            return sasl.login_response(challenge, username, password)

        return await self._locked(lambda: self._sasl("LOGIN", initial, respond, timeout))

    async def auth_crammd5(
        self, username: str | bytes, password: str | bytes, /, *, timeout: Timeout = _DEFAULT
    ) -> SMTPResponse:
        def respond(challenge: str) -> str:
            return sasl.cram_md5_response(challenge, username, password)

        return await self._locked(lambda: self._sasl("CRAM-MD5", None, respond, timeout))

    async def auth_xoauth2(
        self, username: str | bytes, access_token: str | bytes, /, *, timeout: Timeout = _DEFAULT
    ) -> SMTPResponse:
        self._check_cleartext_allowed("XOAUTH2")
        initial = sasl.xoauth2_response(username, access_token)

        def respond(challenge: str) -> str:
            return ""  # the challenge is an error report; an empty line gets the final reply

        return await self._locked(lambda: self._sasl("XOAUTH2", initial, respond, timeout))

    async def _sasl(
        self,
        mechanism: str,
        initial: str | None,
        respond: Callable[[str], str] | None,
        timeout: Timeout,
    ) -> SMTPResponse:
        """One SASL exchange: AUTH, then a response to each 334 challenge (at most 5)."""
        await self._ehlo_or_helo_if_needed()
        response = await self._command(Command.auth(mechanism, initial), timeout)
        rounds = 0
        while response.code == 334:
            rounds += 1
            answer = "*"
            if respond is not None and rounds <= 5:
                try:
                    answer = respond(response.message)
                except ValueError:
                    answer = "*"  # a challenge we cannot answer: cancel the exchange
            response = await self._command(Command.auth_response(answer), timeout)
        if response.code != 235:
            raise SMTPAuthenticationError(response.code, response.message)
        return response

    # --- Transactions, step by step -------------------------------------------------------

    async def mail(
        self,
        sender: str,
        /,
        *,
        options: Iterable[str] | None = None,
        encoding: str = "ascii",
        timeout: Timeout = _DEFAULT,
    ) -> SMTPResponse:
        """MAIL FROM. Raises SMTPSenderRefused unless the reply is 250."""
        params = _options(options)
        smtputf8 = "SMTPUTF8" in (k.upper() for k in params) or _is_utf8(encoding)
        command = Command.mail(sender, params, smtputf8=smtputf8)

        async def run() -> SMTPResponse:
            await self._ehlo_or_helo_if_needed()
            response = await self._command(command, timeout)
            if response.code != 250:
                raise SMTPSenderRefused(response.code, response.message, sender)
            return response

        return await self._locked(run)

    async def rcpt(
        self,
        recipient: str,
        /,
        *,
        options: Iterable[str] | None = None,
        encoding: str = "ascii",
        timeout: Timeout = _DEFAULT,
    ) -> SMTPResponse:
        """RCPT TO. Raises SMTPRecipientRefused unless the reply is 250 or 251."""
        params = _options(options)
        conn = self._conn
        smtputf8 = _is_utf8(encoding) or bool(
            conn and conn.phase is Phase.MAIL and conn.supports("SMTPUTF8")
        )
        command = Command.rcpt(recipient, params, smtputf8=smtputf8)

        async def run() -> SMTPResponse:
            response = await self._command(command, timeout)
            if response.code not in (250, 251):
                raise SMTPRecipientRefused(response.code, response.message, recipient)
            return response

        return await self._locked(run)

    async def data(self, message: str | bytes, /, *, timeout: Timeout = _DEFAULT) -> SMTPResponse:
        """DATA and the message content (after mail() and rcpt()). Raises SMTPDataError
        if the server refuses either. For LMTP, returns the first recipient's reply and
        raises SMTPDataError with the first refusal."""
        body = message.encode("utf-8") if isinstance(message, str) else bytes(message)

        async def run() -> SMTPResponse:
            response = await self._command(Command.simple("DATA"), timeout)
            if response.code != 354:
                raise SMTPDataError(response.code, response.message)
            finals = await (await self._start_content(body, timeout, hand_over=False))
            for final in finals:
                if final.code != 250:
                    raise SMTPDataError(final.code, str(final.reply.text))
            return _response(finals[0].reply)

        return await self._locked(run)

    async def bdat(self, message: str | bytes, /, *, timeout: Timeout = _DEFAULT) -> SMTPResponse:
        """The message content as BDAT chunks (after mail() and rcpt()), for servers
        that offer CHUNKING. Raises SMTPDataError if the server refuses a chunk."""
        body = message.encode("utf-8") if isinstance(message, str) else bytes(message)

        async def run() -> SMTPResponse:
            chunks, final = await self._send_chunks(body, timeout)
            finals = await final if final is not None else []
            for waiter in chunks:
                await waiter
            refusal = _first_refusal(chunks)
            if refusal is None:
                refusal = next((r for r in finals if r.code != 250), None)
            if refusal is not None:
                await self._abandon(self._session()[0], timeout)
                raise SMTPDataError(refusal.code, str(refusal.reply.text))
            return _response(finals[0].reply)

        return await self._locked(run)

    # --- Whole messages -----------------------------------------------------------------

    async def sendmail(
        self,
        sender: str,
        recipients: str | Sequence[str],
        message: str | bytes,
        /,
        *,
        mail_options: Iterable[str] | None = None,
        rcpt_options: Iterable[str] | None = None,
        ret: Literal["FULL", "HDRS"] | None = None,
        envid: str | None = None,
        notify: Iterable[str] | None = None,
        orcpt: bool | Mapping[str, str] = False,
        use_bdat: bool | None = None,
        timeout: Timeout = _DEFAULT,
    ) -> SendResult:
        """Send one message: MAIL, RCPT for each recipient, then DATA (or BDAT).

        Returns ``(refused, message)`` like aiosmtplib (a ``SendResult``). Raises
        SMTPSenderRefused, SMTPRecipientsRefused (every recipient refused) or SMTPDataError,
        after resetting the session so the connection can send the next message.

        The extensions the message needs are declared for you: SIZE, SMTPUTF8 for UTF-8
        addresses (SMTPNotSupported if the server lacks it: addresses are never
        downgraded), BODY=8BITMIME for 8-bit content. DSN: ``ret`` ("FULL"/"HDRS"),
        ``envid`` (xtext-encoded for you), ``notify`` (e.g. ``["SUCCESS", "FAILURE"]`` or
        ``["NEVER"]``) and ``orcpt`` (True: each recipient as its own original recipient;
        or a mapping recipient -> original address); SMTPNotSupported without DSN.
        ``use_bdat`` says whether this message goes by BDAT when the server offers
        CHUNKING (None: the client's ``use_bdat``, or the message is at least
        ``bdat_threshold`` octets). ``str`` messages are encoded as UTF-8; pass bytes
        for big messages (the content is then encoded and written a piece at a time).
        """
        recipient_list = [recipients] if isinstance(recipients, str) else list(recipients)
        if not recipient_list:
            raise ValueError("sendmail needs at least one recipient")
        body = message.encode("utf-8") if isinstance(message, str) else message
        if not isinstance(body, bytes):
            body = bytes(body)
        envelope = _Envelope(
            sender,
            recipient_list,
            _options(mail_options) if mail_options else {},
            _options(rcpt_options) if rcpt_options else {},
            _dsn_notify(notify) if notify is not None else None,
            ret,
            envid,
            orcpt,
        )
        if ret is not None or envid is not None or orcpt:
            envelope.check_syntax()  # refuse bad DSN arguments before any I/O
        return await self._transaction(envelope, body, use_bdat, timeout)

    async def send_message(
        self,
        message: email.message.Message,
        /,
        *,
        sender: str | None = None,
        recipients: str | Sequence[str] | None = None,
        mail_options: Iterable[str] | None = None,
        rcpt_options: Iterable[str] | None = None,
        ret: Literal["FULL", "HDRS"] | None = None,
        envid: str | None = None,
        notify: Iterable[str] | None = None,
        orcpt: bool | Mapping[str, str] = False,
        use_bdat: bool | None = None,
        timeout: Timeout = _DEFAULT,
    ) -> SendResult:
        """Send an ``email.message.EmailMessage`` (or ``Message``).

        Sender and recipients default to the headers (Sender/From; To, Cc, Bcc; the
        Resent-* ones for a resent message); Bcc headers are not transmitted. The message
        is serialized with CRLF line ends, 8-bit if the server offers 8BITMIME (7-bit
        transfer encodings otherwise), with UTF-8 headers when addresses need SMTPUTF8.
        Other arguments as for ``sendmail``."""
        if sender is None:
            sender = extract_sender(message)
        if sender is None:
            raise ValueError("No From header provided in message")
        if isinstance(recipients, str):
            recipient_list = [recipients]
        elif recipients is None:
            recipient_list = extract_recipients(message)
        else:
            recipient_list = list(recipients)
        if not recipient_list:
            raise ValueError("No recipient headers provided in message")
        envelope = _Envelope(
            sender,
            recipient_list,
            _options(mail_options),
            _options(rcpt_options),
            _dsn_notify(notify),
            ret,
            envid,
            orcpt,
        )
        envelope.check_syntax()
        await self._locked(self._ehlo_or_helo_if_needed)
        conn, _ = self._session()
        utf8 = envelope.needs_smtputf8
        if utf8 and not conn.supports("SMTPUTF8"):
            raise SMTPNotSupported(
                "An address containing non-ASCII characters was provided, but "
                "SMTPUTF8 is not supported by this server"
            )
        cte_type = "8bit" if conn.supports("8BITMIME") else "7bit"
        body = flatten_message(message, utf8=utf8, cte_type=cte_type)
        return await self._transaction(envelope, body, use_bdat, timeout)

    def sendmail_sync(self, *args: Any, **kwargs: Any) -> SendResult:
        """``sendmail`` in a new event loop: connect, send, QUIT."""

        async def run() -> SendResult:
            async with self:
                return await self.sendmail(*args, **kwargs)

        return asyncio.run(run())

    def send_message_sync(self, *args: Any, **kwargs: Any) -> SendResult:
        """``send_message`` in a new event loop: connect, send, QUIT."""

        async def run() -> SendResult:
            async with self:
                return await self.send_message(*args, **kwargs)

        return asyncio.run(run())

    # --- The transaction engine -------------------------------------------------------

    async def _transaction(
        self, envelope: _Envelope, body: bytes, use_bdat: bool | None, timeout: Timeout
    ) -> SendResult:
        """Run one mail transaction, greeting the server first if needed.

        With PIPELINING, MAIL, every RCPT and DATA go in one write and their replies are
        matched in order (RFC 2920); the content follows the 354. Message content may
        start a pipelining group (RFC 2920 §3.1), so when several tasks share the client,
        the next transaction's envelope is written together with this message's content,
        and the session is handed over before this message's final reply arrives: one
        write and one round trip per message.

        Content is only sent once a recipient has been accepted, so a server that
        mishandles a refused BDAT chunk can never read message content as commands. A
        transaction interrupted half-way (cancelled, or failing unexpectedly) closes the
        connection: the server's state is unknown, and the next command could otherwise be
        read as message content.
        """
        if self.is_ehlo_or_helo_needed:
            await self._locked(self._ehlo_or_helo_if_needed)
        conn, _ = self._session()
        chunking = conn.supports("CHUNKING") and self._wants_bdat(use_bdat, len(body))
        commands = envelope.commands(conn, body)
        if not chunking:
            commands.append(_DATA)
        turn = _Turn(commands, timeout)
        if conn.pipelining:
            self._turns.append(turn)  # the transaction ahead of us may send it for us
        lock = self._lock
        held = False  # the session is ours: nobody else may write until we release it
        settled = False  # True once only our final reply is outstanding
        try:
            if not lock.try_acquire():
                # Wait for the session. The transaction ahead may send our envelope with
                # its content and hand the session straight to us: we then wake up once,
                # when our replies are in.
                turn.waiter = lock.enqueue()
                try:
                    await turn.waiter
                except BaseException:
                    if turn.handed or (turn.waiter.done() and not turn.waiter.cancelled()):
                        held = True  # the session is ours already: pass it on below
                    else:
                        lock.forget(turn.waiter)
                    raise
            held = True
            if turn.replies is None:
                self._send_envelope(turn)
            assert turn.replies is not None
            responses: list[Response] = await turn.replies
            refused, accepted, refusal = self._envelope_outcome(turn, envelope, responses, chunking)
            if refusal is not None:  # reset the session, then report the refusal
                if refusal.code == 354:  # every RCPT failed, yet DATA was accepted
                    await (await self._start_content(b"", timeout, hand_over=False))
                else:
                    await self._abandon(conn, timeout)
                settled = True
                raise refusal.error
            turn.content_started = True
            chunks: list[asyncio.Future[list[Response]]] = []
            if chunking:
                chunks, last = await self._send_chunks(body, timeout)
                if last is None:  # stopped at a refused chunk
                    stopped = _first_refusal(chunks)
                    assert stopped is not None
                    await self._abandon(conn, timeout)
                    settled = True
                    raise SMTPDataError(stopped.code, str(stopped.reply.text))
                final = last
            elif len(body) <= CHUNK_SIZE:
                final = self._small_content(body, timeout)
            else:
                final = await self._start_content(body, timeout)
            settled = True
            if conn.pipelining:  # the next transaction may go while we wait for our reply
                held = False
                self._release_session()
            finals = await final
            for waiter in chunks:
                await waiter
            failed = _first_refusal(chunks)
            if failed is not None:  # the LAST chunk ended the (failed) transaction
                raise SMTPDataError(failed.code, str(failed.reply.text))
            return self._result(refused, accepted, finals)
        except BaseException as exc:
            if turn.replies is not None and not settled:
                self.close()
            if isinstance(exc, SMTPServerDisconnected) and not turn.content_started:
                # Nothing of the message went out: a Pool may retry it elsewhere.
                exc.message_not_sent = True  # type: ignore[attr-defined]
            raise
        finally:
            if held:
                self._release_session()
            if turn.replies is None and turn in self._turns:
                self._turns.remove(turn)

    def _envelope_outcome(
        self, turn: _Turn, envelope: _Envelope, responses: list[Response], chunking: bool
    ) -> tuple[dict[str, SMTPResponse], list[str], _Refusal | None]:
        """What the replies to the envelope say: the refused and accepted recipients, and
        the refusal that stops the message (sender refused, every recipient refused,
        DATA refused), if any."""
        if turn.reset:
            responses = responses[1:]
        mail_reply = responses[0]
        if mail_reply.reply.code != 250:
            refused_sender = SMTPSenderRefused(
                mail_reply.code, str(mail_reply.reply.text), envelope.sender
            )
            return {}, [], _Refusal(refused_sender)
        refused: dict[str, SMTPResponse] = {}
        accepted: list[str] = []
        for recipient, response in zip(envelope.recipients, responses[1:], strict=False):
            if response.reply.code in (250, 251):
                accepted.append(recipient)
            else:
                refused[recipient] = _response(response.reply)
        if not chunking:
            data_code = responses[-1].reply.code
            if data_code != 354:
                if not accepted:
                    return refused, accepted, _Refusal(_all_refused(refused))
                reply = responses[-1].reply
                return refused, accepted, _Refusal(SMTPDataError(data_code, str(reply.text)))
            if not accepted:
                return refused, accepted, _Refusal(_all_refused(refused), code=354)
        elif not accepted:
            return refused, accepted, _Refusal(_all_refused(refused))
        return refused, accepted, None

    def _wants_bdat(self, use_bdat: bool | None, size: int) -> bool:
        """BDAT if asked for this message; if not said, when the client was made with
        ``use_bdat=True`` or the message is at least ``bdat_threshold`` octets."""
        if use_bdat is not None:
            return use_bdat
        threshold = self.bdat_threshold
        return self.use_bdat or (threshold is not None and size >= threshold)

    def _send_envelope(self, turn: _Turn) -> None:
        """Send a transaction's envelope (nobody sent it for us): in one write when the
        server pipelines, else one command at a time (in a task: ``turn.replies``)."""
        if turn in self._turns:
            self._turns.remove(turn)
        conn, protocol = self._session()
        if conn.pipelining:
            protocol.write(self._envelope_bytes(turn))
        else:
            commands = self._reset_first(conn, turn)
            loop = asyncio.get_running_loop()
            turn.replies = loop.create_task(self._exchange(commands, turn.timeout))

    def _reset_first(self, conn: ClientConnection, turn: _Turn) -> list[Command]:
        if conn.needs_reset:  # a refused transaction the server may still hold open
            turn.reset = True
            return [_RSET, *turn.commands]
        return turn.commands

    def _envelope_bytes(self, turn: _Turn) -> bytes:
        """Encode ``turn``'s envelope and wait for its replies; raises before recording
        anything if the session refuses it."""
        conn, protocol = self._session()
        commands = self._reset_first(conn, turn)
        data = self._encode(conn, commands)
        turn.replies = protocol.expect(len(commands), self._timeout(turn.timeout))
        return data

    def _hand_over(self, data: bytes) -> bytes:
        """``data`` (the end of a message) followed by the next queued envelope, if any:
        the next transaction starts in the same write, and the session goes to it when
        released (``_release_session``)."""
        if not self._turns:
            return data
        turn = self._turns[0]
        try:
            envelope = self._envelope_bytes(turn)
        except (SMTPException, ValueError):
            return data  # its owner will send it and meet the error itself
        self._turns.popleft()
        self._handed = turn
        return data + envelope

    def _release_session(self) -> None:
        """Let the next exchange go: the transaction whose envelope we sent, if any (its
        commands are on the wire: nothing else may be written before its content), else
        whoever waits first."""
        turn, self._handed = self._handed, None
        if turn is not None and turn.waiter is not None and not turn.waiter.done():
            turn.handed = True
            self._lock.hand_to(turn.waiter, turn.replies)
        else:
            self._lock.release()

    def _result(
        self, refused: dict[str, SMTPResponse], accepted: list[str], finals: list[Response]
    ) -> SendResult:
        """The outcome from the final reply (SMTP) or the per-recipient replies (LMTP)."""
        if not self.lmtp:
            final = _response(finals[-1].reply)
            if final.code != 250:
                raise SMTPDataError(final.code, final.message)
            return SendResult(refused, final.message, dict.fromkeys(accepted, final))
        delivered: dict[str, SMTPResponse] = {}
        for recipient, reply in zip(accepted, finals, strict=False):
            response = _response(reply.reply)
            if response.code == 250:
                delivered[recipient] = response
            else:
                refused[recipient] = response
        if not delivered:
            raise _all_refused(refused)
        first = next(iter(delivered.values()))
        return SendResult(refused, first.message, delivered)

    async def _abandon(self, conn: ClientConnection, timeout: Timeout) -> None:
        """After a refusal: RSET if the server may still hold the envelope, ignoring a
        failure of the RSET itself (the refusal is what the caller needs to see)."""
        if not conn.needs_reset or not self.is_connected:
            return
        try:
            await self._command(_RSET, timeout)
        except SMTPException:
            pass

    def _deadline(self) -> float | None:
        """When the data phase must be over (``data_timeout`` from now)."""
        if self.data_timeout is None:
            return None
        return asyncio.get_running_loop().time() + self.data_timeout

    @staticmethod
    def _until(deadline: float | None, timeout: float | None) -> float | None:
        """The time left before ``deadline``, capped at ``timeout``."""
        if deadline is None:
            return timeout
        left = max(0.0, deadline - asyncio.get_running_loop().time())
        return left if timeout is None else min(left, timeout)

    def _small_content(self, body: bytes, timeout: Timeout) -> asyncio.Future[list[Response]]:
        """``_start_content`` for a body of at most CHUNK_SIZE: one write, no waiting."""
        conn, protocol = self._session()
        replies = max(1, len(conn.accepted_recipients)) if self.lmtp else 1
        data = conn.send_data(body) + conn.end_data()
        seconds = self.data_timeout if self.data_timeout is not None else self._timeout(timeout)
        final = protocol.expect(replies, seconds)
        protocol.write(self._hand_over(data) if conn.pipelining else data)
        return final

    async def _start_content(
        self, body: bytes, timeout: Timeout, *, hand_over: bool = True
    ) -> asyncio.Future[list[Response]]:
        """Write the content after a 354 and its end; return the future of the final
        reply (one per accepted recipient for LMTP).

        The content is encoded and written CHUNK_SIZE octets at a time, waiting whenever
        the transport's buffer is full, so memory stays bounded whatever the size. Each
        wait is bounded by ``timeout``; the whole, up to the final reply, by
        ``data_timeout``."""
        conn, protocol = self._session()
        seconds = self._timeout(timeout)
        deadline = self._deadline()
        replies = max(1, len(conn.accepted_recipients)) if self.lmtp else 1
        if len(body) <= CHUNK_SIZE:  # the common case: one write
            data = conn.send_data(body) + conn.end_data()
        else:
            for start in range(0, len(body), CHUNK_SIZE):
                protocol.write(conn.send_data(body[start : start + CHUNK_SIZE]))
                await protocol.drain(self._until(deadline, seconds))
            data = conn.end_data()
        final = protocol.expect(replies, self._until(deadline, None if deadline else seconds))
        protocol.write(self._hand_over(data) if hand_over and conn.pipelining else data)
        return final

    async def _send_chunks(
        self, body: bytes, timeout: Timeout
    ) -> tuple[list[asyncio.Future[list[Response]]], asyncio.Future[list[Response]] | None]:
        """Write the content as BDAT chunks (RFC 3030), pipelined when the server allows.

        Returns the futures of the replies to the non-LAST chunks and of the reply to
        the LAST one (one per accepted recipient for LMTP), or None for the latter if
        sending stopped at a refused chunk (the server discards the rest)."""
        conn, protocol = self._session()
        seconds = self._timeout(timeout)
        deadline = self._deadline()
        replies = max(1, len(conn.accepted_recipients)) if self.lmtp else 1
        reply_timeout = self._until(deadline, None if deadline else seconds)
        chunks: list[asyncio.Future[list[Response]]] = []
        starts = range(0, max(len(body), 1), CHUNK_SIZE)
        for start in starts:
            if chunks and not conn.pipelining:
                await asyncio.wait([chunks[-1]])
            if _first_refusal(chunks) is not None:
                return chunks, None  # the server discards the rest: stop sending it
            piece = body[start : start + CHUNK_SIZE]  # one slice at a time: bounded memory
            if start == starts[-1]:
                data = conn.send_bdat(piece, last=True)
                final = protocol.expect(replies, reply_timeout)
                protocol.write(self._hand_over(data) if conn.pipelining else data)
                return chunks, final
            data = conn.send_bdat(piece)
            if data:  # empty when only a CR is held back for the next piece
                chunks.append(protocol.expect(1, reply_timeout))
                protocol.write(data)
                await protocol.drain(self._until(deadline, seconds))
        raise AssertionError("unreachable")  # pragma: no cover


class _Turn:
    """A transaction's envelope (MAIL, RCPT..., DATA) waiting to be written, and the
    future of its replies once it has been."""

    __slots__ = ("commands", "content_started", "handed", "replies", "reset", "timeout", "waiter")

    def __init__(self, commands: list[Command], timeout: Timeout) -> None:
        self.commands = commands
        self.timeout = timeout
        self.replies: Awaitable[list[Response]] | None = None
        self.reset = False  # an RSET went first: its reply is dropped
        self.content_started = False  # any byte of the message content written
        self.waiter: asyncio.Future[None] | None = None  # our place in the session queue
        self.handed = False  # the session was handed to us by the transaction ahead


_DATA = Command.simple("DATA")
_RSET = Command.simple("RSET")


class _Refusal:
    """A refusal that stops a message, to raise once the session has been reset.
    ``code`` 354: DATA was accepted although no recipient was, so a lone "." ends it."""

    __slots__ = ("code", "error")

    def __init__(self, error: SMTPException, code: int = 0) -> None:
        self.error = error
        self.code = code


class _Mutex:
    """A FIFO lock with a synchronous fast path (``try_acquire``): taken once per
    message, so it should cost nothing when free. Ownership passes to the next waiter
    directly on release."""

    __slots__ = ("_held", "_waiters")

    def __init__(self) -> None:
        self._held = False
        self._waiters: deque[asyncio.Future[None]] = deque()

    def locked(self) -> bool:
        return self._held

    def try_acquire(self) -> bool:
        if self._held or self._waiters:
            return False
        self._held = True
        return True

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # ownership was handed to us as we were cancelled
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def enqueue(self) -> asyncio.Future[None]:
        """A place in the queue: the lock is the caller's when the future is done."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    def forget(self, waiter: asyncio.Future[None]) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # still held: now by that waiter
                return
        self._held = False

    def hand_to(self, waiter: asyncio.Future[None], when: Awaitable[Any] | None) -> None:
        """Pass the lock to ``waiter`` (ahead of any other), waking it once ``when`` is
        done: it has nothing to do before then."""
        self.forget(waiter)

        def wake(_: object = None) -> None:
            if not waiter.done():
                waiter.set_result(None)

        if isinstance(when, asyncio.Future) and not when.done():
            when.add_done_callback(wake)
        else:
            wake()


def _first_refusal(waiters: Sequence[asyncio.Future[list[Response]]]) -> Response | None:
    """The first reply received so far that is not 250, if any."""
    for waiter in waiters:
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            response = waiter.result()[0]
            if response.code != 250:
                return response
    return None


def _is_utf8(encoding: str) -> bool:
    return encoding.lower().replace("-", "").replace("_", "") == "utf8"


def _options(options: Iterable[str] | None) -> dict[str, str | None]:
    """aiosmtplib-style ``["SIZE=1000", "BODY=8BITMIME"]`` as parameters."""
    params: dict[str, str | None] = {}
    if options is None:
        return params
    if isinstance(options, str):
        raise ValueError("options must be a list of strings, not a single string")
    for option in options:
        key, value = parse_option(option)
        if key.upper() in (k.upper() for k in params):
            raise ValueError(f"ESMTP option {key} given twice")
        params[key] = value
    return params


def _dsn_notify(notify: Iterable[str] | None) -> str | None:
    if notify is None:
        return None
    values = [notify] if isinstance(notify, str) else [str(n).upper() for n in notify]
    values = [v.upper() for v in values]
    if not values or any(v not in ("SUCCESS", "FAILURE", "DELAY", "NEVER") for v in values):
        raise ValueError("notify must be NEVER, or some of SUCCESS, FAILURE and DELAY")
    if "NEVER" in values and len(values) > 1:
        raise ValueError("notify=NEVER cannot be combined with other values")
    return ",".join(values)


def _all_refused(refused: Mapping[str, SMTPResponse]) -> SMTPRecipientsRefused:
    return SMTPRecipientsRefused(
        [SMTPRecipientRefused(r.code, r.message, rcpt) for rcpt, r in refused.items()]
    )


class _Envelope:
    """A message's sender, recipients and ESMTP parameters, turned into commands once
    the server's extensions are known."""

    def __init__(
        self,
        sender: str,
        recipients: list[str],
        mail_params: dict[str, str | None],
        rcpt_params: dict[str, str | None],
        notify: str | None,
        ret: str | None,
        envid: str | None,
        orcpt: bool | Mapping[str, str],
    ) -> None:
        self.sender = sender
        self.recipients = recipients
        self.mail_params = mail_params
        self.rcpt_params = rcpt_params
        self.notify = notify
        self.ret = ret
        self.envid = envid
        self.orcpt = orcpt
        explicit = any(k.upper() == "SMTPUTF8" for k in mail_params)
        self.needs_smtputf8 = explicit or not (
            sender.isascii() and all(r.isascii() for r in recipients)
        )

    def check_syntax(self) -> None:
        """Raise ValueError for anything that could not be sent whatever the server."""
        if self.ret is not None and self.ret.upper() not in ("FULL", "HDRS"):
            raise ValueError("ret must be 'FULL' or 'HDRS'")
        if self.envid is not None and not isinstance(self.envid, str):
            raise ValueError("envid must be a str")
        if isinstance(self.orcpt, Mapping):
            unknown = set(self.orcpt) - set(self.recipients)
            if unknown:
                raise ValueError(f"orcpt names addresses that are not recipients: {unknown}")

    def commands(self, conn: ClientConnection, body: bytes) -> list[Command]:
        """MAIL and RCPT commands for this server and message, with SIZE, SMTPUTF8 and
        BODY=8BITMIME added as needed. Whether the server offers what the parameters
        need is checked when they are sent (``ClientConnection.send_all``)."""
        if self.needs_smtputf8 and not conn.supports("SMTPUTF8"):
            raise SMTPNotSupported(
                "An address containing non-ASCII characters was provided, but "
                "SMTPUTF8 is not supported by this server"
            )
        automatic: dict[str, str | None] = {}
        keys = {k.upper() for k in self.mail_params}
        if "SIZE" not in keys and conn.supports("SIZE"):
            automatic["SIZE"] = str(wire_size(body))
        if "BODY" not in keys and not body.isascii() and conn.supports("8BITMIME"):
            automatic["BODY"] = "8BITMIME"
        return self._build(automatic)

    def _build(self, automatic: dict[str, str | None]) -> list[Command]:
        utf8 = self.needs_smtputf8
        mail_params = {**automatic, **self.mail_params}
        if utf8 and not any(k.upper() == "SMTPUTF8" for k in mail_params):
            mail_params["SMTPUTF8"] = None
        if self.ret is not None:
            mail_params["RET"] = self.ret.upper()
        if self.envid is not None:
            mail_params["ENVID"] = _codec.xtext_encode(self.envid)
        commands = [Command.mail(self.sender, mail_params, smtputf8=utf8)]
        per_recipient = self.notify is not None or bool(self.orcpt)
        for recipient in self.recipients:
            params = self.rcpt_params
            if per_recipient:
                params = dict(params)
                if self.notify is not None:
                    params["NOTIFY"] = self.notify
                if self.orcpt:
                    orcpt = self.orcpt
                    original = orcpt.get(recipient) if isinstance(orcpt, Mapping) else None
                    address = original or recipient
                    kind = "utf-8" if not address.isascii() else "rfc822"
                    params["ORCPT"] = f"{kind};{_codec.xtext_encode(address)}"
            commands.append(Command.rcpt(recipient, params, smtputf8=utf8))
        return commands


# --- One-call sending -------------------------------------------------------------------


async def send(
    message: email.message.Message | str | bytes,
    /,
    *,
    sender: str | None = None,
    recipients: str | Sequence[str] | None = None,
    mail_options: Sequence[str] | None = None,
    rcpt_options: Sequence[str] | None = None,
    hostname: str | None = "localhost",
    port: int | None = None,
    username: str | bytes | None = None,
    password: str | bytes | None = None,
    oauth_token_generator: SMTPTokenGenerator | None = None,
    local_hostname: str | None = None,
    source_address: tuple[str, int] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    use_tls: bool = False,
    start_tls: bool | None = None,
    validate_certs: bool = True,
    client_cert: str | None = None,
    client_key: str | None = None,
    tls_context: ssl.SSLContext | None = None,
    cert_bundle: str | None = None,
    socket_path: SocketPathType | None = None,
    sock: socket.socket | None = None,
    data_timeout: float | None = DEFAULT_DATA_TIMEOUT,
    lmtp: bool = False,
    use_bdat: bool = False,
    allow_insecure_auth: bool = False,
) -> SendResult:
    """Connect, send one message, QUIT: aiosmtplib's ``send()``.

    An ``email.message.Message`` is sent with ``send_message`` (sender and recipients
    default to its headers); ``str``/``bytes`` need ``sender`` and ``recipients``."""
    if not isinstance(message, email.message.Message) and (sender is None or not recipients):
        raise ValueError("sender and recipients are required to send a raw str or bytes message")
    client = Client(
        hostname,
        port,
        username=username,
        password=password,
        oauth_token_generator=oauth_token_generator,
        local_hostname=local_hostname,
        source_address=source_address,
        timeout=timeout,
        data_timeout=data_timeout,
        use_tls=use_tls,
        start_tls=start_tls,
        validate_certs=validate_certs,
        client_cert=client_cert,
        client_key=client_key,
        tls_context=tls_context,
        cert_bundle=cert_bundle,
        socket_path=socket_path,
        sock=sock,
        lmtp=lmtp,
        use_bdat=use_bdat,
        allow_insecure_auth=allow_insecure_auth,
    )
    async with client:
        if isinstance(message, email.message.Message):
            return await client.send_message(
                message,
                sender=sender,
                recipients=recipients,
                mail_options=mail_options,
                rcpt_options=rcpt_options,
            )
        assert sender is not None and recipients is not None
        return await client.sendmail(
            sender, recipients, message, mail_options=mail_options, rcpt_options=rcpt_options
        )


# --- The pool ------------------------------------------------------------------------------


class _Slot:
    """One pooled connection: its client (connected once ``ready`` is done), how many
    messages are using it, and which of the pool's lists it is filed in."""

    __slots__ = ("client", "ready", "reused", "timer", "users", "where")

    def __init__(self, client: Client, ready: asyncio.Future[None]) -> None:
        self.client = client
        self.ready = ready
        self.users = 0
        self.reused = False  # it has carried a message before
        self.timer: asyncio.TimerHandle | None = None  # idle timeout
        self.where: list[_Slot] | None = None

    @property
    def usable(self) -> bool:
        """Opening, or open and healthy."""
        ready = self.ready
        if not ready.done():
            return True
        protocol = self.client._protocol
        return ready.exception() is None and protocol is not None and protocol.error is None

    @property
    def pipelines(self) -> bool:
        conn = self.client.connection
        return conn is not None and conn.pipelining


class Pool:
    """Up to ``size`` connections to one server, shared by any number of tasks.

    ::

        async with ferrosmtp.Pool("smarthost", 587, size=8, username="u", password="p") as pool:
            await asyncio.gather(*(pool.send_message(m) for m in messages))

    Connections open when first needed and are reused for the next messages (the
    session is reset after a refused message; a completed one needs no RSET). When the
    server offers PIPELINING, a connection carries up to ``pipeline_depth`` messages at
    once (default 2: one message's content and the next one's envelope go out in one
    write, so a connection moves a message per round trip instead of one per two), and
    the pool fills connections to that depth before opening more. ``pipeline_depth=1``
    gives each message a connection of its own.

    A connection that fails is dropped and replaced on the next use; if the server had
    closed a reused connection and nothing of the message had gone out yet, the message
    is retried once on a fresh connection. Connections idle for ``idle_timeout`` seconds
    are closed with QUIT. ``close()`` (or leaving ``async with``) refuses new messages,
    waits for those in flight and closes every connection.

    Other keyword arguments are those of ``Client``.
    """

    def __init__(
        self,
        hostname: str | None = None,
        port: int | None = None,
        *,
        size: int = 8,
        idle_timeout: float | None = 30.0,
        pipeline_depth: int = 2,
        **client_options: Any,
    ) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one connection")
        if pipeline_depth < 1:
            raise ValueError("pipeline_depth must be at least 1")
        Client(hostname, port, **client_options)  # refuse bad options now, not at first use
        self.hostname = hostname
        self.port = port
        self.size = size
        self.idle_timeout = idle_timeout
        self.pipeline_depth = pipeline_depth
        self._options = client_options
        self._idle: list[_Slot] = []  # connected, unused: the most recently used last
        self._open: list[_Slot] = []  # in use (or opening), with room for another message
        self._count = 0  # connections open or opening
        self._waiters: deque[asyncio.Future[None]] = deque()  # tasks waiting for room
        self._busy = 0
        self._all_done = asyncio.Event()
        self._all_done.set()
        self._closed = False
        self._retiring: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def connections(self) -> int:
        """Connections open (or opening)."""
        return self._count

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    async def connect(self) -> None:
        """Open one connection now (connect, TLS, login), so that an unreachable server or
        refused credentials show up before the first message. It is then reused."""
        await self._run(_nothing)

    async def sendmail(
        self,
        sender: str,
        recipients: str | Sequence[str],
        message: str | bytes,
        /,
        **options: Any,
    ) -> SendResult:
        """``Client.sendmail`` on a pooled connection."""
        return await self._run(lambda c: c.sendmail(sender, recipients, message, **options))

    async def send_message(self, message: email.message.Message, /, **options: Any) -> SendResult:
        """``Client.send_message`` on a pooled connection."""
        return await self._run(lambda c: c.send_message(message, **options))

    async def _run(self, operation: Callable[[Client], Awaitable[_T]]) -> _T:
        if self._closed:
            raise SMTPException("The pool is closed")
        self._busy += 1
        self._all_done.clear()
        try:
            for attempt in range(2):
                slot = self._acquire_now() or await self._acquire()
                try:
                    return await operation(slot.client)
                except SMTPServerDisconnected as exc:
                    # A reused connection found dead before any content went out: the
                    # server dropped it while idle. Safe to send once more, elsewhere.
                    retry = slot.reused and getattr(exc, "message_not_sent", False)
                    if attempt == 0 and retry:
                        continue
                    raise
                finally:
                    self._release(slot)
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            self._busy -= 1
            if self._busy == 0:
                self._all_done.set()

    async def _acquire(self) -> _Slot:
        """A connection with room: an idle one, else one in use that can pipeline another
        message, else a new one (up to ``size``), else wait for room."""
        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                raise SMTPException("The pool is closed")
            slot = self._take(self._idle) or self._take(self._open)
            if slot is None and self._count < self.size:
                slot = _Slot(
                    Client(self.hostname, self.port, **self._options), loop.create_future()
                )
                self._count += 1
                self._use(slot)
                try:
                    await slot.client.connect()
                except BaseException as exc:
                    slot.ready.set_exception(exc)
                    slot.ready.exception()  # retrieved here; sharers get it by awaiting
                    self._release(slot)
                    raise
                slot.ready.set_result(None)
                self._file(slot)  # now we know whether it pipelines
                return slot
            if slot is not None:
                self._use(slot)
                try:
                    await slot.ready  # still opening: share it once it is up
                except BaseException:
                    self._release(slot)
                    raise
                return slot
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._wake()  # pass the wake-up on
                raise

    def _acquire_now(self) -> _Slot | None:
        """``_acquire`` without waiting, when an open connection has room."""
        if self._closed:
            return None
        slot = self._take(self._idle) or self._take(self._open)
        if slot is None or not slot.ready.done():
            return None
        self._use(slot)
        return slot

    def _take(self, slots: list[_Slot]) -> _Slot | None:
        """The most recently filed usable slot of ``slots``; dead ones are dropped."""
        while slots:
            slot = slots[-1]
            if slot.usable:
                return slot
            slots.pop()
            slot.where = None
            self._file(slot)
        return None

    def _use(self, slot: _Slot) -> None:
        slot.users += 1
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None
        self._file(slot)

    def _release(self, slot: _Slot) -> None:
        slot.users -= 1
        if slot.ready.done() and slot.ready.exception() is None:
            slot.reused = True
        self._file(slot)
        self._wake()

    def _file(self, slot: _Slot) -> None:
        """Put ``slot`` where ``_acquire`` looks for room, or retire it: the pool's one
        place for these rules."""
        if slot.where is not None:
            slot.where.remove(slot)
            slot.where = None
        if not slot.usable or (self._closed and slot.users == 0):
            if slot.users == 0:  # dead (or the pool closes): forget it once unused
                self._count -= 1
                self._retire(slot.client)
            return
        if slot.users == 0:
            slot.where = self._idle
            if self.idle_timeout is not None:
                loop = asyncio.get_running_loop()
                slot.timer = loop.call_later(self.idle_timeout, self._expire, slot)
        elif slot.users < self.pipeline_depth and (not slot.ready.done() or slot.pipelines):
            slot.where = self._open
        else:
            return  # full: it is found again when a message releases it
        slot.where.append(slot)

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _expire(self, slot: _Slot) -> None:
        slot.timer = None
        if slot.users == 0 and slot.where is self._idle:
            self._idle.remove(slot)
            slot.where = None
            self._count -= 1
            self._retire(slot.client)

    def _retire(self, client: Client) -> None:
        """Close a connection politely (QUIT) in the background."""
        if not client.is_connected:
            client.close()
            return
        task = asyncio.get_running_loop().create_task(_quit_quietly(client))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        """Refuse new messages, wait for the ones in flight, QUIT every connection."""
        self._closed = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)  # they see the pool closed and raise
        await self._all_done.wait()
        while self._idle:
            slot = self._idle.pop()
            slot.where = None
            if slot.timer is not None:
                slot.timer.cancel()
            self._count -= 1
            self._retire(slot.client)
        if self._retiring:
            await asyncio.wait(set(self._retiring))


async def _nothing(client: Client) -> None:
    return None


async def _quit_quietly(client: Client) -> None:
    try:
        await asyncio.wait_for(client.quit(), timeout=5)
    except (SMTPException, OSError, asyncio.TimeoutError):
        client.close()
