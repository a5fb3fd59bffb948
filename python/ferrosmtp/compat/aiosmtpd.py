"""aiosmtpd's public names over ferrosmtp's server: ``from ferrosmtp.compat.aiosmtpd
import Controller, SMTP`` where ``from aiosmtpd.controller import Controller`` and
``from aiosmtpd.smtp import SMTP`` were.

Only defaults, reply texts and exception types differ from ``ferrosmtp.Server``; the
engine (Rust codec, the sans-IO state machine, pipelining, limits) is the same. The
replies are aiosmtpd 1.4.6's, byte for byte, through the state machine's ``dialect``
hook (:func:`aiosmtpd_dialect`). The deliberate differences (security defences, the RFC
5321 path grammar) are listed in README and SECURITY.md.
"""

from __future__ import annotations

import collections
import ssl
import warnings
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from ferrosmtp.protocol import events as ev
from ferrosmtp.protocol.events import Event, Response
from ferrosmtp.protocol.replies import Replies
from ferrosmtp.server import MISSING, AuthResult, Envelope, LoginPassword, Session, auth_mechanism
from ferrosmtp.server import Controller as _Controller
from ferrosmtp.server import Server as _Server
from ferrosmtp.server.controller import get_localhost

__all__ = [
    "AIOSMTPD_REPLIES",
    "BOGUS_LIMIT",
    "CALL_LIMIT_DEFAULT",
    "DATA_SIZE_DEFAULT",
    "LMTP",
    "MISSING",
    "SMTP",
    "AuthResult",
    "Controller",
    "Envelope",
    "LoginPassword",
    "Session",
    "__ident__",
    "__version__",
    "aiosmtpd_dialect",
    "auth_mechanism",
    "get_localhost",
]

__version__ = "1.4.6"  # the aiosmtpd release whose behaviour this module reproduces
__ident__ = f"Python SMTP {__version__}"
DATA_SIZE_DEFAULT = 2**25
CALL_LIMIT_DEFAULT = 20
BOGUS_LIMIT = 5

R = Response.of

# aiosmtpd's `@syntax` strings, for HELP and the 501 usage replies.
_SYNTAX = {
    "AUTH": "AUTH <mechanism>",
    "DATA": "DATA",
    "EHLO": "EHLO hostname",
    "HELO": "HELO hostname",
    "HELP": "HELP [command]",
    "LHLO": "LHLO hostname",
    "MAIL": "MAIL FROM: <address>",
    "NOOP": "NOOP [ignored]",
    "QUIT": "QUIT",
    "RCPT": "RCPT TO: <address>",
    "RSET": "RSET",
    "STARTTLS": "STARTTLS",
    "VRFY": "VRFY <address>",
}
_EXTENDED_SYNTAX = {"MAIL": " [SP <mail-parameters>]", "RCPT": " [SP <mail-parameters>]"}

# aiosmtpd 1.4.6's words for the replies the state machine gives by itself (its one reply
# table). The server adds no enhanced codes; where aiosmtpd writes one, it is in the text.
AIOSMTPD_REPLIES = replace(
    Replies(),
    need_helo=R(503, "Error: send HELO first"),
    no_recipients=R(503, "Error: need RCPT command"),
    need_auth=R(530, "5.7.0 Authentication required"),
    need_smtputf8=R(500, "Error: strict ASCII mode"),
    bad_smtputf8=R(501, "Error: SMTPUTF8 takes no arguments"),
    message_too_big=R(552, "Error: message size exceeds fixed maximum message size"),
    rcpt_param_unsupported=R(555, "RCPT TO parameters not recognized or not implemented"),
    already_authenticated=R(503, "Already authenticated"),
    unknown_mechanism=R(504, "5.5.4 Unrecognized authentication type"),
    auth_succeeded=R(235, "2.7.0 Authentication successful"),
    auth_invalid=R(535, "5.7.8 Authentication credentials invalid"),
    auth_cancelled=R(501, "5.7.0 Auth aborted"),
    auth_bad_base64=R(501, "5.5.2 Can't decode base64"),
    auth_bad_plain=R(501, "5.5.2 Can't split auth value"),
    too_many_calls=R(421, "4.7.0 {verb} sent too many times"),
)

# The codec's refusals (they are not in the reply table): its text -> aiosmtpd's reply.
_TEXTS: dict[str, Response] = {
    "Line too long": R(500, "Command line too long"),
    "Line too long (see RFC 5321 4.5.3.1.6)": R(500, "Line too long (see RFC5321 4.5.3.1.6)"),
    "Syntax error: empty command": R(500, "Error: bad syntax"),
    "Syntax error: command unrecognized": R(500, "Error: bad syntax"),
    "Syntax error: invalid character in command": R(500, "Error: bad syntax"),
    "Syntax error: 8-bit characters not allowed": R(500, "Error: strict ASCII mode"),
    "Syntax error: invalid UTF-8": R(500, "Error: strict ASCII mode"),
    "Must declare SMTPUTF8 to send unicode address": R(500, "Error: strict ASCII mode"),
}

# (verb, ferrosmtp's text) -> aiosmtpd's reply, where aiosmtpd's depends on the command.
_BY_VERB: dict[tuple[str, str], Response] = {
    ("DATA", "Message size exceeds fixed maximum message size"): R(
        552, "Error: Too much mail data"
    ),
    ("STARTTLS", "Error: command not implemented"): R(454, "TLS not available"),
    ("AUTH", "Error: command not implemented"): R(500, "Error: command 'AUTH' not recognized"),
    ("AUTH", "Must issue a STARTTLS command first"): R(
        538, "5.7.11 Encryption required for requested authentication mechanism"
    ),
    ("DATA", "Error: need MAIL command"): R(503, "Error: need RCPT command"),
}


def aiosmtpd_dialect(conn: Any, response: Response, event: Event | None) -> Response:
    """ServerConnection's reply, in aiosmtpd 1.4.6's words. ``conn`` is the connection
    (read only): some of aiosmtpd's replies depend on its state. Called for every reply:
    answers and positive replies leave at once (the hot path of a session)."""
    if event is not None:  # an answer (a hook's or a default): only HELP's words differ
        return _help(conn, event.arg, response) if type(event) is ev.Help else response
    if response.code < 400:  # the greeting, 354, ...: aiosmtpd's words already
        return response
    text = response.lines[0]
    said = _BY_VERB.get((conn.verb, text)) or _TEXTS.get(text)
    if said is not None:
        return said
    if text.startswith("Syntax: AUTH"):
        return _auth_usage(conn)
    if text.startswith("Error: MAIL parameter "):
        if text == "Error: MAIL parameter SMTPUTF8 not supported":
            return R(501, "Error: SMTPUTF8 disabled")
        return R(555, "MAIL FROM parameters not recognized or not implemented")
    if text.endswith(_MALFORMED):
        return R(553, "5.1.3 Error: malformed address")
    usage = _usage_verb(conn, text)
    if usage is not None:
        return R(501, _usage(conn, usage))
    return response


def _usage_verb(conn: Any, text: str) -> str | None:
    """The command a syntax refusal is about, when aiosmtpd answers it with its usage."""
    if text.startswith("Syntax: "):  # the codec's usage reply names its command
        verb = text.split()[1]
        return verb if verb in _SYNTAX else None
    if text.startswith("Bad sender address syntax"):
        return "MAIL"
    if text.startswith("Bad recipient address syntax"):
        return "RCPT"
    if text.startswith(_PARAMETER_ERRORS):
        # The codec names no command here: MAIL if no transaction is open, else RCPT.
        return "MAIL" if conn.mail is None else "RCPT"
    return None


# Path refusals aiosmtpd answers 553 (an empty local part or domain); the others get its
# usage reply.
_MALFORMED = (
    ": invalid source route",
    ": invalid domain",
    ": empty local part",
    ": local part too long",  # aiosmtpd's local_part_limit; ferrosmtp's is RFC 5321's 64
)

_PARAMETER_ERRORS = (
    "Syntax error in parameters",
    "Syntax error in SIZE parameter",
    "Syntax error: duplicate parameter",
    "Syntax error: invalid xtext",
    "Error: AUTH parameter",
    "Error: RET ",
    "Error: ENVID ",
    "Error: NOTIFY ",
    "Error: ORCPT ",
)


def _usage(conn: Any, verb: str) -> str:
    extended = _EXTENDED_SYNTAX.get(verb, "") if conn.esmtp else ""
    return "Syntax: " + _SYNTAX[verb] + extended


def _auth_usage(conn: Any) -> Response:
    """AUTH without a mechanism (the codec refuses it): aiosmtpd checks the session
    first, in this order."""
    if conn.hello is None:
        return R(503, "Error: send EHLO first")
    if not conn.esmtp:
        return R(500, "Error: command 'AUTH' not recognized")
    if conn.config.auth_require_tls and not conn.tls:
        return R(538, "5.7.11 Encryption required for requested authentication mechanism")
    if conn.authenticated:
        return R(503, "Already authenticated")
    return R(501, "Not enough value")


def _help(conn: Any, arg: str, response: Response) -> Response:
    if response.code != 214:
        return response  # a handler's own HELP reply
    # ferrosmtp's list names the verbs this connection offers; aiosmtpd's lists those
    # with a syntax line (so not EXPN or BDAT).
    offered = response.lines[0].removeprefix("Supported commands: ").split()
    verbs = sorted(v for v in {*offered, "AUTH"} if v in _SYNTAX)
    if arg:
        verb = arg.upper()
        if verb in verbs:
            return R(250, _usage(conn, verb))
        return R(501, "Supported commands: " + " ".join(verbs))
    return R(250, "Supported commands: " + " ".join(verbs))


class SMTP(_Server):
    """aiosmtpd's ``SMTP``: the same constructor, defaults, attributes and replies."""

    command_size_limit = 512
    command_size_limits: dict[str, int]
    line_length_limit = 1001
    local_part_limit = 0

    def __init__(
        self,
        handler: Any,
        *,
        data_size_limit: int | None = DATA_SIZE_DEFAULT,
        enable_SMTPUTF8: bool = False,
        decode_data: bool = False,
        hostname: str | None = None,
        ident: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        timeout: float = 300,
        auth_required: bool = False,
        auth_require_tls: bool = True,
        auth_exclude_mechanism: Iterable[str] | None = None,
        auth_callback: Callable[[str, bytes, bytes], bool] | None = None,
        command_call_limit: int | dict[str, int] | None = None,
        authenticator: Callable[..., Any] | None = None,
        proxy_protocol_timeout: float | None = None,
        loop: Any = None,
    ) -> None:
        if auth_required and not auth_require_tls:
            warnings.warn(
                "Requiring AUTH while not requiring TLS can lead to security vulnerabilities!",
                UserWarning,
                stacklevel=2,
            )
        if command_call_limit is not None:
            _check_call_limit(command_call_limit)
        self.command_call_limit = command_call_limit
        self.command_size_limits = collections.defaultdict(lambda: self.command_size_limit)
        if authenticator is None and auth_callback is None:
            # aiosmtpd always offers its built-in PLAIN and LOGIN; without a checker
            # every login fails (its login_always_fail).
            auth_callback = _login_always_fail
        super().__init__(
            handler,
            hostname=hostname,
            ident=ident or __ident__,
            data_size_limit=data_size_limit,
            enable_SMTPUTF8=enable_SMTPUTF8,
            decode_data=decode_data,
            tls_context=tls_context,
            require_starttls=require_starttls,
            timeout=timeout,
            auth_required=auth_required,
            auth_require_tls=auth_require_tls,
            auth_exclude_mechanism=auth_exclude_mechanism,
            auth_callback=auth_callback,
            authenticator=authenticator,
            proxy_protocol_timeout=proxy_protocol_timeout,
            lmtp=self._lmtp,
            max_line_length=self.line_length_limit,
            command_size_limit=self.command_size_limit,
            enhanced_status_codes=False,
            chunking=False,
            dsn=False,
            loop=loop,
        )
        config = self._base_config
        config.pipelining = False  # aiosmtpd reads pipelined commands but offers none
        config.replies = AIOSMTPD_REPLIES
        config.dialect = aiosmtpd_dialect
        self._proxy_timeout = proxy_protocol_timeout  # aiosmtpd's name, read by its tests
        if command_call_limit is not None:
            if isinstance(command_call_limit, int):
                limits: dict[str | None, int] = {None: command_call_limit}
            else:
                limits = {verb: n for verb, n in command_call_limit.items()}
                limits[None] = command_call_limit.get("*", CALL_LIMIT_DEFAULT)
            config.command_call_limits = limits
            self._call_limit_default = limits[None]
        if self._hooks.ehlo_form == "old":
            warnings.warn(
                "Use the 5-argument handle_EHLO() hook instead of the 4-argument "
                "handle_EHLO() hook; support for the 4-argument handle_EHLO() hook will "
                "be removed in version 2.0",
                DeprecationWarning,
                stacklevel=2,
            )

    _lmtp = False

    @property
    def max_command_size_limit(self) -> int:
        return max(self.command_size_limits.values(), default=self.command_size_limit)


class LMTP(SMTP):
    """aiosmtpd's ``LMTP``: LHLO instead of HELO and EHLO (RFC 2033)."""

    _lmtp = True


def _login_always_fail(mechanism: str, login: bytes, password: bytes) -> bool:
    return False


def _check_call_limit(limit: int | dict[str, int]) -> None:
    if isinstance(limit, dict):
        if not all(isinstance(v, int) for v in limit.values()):
            raise TypeError("All command_call_limit values must be int")
    elif not isinstance(limit, int):
        raise TypeError("command_call_limit must be int or Dict[str, int]")


class Controller(_Controller):
    """aiosmtpd's threaded ``Controller``: ``factory()`` makes the ``SMTP`` (kept as
    ``self.smtpd``); ``self.server`` is the listening asyncio server; ``stop()`` resets
    both."""

    def __init__(
        self,
        handler: Any,
        hostname: str | None = None,
        port: int = 8025,
        loop: Any = None,
        *,
        ready_timeout: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        server_kwargs: dict[str, Any] | None = None,
        **SMTP_parameters: Any,
    ) -> None:
        if server_kwargs is not None:
            warnings.warn(
                "server_kwargs will be removed in version 2.0. "
                "Just specify the keyword arguments to forward to SMTP "
                "as kwargs to this __init__ method.",
                DeprecationWarning,
                stacklevel=2,
            )
            SMTP_parameters = {**server_kwargs, **SMTP_parameters}
        super().__init__(
            handler,
            hostname,
            port,
            # aiosmtpd's: asyncio.new_event_loop() (whatever the policy gives), not uvloop
            # because it is installed.
            loop if loop is not None else "asyncio",
            ready_timeout=ready_timeout,
            ssl_context=ssl_context,
            server_hostname=server_hostname,
            **SMTP_parameters,
        )
        self.smtpd: SMTP | None = None
        self.server: Any = None

    def factory(self) -> SMTP:
        """The SMTP object the server runs (override it, as in aiosmtpd)."""
        return SMTP(self.handler, **self.SMTP_kwargs)

    def _listener(self) -> _Server:
        smtpd = self.smtpd = self.factory()
        if smtpd is None:
            raise RuntimeError("factory() returned None")
        smtpd.ssl_context = self.ssl_context
        smtpd._loop = self.loop
        return smtpd

    def _started(self, listener: _Server) -> None:
        self.server = listener._server

    def stop(self, no_assert: bool = False) -> None:
        """Stop the server and its thread; ``server`` and ``smtpd`` become None."""
        super().stop(no_assert)
        self.server = None
        self.smtpd = None
