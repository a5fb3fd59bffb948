"""``Client``: one SMTP or LMTP session over asyncio, with aiosmtplib's API.

``Client`` drives the sans-IO ``protocol.client.ClientConnection`` through the asyncio
protocol of ``_client_io``: the connection decides what may be sent and pairs every reply
with its command; this module does the connecting, the timeouts, TLS, AUTH and the policy
(which extensions to use for a message), and runs mail transactions, pipelined and handed
from one to the next when several tasks share the client.
"""

from __future__ import annotations

import asyncio
import email.message
import ipaddress
import os
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar

from ferrosmtp import auth as sasl
from ferrosmtp.client.envelope import Envelope, dsn_notify, params_from_options
from ferrosmtp.client.io import SMTPProtocol, clone_error
from ferrosmtp.client.lock import FifoLock
from ferrosmtp.client.message import extract_recipients, extract_sender, flatten_message
from ferrosmtp.client.options import (
    BDAT_THRESHOLD,
    CHUNK_SIZE,
    DEFAULT,
    DEFAULT_DATA_TIMEOUT,
    DEFAULT_TIMEOUT,
    LMTP_PORT,
    SMTP_PORT,
    SUBMISSION_PORT,
    SUBMISSIONS_PORT,
    WRITE_BUFFER_HIGH,
    Default,
    SMTPTokenGenerator,
    SocketPathType,
    Timeout,
)
from ferrosmtp.client.results import SendResult, SMTPResponse, all_refused, smtp_response
from ferrosmtp.errors import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPNotSupported,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
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
    Response,
    check_hello_name,
)

__all__ = ["Client"]

_T = TypeVar("_T")


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
        self._protocol: SMTPProtocol | None = None
        self._lock = FifoLock()  # one transaction (or command exchange) at a time
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
        hostname: str | Literal[Default.token] | None = DEFAULT,
        port: int | Literal[Default.token] | None = DEFAULT,
        username: str | bytes | Literal[Default.token] | None = DEFAULT,
        password: str | bytes | Literal[Default.token] | None = DEFAULT,
        local_hostname: str | Literal[Default.token] | None = DEFAULT,
        source_address: tuple[str, int] | Literal[Default.token] | None = DEFAULT,
        timeout: Timeout = DEFAULT,
        use_tls: bool | None = None,
        start_tls: bool | Literal[Default.token] | None = DEFAULT,
        validate_certs: bool | None = None,
        client_cert: str | Literal[Default.token] | None = DEFAULT,
        client_key: str | Literal[Default.token] | None = DEFAULT,
        tls_context: ssl.SSLContext | Literal[Default.token] | None = DEFAULT,
        cert_bundle: str | Literal[Default.token] | None = DEFAULT,
        socket_path: SocketPathType | Literal[Default.token] | None = DEFAULT,
        sock: socket.socket | Literal[Default.token] | None = DEFAULT,
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
            if value is not DEFAULT:
                setattr(self, name, value)
        if use_tls is not None:
            self.use_tls = use_tls
        if validate_certs is not None:
            self.validate_certs = validate_certs
        self._validate_config()
        if self.is_connected:
            raise SMTPException("SMTP instance is already connected")
        connect_timeout = self.timeout if timeout is DEFAULT else timeout
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
        protocol = SMTPProtocol(conn, loop, timeout)
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
        greeting = smtp_response(response.reply)
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

    def _session(self) -> tuple[ClientConnection, SMTPProtocol]:
        if self._protocol is None or self._conn is None:
            raise SMTPServerDisconnected("Server not connected")
        if self._protocol.error is not None:
            raise clone_error(self._protocol.error)
        return self._conn, self._protocol

    def _timeout(self, timeout: Timeout) -> float | None:
        return self.timeout if timeout is DEFAULT else timeout

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
        return smtp_response(response.reply)

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
        self, *, hostname: str | None = None, timeout: Timeout = DEFAULT
    ) -> SMTPResponse:
        """EHLO (LHLO for LMTP). Raises SMTPHeloError unless the reply is 250."""
        return await self._locked(
            lambda: self._hello("LHLO" if self.lmtp else "EHLO", hostname, timeout)
        )

    async def helo(
        self, *, hostname: str | None = None, timeout: Timeout = DEFAULT
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
            await self._hello("LHLO", None, DEFAULT)
            return
        try:
            await self._hello("EHLO", None, DEFAULT)
        except SMTPHeloError:
            if not self.is_connected:
                raise
            await self._hello("HELO", None, DEFAULT)

    async def help(self, *, timeout: Timeout = DEFAULT) -> str:
        async def run() -> str:
            await self._ehlo_or_helo_if_needed()
            response = await self._command(Command.help(), timeout)
            if response.code not in (211, 214):
                raise SMTPResponseException(response.code, response.message)
            return response.message

        return await self._locked(run)

    async def rset(self, *, timeout: Timeout = DEFAULT) -> SMTPResponse:
        return await self._locked(lambda: self._simple("RSET", timeout))

    async def noop(self, *, timeout: Timeout = DEFAULT) -> SMTPResponse:
        return await self._locked(lambda: self._simple("NOOP", timeout))

    async def _simple(self, verb: str, timeout: Timeout) -> SMTPResponse:
        await self._ehlo_or_helo_if_needed()
        response = await self._command(Command.simple(verb), timeout)
        if response.code != 250:
            raise SMTPResponseException(response.code, response.message)
        return response

    async def quit(self, *, timeout: Timeout = DEFAULT) -> SMTPResponse:
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

    async def execute_command(self, *args: bytes | str, timeout: Timeout = DEFAULT) -> SMTPResponse:
        """Send one command (``args`` joined by spaces, bytes as UTF-8) and return its
        reply whatever its code, like aiosmtplib's ``execute_command``.

        NOOP, RSET, QUIT (which then closes), HELP, VRFY and EXPN go out as themselves.
        The other commands the session tracks (EHLO, MAIL, RCPT, DATA, BDAT, STARTTLS,
        AUTH, ...) raise ``ValueError``: their methods keep the session in step. Anything
        else (ETRN, an extension) may be sent outside a mail transaction and is never
        pipelined. The session greets the server first if it has not yet. CR, LF, NUL and
        other control characters raise ``ValueError``."""
        text = " ".join(a.decode("utf-8") if isinstance(a, bytes) else a for a in args)
        verb, _, rest = text.partition(" ")
        upper = verb.upper()
        if upper in ("NOOP", "RSET", "QUIT") and not rest:
            command = Command.simple(upper)
        elif upper == "HELP":
            command = Command.help(rest or None)
        elif upper in ("VRFY", "EXPN"):
            command = Command.query(upper, rest, smtputf8=True)
        else:
            command = Command.other(text)

        async def run() -> SMTPResponse:
            try:
                if upper != "QUIT":
                    await self._ehlo_or_helo_if_needed()  # as the other command methods
                return await self._command(command, timeout)
            finally:
                if upper == "QUIT":
                    self.close()

        return await self._locked(run)

    async def vrfy(
        self, address: str, /, *, options: Iterable[str] | None = None, timeout: Timeout = DEFAULT
    ) -> SMTPResponse:
        """VRFY. Returns 250, 251 or 252 replies; raises SMTPResponseException otherwise."""
        return await self._locked(lambda: self._query("VRFY", address, options, timeout))

    async def expn(
        self, address: str, /, *, options: Iterable[str] | None = None, timeout: Timeout = DEFAULT
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
        client_cert: str | Literal[Default.token] | None = DEFAULT,
        client_key: str | Literal[Default.token] | None = DEFAULT,
        cert_bundle: str | Literal[Default.token] | None = DEFAULT,
        tls_context: ssl.SSLContext | Literal[Default.token] | None = DEFAULT,
        timeout: Timeout = DEFAULT,
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
            if value is not DEFAULT:
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
        protocol.transport = transport
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        conn.tls_started()
        self.last_ehlo_response = None
        self.last_helo_response = None
        await self._ehlo_or_helo_if_needed()
        return response

    # --- Authentication -------------------------------------------------------------------

    async def login(
        self, username: str | bytes, password: str | bytes, /, *, timeout: Timeout = DEFAULT
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
        self, username: str | bytes, password: str | bytes, /, *, timeout: Timeout = DEFAULT
    ) -> SMTPResponse:
        self._check_cleartext_allowed("PLAIN")
        initial = sasl.plain_response(username, password)
        return await self._locked(lambda: self._sasl("PLAIN", initial, None, timeout))

    async def auth_login(
        self, username: str | bytes, password: str | bytes, /, *, timeout: Timeout = DEFAULT
    ) -> SMTPResponse:
        self._check_cleartext_allowed("LOGIN")
        initial = sasl.b64(username.encode() if isinstance(username, str) else username)

        def respond(challenge: str) -> str:
            return sasl.login_response(challenge, username, password)

        return await self._locked(lambda: self._sasl("LOGIN", initial, respond, timeout))

    async def auth_crammd5(
        self, username: str | bytes, password: str | bytes, /, *, timeout: Timeout = DEFAULT
    ) -> SMTPResponse:
        def respond(challenge: str) -> str:
            return sasl.cram_md5_response(challenge, username, password)

        return await self._locked(lambda: self._sasl("CRAM-MD5", None, respond, timeout))

    async def auth_xoauth2(
        self, username: str | bytes, access_token: str | bytes, /, *, timeout: Timeout = DEFAULT
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
        timeout: Timeout = DEFAULT,
    ) -> SMTPResponse:
        """MAIL FROM. Raises SMTPSenderRefused unless the reply is 250."""
        params = params_from_options(options)
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
        timeout: Timeout = DEFAULT,
    ) -> SMTPResponse:
        """RCPT TO. Raises SMTPRecipientRefused unless the reply is 250 or 251."""
        params = params_from_options(options)
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

    async def data(self, message: str | bytes, /, *, timeout: Timeout = DEFAULT) -> SMTPResponse:
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
            return smtp_response(finals[0].reply)

        return await self._locked(run)

    async def bdat(self, message: str | bytes, /, *, timeout: Timeout = DEFAULT) -> SMTPResponse:
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
            return smtp_response(finals[0].reply)

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
        timeout: Timeout = DEFAULT,
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
        envelope = Envelope(
            sender,
            recipient_list,
            params_from_options(mail_options) if mail_options else {},
            params_from_options(rcpt_options) if rcpt_options else {},
            dsn_notify(notify) if notify is not None else None,
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
        timeout: Timeout = DEFAULT,
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
        envelope = Envelope(
            sender,
            recipient_list,
            params_from_options(mail_options),
            params_from_options(rcpt_options),
            dsn_notify(notify),
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
        self, envelope: Envelope, body: bytes, use_bdat: bool | None, timeout: Timeout
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
        self, turn: _Turn, envelope: Envelope, responses: list[Response], chunking: bool
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
                refused[recipient] = smtp_response(response.reply)
        if not chunking:
            data_code = responses[-1].reply.code
            if data_code != 354:
                if not accepted:
                    return refused, accepted, _Refusal(all_refused(refused))
                reply = responses[-1].reply
                return refused, accepted, _Refusal(SMTPDataError(data_code, str(reply.text)))
            if not accepted:
                return refused, accepted, _Refusal(all_refused(refused), code=354)
        elif not accepted:
            return refused, accepted, _Refusal(all_refused(refused))
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
            final = smtp_response(finals[-1].reply)
            if final.code != 250:
                raise SMTPDataError(final.code, final.message)
            return SendResult(refused, final.message, dict.fromkeys(accepted, final))
        delivered: dict[str, SMTPResponse] = {}
        for recipient, reply in zip(accepted, finals, strict=False):
            response = smtp_response(reply.reply)
            if response.code == 250:
                delivered[recipient] = response
            else:
                refused[recipient] = response
        if not delivered:
            raise all_refused(refused)
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
