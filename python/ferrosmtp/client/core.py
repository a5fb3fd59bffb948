"""The core of a client session: options, state, and the command exchange.

``SessionCore`` drives the sans-IO ``protocol.client.ClientConnection`` through the
asyncio protocol of ``client.io``: the connection decides what may be sent and pairs
every reply with its command; this class writes commands, waits for their replies (with
the timeouts), greets the server and closes. The layers above it, one job a module,
make up ``Client``: ``commands`` (EHLO, NOOP, VRFY... ), ``tls`` (STARTTLS), ``auth``,
``transaction`` (the pipelined mail transaction engine), ``messages`` (``mail()`` ...
``sendmail()``, ``send_message()``) and ``session`` (connecting: ``Client`` itself).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from ferrosmtp.client.io import SMTPProtocol, clone_error
from ferrosmtp.client.lock import FifoLock, Turn
from ferrosmtp.client.options import (
    BDAT_THRESHOLD,
    DEFAULT,
    DEFAULT_DATA_TIMEOUT,
    DEFAULT_TIMEOUT,
    SMTPTokenGenerator,
    SocketPathType,
    Timeout,
)
from ferrosmtp.client.results import SMTPResponse, smtp_response
from ferrosmtp.errors import (
    SMTPException,
    SMTPHeloError,
    SMTPNotSupported,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)
from ferrosmtp.protocol.client import (
    Answer,
    ClientConnection,
    Command,
    ExtensionNotSupported,
    LocalProtocolError,
    MessageTooLarge,
    Phase,
    check_hello_name,
)

__all__ = ["DATA", "RSET", "SessionCore"]

_T = TypeVar("_T")


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


DATA = Command.simple("DATA")
RSET = Command.simple("RSET")


class SessionCore:
    """The session a ``Client`` is made of: its options, its state, and the one way
    commands go out and replies come back (``_exchange``, one exchange at a time under
    ``_locked``). Every layer above (commands, STARTTLS, AUTH, transactions) talks to
    the server through it."""

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
        pipeline_bdat: bool = False,
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
        self.pipeline_bdat = pipeline_bdat
        self.bdat_threshold = bdat_threshold
        self.allow_insecure_auth = allow_insecure_auth

        self.last_helo_response: SMTPResponse | None = None
        self.last_ehlo_response: SMTPResponse | None = None
        self._conn: ClientConnection | None = None
        self._esmtp_extensions: tuple[object, dict[str, str]] | None = None
        self._protocol: SMTPProtocol | None = None
        self._lock = FifoLock()  # one transaction (or command exchange) at a time
        self._turns: deque[Turn] = deque()  # envelopes waiting to follow a message's content
        self._handed: Turn | None = None  # the turn whose envelope we sent with our content
        # Set by connect(), done when close() ends that connection: a concurrent connect()
        # waits for it (as aiosmtplib's connect lock), and never opens a second connection
        # that would overwrite, and leak, the first.
        self._occupied: asyncio.Future[None] | None = None
        self._active = 0  # transactions in progress on this session
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
            self.local_hostname = self.local_hostname.strip(" \t")  # CR, LF stay: refused
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
        extensions = self._conn.extensions
        made = self._esmtp_extensions
        if made is None or made[0] is not extensions:  # made once per EHLO reply
            lowered = {k.lower(): str(v) for k, v in extensions.extensions.items()}
            made = self._esmtp_extensions = (extensions, lowered)
        return dict(made[1])  # the caller's own copy

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

    def supports_extension(self, extension: str, /) -> bool:
        """Whether the server's EHLO reply offered ``extension`` (aiosmtplib's name)."""
        return extension.lower() in self.esmtp_extensions

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._protocol.transport if self._protocol else None

    def get_transport_info(self, key: str) -> Any:
        """``transport.get_extra_info(key)`` of the connection (``"peername"``,
        ``"sslcontext"``...)."""
        if not self.is_connected or self.transport is None:
            raise SMTPServerDisconnected("Server not connected")
        return self.transport.get_extra_info(key)

    @property
    def is_tls(self) -> bool:
        return self._conn is not None and self._conn.tls

    def close(self) -> None:
        """Close the connection now (no QUIT). Pending operations fail with
        SMTPServerDisconnected."""
        protocol = self._protocol
        if protocol is not None:
            protocol.fail(SMTPServerDisconnected("Connection closed"), graceful=True)
        self._protocol = None
        self._conn = None
        self._forget_greeting()
        occupied, self._occupied = self._occupied, None
        if occupied is not None and not occupied.done():
            occupied.set_result(None)

    def _forget_greeting(self) -> None:
        """EHLO/HELO must be sent again (a new connection, or after STARTTLS)."""
        self.last_ehlo_response = None
        self.last_helo_response = None

    # --- Exchanging commands ------------------------------------------------------------

    def _session(self) -> tuple[ClientConnection, SMTPProtocol]:
        if self._protocol is None or self._conn is None:
            raise SMTPServerDisconnected("Server not connected")
        error = self._protocol.error
        if error is not None:
            if isinstance(error, SMTPServerDisconnected):
                raise clone_error(error)
            # A read timeout closed the connection (a late reply could otherwise pair
            # with the next command): what the next command meets is a closed connection.
            raise SMTPServerDisconnected(f"Connection closed: {error.message}")
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

    async def _exchange(self, commands: Sequence[Command], timeout: Timeout) -> list[Answer]:
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

    # --- Greeting the server --------------------------------------------------------------

    async def _hello(self, verb: str, hostname: str | None, timeout: Timeout) -> SMTPResponse:
        _, protocol = self._session()
        if hostname is None:
            if self.local_hostname is None:
                sockname = (
                    protocol.transport.get_extra_info("sockname") if protocol.transport else None
                )
                self.local_hostname = await _default_local_name(sockname)
            hostname = self.local_hostname
        command = Command.hello(verb, hostname.strip(" \t"))
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

    async def _abandon(
        self, conn: ClientConnection, timeout: Timeout, *, always: bool = False
    ) -> None:
        """After a refusal: RSET if the server may still hold the envelope (or
        ``always``), ignoring a failure of the RSET itself (the refusal is what the caller
        needs to see)."""
        if not (conn.needs_reset or always) or not self.is_connected:
            return
        try:
            await self._command(RSET, timeout)
        except SMTPException:
            pass
