"""The client side of SMTP and LMTP as a sans-IO state machine (h11 style).

``ClientConnection`` holds every sequencing rule of a client session and nothing else:
no sockets, no clocks, no policy about what to send. The caller asks it for the bytes of a
command (``conn.mail("a@example.org")``) and writes them; it feeds what the server sends
to ``conn.receive_data(data)`` and gets back one ``Answer`` per reply, each matched to
the command it answers.

The rules it enforces, all in this module:

- Replies are matched to commands through a FIFO of outstanding commands, so any number
  of pipelined commands (RFC 2920) pair with their replies. A reply when nothing is
  outstanding is a ``RemoteProtocolError``, except a 421, which a server may send at any
  time and which closes the session (SECURITY.md, B7).
- Commands that must end a pipelining group (EHLO, DATA, AUTH, STARTTLS, QUIT, NOOP,
  VRFY, EXPN, HELP) block further commands until their reply; without PIPELINING, every
  command waits for the previous reply. Message content may start a group (RFC 2920
  §3.1), so the next MAIL can follow the end of a message without waiting.
- After the 220 to STARTTLS, any byte already received is an attack (B6): the reply
  must be the last thing read, and nothing may be read until ``tls_started()``, which
  forgets the capabilities and requires a new EHLO.
- Command arguments are never pasted into command lines: addresses are parsed with the
  server's own parser (``codec.parse_path``) and re-serialized, ESMTP parameters are
  checked against the RFC 5321 grammar, and every line is checked for control
  characters before anything is produced (B14). A refused argument raises
  ``ValueError`` and leaves the connection unchanged.
- Message content goes through ``codec.DotStuffer``: line ends become CRLF, leading dots
  are doubled, and only the client-generated ``.\\r\\n`` can end the data (B2). BDAT
  chunks get the same line-end normalization, without dot-stuffing.

Hot paths (``send_all``, ``receive_data``, the MAIL/RCPT constructors) avoid per-call
allocations beyond what they return: a client sends thousands of messages a second.
"""

from __future__ import annotations

import enum
import operator
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, NamedTuple

from ferrosmtp import codec as _active_codec
from ferrosmtp.protocol import params as rules

if TYPE_CHECKING:
    from ferrosmtp.codec import DotStuffer, EhloReply, Reply

__all__ = [
    "Answer",
    "ClientConnection",
    "Command",
    "Event",
    "ExtensionNotSupported",
    "LocalProtocolError",
    "MessageTooLarge",
    "Phase",
    "RemoteProtocolError",
    "ServerClosing",
    "check_hello_name",
    "parse_option",
]


class LocalProtocolError(Exception):
    """The caller asked for something the session does not allow now (a sequencing
    error such as RCPT before MAIL, or a command sent before the reply it must wait for).
    Nothing was produced and the connection state is unchanged."""


class ExtensionNotSupported(LocalProtocolError):
    """A command or parameter needs a service extension the server did not advertise."""

    def __init__(self, extension: str, what: str) -> None:
        super().__init__(f"{what} needs the {extension} extension, which the server does not offer")
        self.extension = extension


class MessageTooLarge(LocalProtocolError):
    """The declared SIZE is above the limit the server advertised (RFC 1870)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message size {size} exceeds the server's limit of {limit} octets")
        self.size = size
        self.limit = limit


class RemoteProtocolError(Exception):
    """The server broke the protocol (malformed or unsolicited reply, data after the
    STARTTLS reply). The session is out of step and must be closed.

    ``events`` are the replies read before the offending one, each matched to its
    command: they were answered in step, so the caller may still hand them out (a
    server that answers NOOP, then says an unasked "221 bye" and closes, did answer the
    NOOP). Empty for an offence at the STARTTLS reply: nothing there may be used."""

    def __init__(self, message: str, events: Sequence[Event] = ()) -> None:
        super().__init__(message)
        self.events: list[Event] = list(events)


class Phase(enum.Enum):
    """Where the session is, as far as what the client may send next is concerned."""

    GREETING = "greeting"  # waiting for the server's banner
    REFUSED = "refused"  # the banner was not 220: only QUIT may follow
    UNIDENTIFIED = "unidentified"  # before a successful EHLO/HELO/LHLO
    READY = "ready"  # identified, no mail transaction open
    MAIL = "mail"  # MAIL sent: RCPT, DATA, BDAT or RSET next
    DATA = "data"  # DATA sent: its reply decides whether content follows
    BODY = "body"  # 354 received: message content, then its end
    CHUNKING = "chunking"  # BDAT chunks sent, not yet the LAST one
    STARTTLS = "starttls"  # STARTTLS sent, reply pending
    TLS_HANDSHAKE = "tls-handshake"  # 220 to STARTTLS: start TLS, read nothing
    AUTH = "auth"  # AUTH or a SASL response sent, reply pending
    AUTH_CHALLENGE = "auth-challenge"  # 334 received: a SASL response line must follow
    CLOSED = "closed"  # QUIT sent, 421 received, or the session is broken

    # Members are singletons compared by identity: hash them by identity too, in C
    # (Enum.__hash__ is Python code, and phases are dictionary keys on every command).
    __hash__: Callable[[object], int] = object.__hash__  # type: ignore[assignment]


# What each phase allows the client to send, and the phase it moves to (optimistically,
# before the reply; ``ClientConnection._apply_reply`` corrects it when replies arrive).
_TRANSITIONS: dict[Phase, dict[str, Phase]] = {
    Phase.GREETING: {},
    Phase.REFUSED: {"QUIT": Phase.CLOSED},
    Phase.UNIDENTIFIED: {
        "EHLO": Phase.UNIDENTIFIED,
        "HELO": Phase.UNIDENTIFIED,
        "LHLO": Phase.UNIDENTIFIED,
        "RSET": Phase.UNIDENTIFIED,
        "NOOP": Phase.UNIDENTIFIED,
        "HELP": Phase.UNIDENTIFIED,
        "OTHER": Phase.UNIDENTIFIED,
        "QUIT": Phase.CLOSED,
    },
    Phase.READY: {
        "EHLO": Phase.UNIDENTIFIED,
        "HELO": Phase.UNIDENTIFIED,
        "LHLO": Phase.UNIDENTIFIED,
        "MAIL": Phase.MAIL,
        "STARTTLS": Phase.STARTTLS,
        "AUTH": Phase.AUTH,
        "RSET": Phase.READY,
        "NOOP": Phase.READY,
        "VRFY": Phase.READY,
        "EXPN": Phase.READY,
        "HELP": Phase.READY,
        "OTHER": Phase.READY,
        "QUIT": Phase.CLOSED,
    },
    Phase.MAIL: {
        "RCPT": Phase.MAIL,
        "DATA": Phase.DATA,
        "BDAT": Phase.CHUNKING,
        "RSET": Phase.READY,
        "NOOP": Phase.MAIL,
        "QUIT": Phase.CLOSED,
    },
    Phase.DATA: {},
    Phase.BODY: {},
    Phase.CHUNKING: {
        "BDAT": Phase.CHUNKING,
        "RSET": Phase.READY,
        "NOOP": Phase.CHUNKING,
        "QUIT": Phase.CLOSED,
    },
    Phase.STARTTLS: {},
    Phase.TLS_HANDSHAKE: {},
    Phase.AUTH: {},
    Phase.AUTH_CHALLENGE: {"AUTH-RESPONSE": Phase.AUTH},
    Phase.CLOSED: {},
}

# Commands after which nothing may be sent until their reply (RFC 2920 §3.1, plus the
# commands whose reply changes how the session continues, and the greeting).
_WAIT_FOR_REPLY = frozenset(
    {
        "CONNECT",
        "EHLO",
        "HELO",
        "LHLO",
        "DATA",
        "VRFY",
        "EXPN",
        "NOOP",
        "QUIT",
        "HELP",
        "STARTTLS",
        "AUTH",
        "AUTH-RESPONSE",
        "OTHER",
    }
)

# The verbs whose effect on the session this machine tracks; ``Command.other`` refuses
# them.
MODELLED_VERBS = frozenset(
    {"EHLO", "HELO", "LHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT"}
    | {"STARTTLS", "AUTH", "VRFY", "EXPN", "HELP"}
)

# Commands that need an extension, checked in ``_check``.
_NEEDS_EXTENSION = {"STARTTLS": "STARTTLS", "AUTH": "AUTH", "BDAT": "CHUNKING"}
# Commands ``_check`` has more to say about than the transition table (``send_all`` asks
# it about these, and about any command with UTF-8; MAIL's and RCPT's parameters go to
# ``_check_params``, the part of ``_check`` they need).
_CHECKED_VERBS = frozenset(_NEEDS_EXTENSION) | {"EHLO", "HELO", "LHLO", "VRFY", "EXPN"}
# Commands after which no mail transaction is open, whatever their reply.
_ENDS_TRANSACTION = frozenset({"RSET", "EHLO", "HELO", "LHLO"})

# MAIL/RCPT parameters that may only be used when the server advertises an extension.
_PARAM_EXTENSION = {
    "SIZE": "SIZE",
    "SMTPUTF8": "SMTPUTF8",
    "RET": "DSN",
    "ENVID": "DSN",
    "NOTIFY": "DSN",
    "ORCPT": "DSN",
    "REQUIRETLS": "REQUIRETLS",
    "MT-PRIORITY": "MT-PRIORITY",
    "HOLDFOR": "FUTURERELEASE",
    "HOLDUNTIL": "FUTURERELEASE",
    "BY": "DELIVERBY",
}
_BODY_EXTENSION = {"8BITMIME": "8BITMIME", "BINARYMIME": "BINARYMIME"}

# What their values must be: the server's rules (protocol/params.py), so that the client
# never sends what a ferrosmtp server would refuse. BINARYMIME passes here when its
# extension is advertised (checked just before).
_VALUE_RULES: dict[str, Callable[[str | None, Callable[[str], str]], bool]] = {
    "SIZE": lambda value, _: rules.size_octets(value) is not None,
    "BODY": lambda value, _: rules.body_ok(value, binarymime=True),
    "SMTPUTF8": lambda value, _: rules.smtputf8_ok(value),
    "RET": lambda value, _: rules.ret_ok(value),
    "ENVID": rules.envid_ok,
    "AUTH": rules.auth_ok,
    "NOTIFY": lambda value, _: rules.notify_ok(value),
    "ORCPT": rules.orcpt_ok,
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*", re.ASCII)
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}", re.ASCII)

Params = tuple[tuple[str, str | None], ...]


# --- Commands ---------------------------------------------------------------------------


class Command(NamedTuple):
    """One validated command line, ready to send.

    ``verb`` is what the reply will be matched to; ``argument`` is what the command is
    about (the address for MAIL and RCPT, the name for EHLO); ``line`` is the exact wire
    form, CRLF included; ``utf8`` says the line needs SMTPUTF8; ``params`` are the ESMTP
    parameters with upper-cased keywords. Build commands with the constructors below,
    which refuse anything that could change the line's meaning;
    ``ClientConnection.send`` then checks that the session allows them now.
    """

    verb: str
    argument: str
    line: bytes
    utf8: bool = False
    params: Params = ()

    def param(self, keyword: str) -> str | None:
        """The value of an ESMTP parameter ("" for one without a value), or None."""
        for key, value in self.params:
            if key == keyword:
                return "" if value is None else value
        return None

    def has_param(self, keyword: str) -> bool:
        """Whether this command carries the ESMTP parameter ``keyword``."""
        for key, _ in self.params:
            if key == keyword:
                return True
        return False

    @classmethod
    def hello(cls, verb: str, name: str, *, codec: ModuleType | None = None) -> Command:
        """EHLO, HELO or LHLO with the client's name: a domain or an address literal."""
        if verb not in ("EHLO", "HELO", "LHLO"):
            raise ValueError(f"not a greeting command: {verb!r}")
        check_hello_name(name, codec=codec)
        return cls(verb, name, _line(verb, name))

    @classmethod
    def mail(
        cls,
        sender: str,
        params: Mapping[str, str | None] | None = None,
        *,
        smtputf8: bool = False,
        codec: ModuleType | None = None,
    ) -> Command:
        """MAIL FROM:<sender> [params]. ``sender`` may be empty (or ``<>``): the null path.

        ``smtputf8`` allows a UTF-8 address; the SMTPUTF8 parameter itself must be in
        ``params`` (``ClientConnection`` checks that)."""
        ((address, line),) = (codec or _active_codec).format_envelope(
            sender, None, params, smtputf8=smtputf8
        )
        return cls("MAIL", address, line, not line.isascii(), _items(params))

    @classmethod
    def rcpt(
        cls,
        recipient: str,
        params: Mapping[str, str | None] | None = None,
        *,
        smtputf8: bool = False,
        codec: ModuleType | None = None,
    ) -> Command:
        """RCPT TO:<recipient> [params]."""
        ((address, line),) = (codec or _active_codec).format_envelope(
            None, (recipient,), None, params, smtputf8=smtputf8
        )
        return cls("RCPT", address, line, not line.isascii(), _items(params))

    @classmethod
    def envelope(
        cls,
        sender: str,
        recipients: Sequence[str],
        mail_params: Mapping[str, str | None] | None = None,
        rcpt_params: Mapping[str, str | None] | None = None,
        *,
        smtputf8: bool = False,
        codec: ModuleType | None = None,
    ) -> list[Command]:
        """MAIL, then one RCPT per recipient (the same parameters on each), built by one
        codec call (``codec.format_envelope``): what ``mail()`` and ``rcpt()`` check, for
        a whole envelope at the cost of one."""
        lines = (codec or _active_codec).format_envelope(
            sender, recipients, mail_params, rcpt_params, smtputf8=smtputf8
        )
        address, line = lines[0]
        commands = [
            _make_command(cls, ("MAIL", address, line, not line.isascii(), _items(mail_params)))
        ]
        items = _items(rcpt_params)
        for address, line in lines[1:]:
            commands.append(_make_command(cls, ("RCPT", address, line, not line.isascii(), items)))
        return commands

    @classmethod
    def query(
        cls, verb: str, argument: str, *, smtputf8: bool = False, codec: ModuleType | None = None
    ) -> Command:
        """VRFY or EXPN: a user or list name (an atom, a dot-string or a quoted string,
        RFC 5321 §4.1.1.6) or a mailbox (``a@b`` or ``<a@b>``, parsed as MAIL and RCPT
        addresses are). Nothing else: ``a@b> AUTH=<c@d>`` would put parameters of the
        caller's choosing on the command line.

        With ``smtputf8`` the argument may be UTF-8 and the SMTPUTF8 parameter is added
        (RFC 6531 §3.7.4.2)."""
        if verb not in ("VRFY", "EXPN"):
            raise ValueError(f"not VRFY or EXPN: {verb!r}")
        if not isinstance(argument, str) or not argument.strip(" "):
            raise ValueError(f"{verb} needs a non-empty argument")
        if _CONTROL.search(argument):
            raise ValueError(f"{verb} argument contains CR, LF, NUL or another control character")
        if argument != argument.strip(" "):
            raise ValueError(f"{verb} argument has leading or trailing spaces")
        utf8 = not argument.isascii()
        if utf8 and not smtputf8:
            raise ValueError(f"a non-ASCII {verb} argument needs SMTPUTF8")
        if rules.QUERY_NAME.fullmatch(argument) is None:  # a mailbox, then?
            try:
                (codec or _active_codec).format_envelope(None, (argument,), smtputf8=smtputf8)
            except ValueError:
                raise ValueError(
                    f"{verb} argument {argument!r} is not a name, a quoted string or a "
                    "mailbox: refused, as it could carry parameters onto the command line"
                ) from None
        text = argument + (" SMTPUTF8" if utf8 else "")
        return cls(verb, argument, _line(verb, text), utf8, (("SMTPUTF8", None),) if utf8 else ())

    @classmethod
    def help(cls, topic: str | None = None) -> Command:
        """HELP, with an optional one-word ``topic``."""
        if not topic:
            return cls("HELP", "", b"HELP\r\n")
        if not topic.isascii() or not topic.isprintable() or " " in topic:
            raise ValueError("a HELP topic must be one printable ASCII word")
        return cls("HELP", topic, _line("HELP", topic))

    @classmethod
    def auth(cls, mechanism: str, initial_response: str | None = None) -> Command:
        """AUTH mechanism [initial-response]: the response is base64, or "=" for empty."""
        if not isinstance(mechanism, str) or _KEYWORD.fullmatch(mechanism) is None:
            raise ValueError(f"invalid SASL mechanism name: {mechanism!r}")
        mechanism = mechanism.upper()
        if initial_response is None:
            return cls("AUTH", mechanism, _line("AUTH", mechanism))
        if initial_response == "":
            raise ValueError('an empty initial response is sent as "="')
        _check_base64(initial_response, allow_equals=True)
        return cls("AUTH", mechanism, _line("AUTH", f"{mechanism} {initial_response}"))

    @classmethod
    def auth_response(cls, response: str) -> Command:
        """A SASL response line: base64, empty, or "*" to cancel (RFC 4954 §4)."""
        if response != "*":
            _check_base64(response, allow_equals=False)
        return cls("AUTH-RESPONSE", "", response.encode("ascii") + b"\r\n")

    @classmethod
    def other(cls, text: str) -> Command:
        """A command this state machine does not model, such as ETRN or a vendor
        extension: the whole line without its CRLF. It may only be sent outside a mail
        transaction, is never pipelined, and its reply does not change the session.

        The commands the machine models (EHLO, MAIL, DATA, AUTH, ...) are refused here:
        sent this way they would desynchronize the session; use their own constructors."""
        if not isinstance(text, str) or not text.strip(" "):
            raise ValueError("a command needs a verb")
        if _CONTROL.search(text):
            raise ValueError("command contains CR, LF, NUL or another control character")
        verb = text.split(" ", 1)[0]
        if _KEYWORD.fullmatch(verb) is None:
            raise ValueError(f"not a command verb: {verb!r}")
        if verb.upper() in MODELLED_VERBS:
            raise ValueError(f"{verb.upper()} changes the session: use its own method")
        line = text.encode("utf-8") + b"\r\n"
        if len(line) > 512:  # RFC 5321 §4.5.3.1.4
            raise ValueError("command line longer than 512 octets")
        return cls("OTHER", text, line, not text.isascii())

    @classmethod
    def simple(cls, verb: str) -> Command:
        """A command without arguments: DATA, RSET, NOOP, QUIT or STARTTLS."""
        command = _SIMPLE.get(verb)
        if command is None:
            raise ValueError(f"not an argument-less command: {verb!r}")
        return command


_SIMPLE = {
    verb: Command(verb, "", verb.encode("ascii") + b"\r\n")
    for verb in ("DATA", "RSET", "NOOP", "QUIT", "STARTTLS")
}


def check_hello_name(name: str, *, codec: ModuleType | None = None) -> None:
    """Refuse an EHLO/HELO/LHLO name that is not an ASCII domain or address literal.

    The check borrows the address parser (``postmaster@<name>``), so it accepts exactly
    what the server side accepts as a domain. U-labels are refused: RFC 6531 does not
    allow them in EHLO, so send the A-label (``name.encode("idna")``)."""
    if not isinstance(name, str) or not name:
        raise ValueError("the client name must be a non-empty domain or address literal")
    if _CONTROL.search(name) or not name.isascii():
        raise ValueError("the client name must be ASCII without control characters")
    try:
        (codec or _active_codec).parse_path(f"<postmaster@{name}>")
    except ValueError:
        raise ValueError(f"not a domain or address literal: {name!r}") from None


def parse_option(option: str) -> tuple[str, str | None]:
    """One ``KEY[=value]`` word, as aiosmtplib's ``mail_options`` take them."""
    if not isinstance(option, str) or _CONTROL.search(option) or " " in option.strip(" "):
        raise ValueError(f"an ESMTP option must be one KEY[=value] word: {option!r}")
    key, eq, value = option.strip(" ").partition("=")
    return key, (value if eq else None)


_make_command = tuple.__new__  # a Command without NamedTuple.__new__'s Python frame


def _check_base64(text: str, *, allow_equals: bool) -> None:
    if not isinstance(text, str) or _BASE64.fullmatch(text) is None or len(text) % 4:
        if not (allow_equals and text == "="):
            raise ValueError("a SASL response must be base64 text")


def _items(params: Mapping[str, str | None] | None) -> Params:
    """Parameters as the connection checks them: keywords upper-cased (once valid)."""
    if not params:
        return ()
    return tuple([(key.upper(), value) for key, value in params.items()])


def _line(verb: str, argument: str) -> bytes:
    # The last guard against injection: whatever built the argument, a command line
    # never carries a control character.
    if _CONTROL.search(argument):
        raise ValueError(f"{verb} argument contains CR, LF, NUL or another control character")
    return f"{verb} {argument}\r\n".encode()


# --- Events ---------------------------------------------------------------------------------


class Answer(NamedTuple):
    """A reply, matched to the command it answers (the client's event; the server's
    replies are ``protocol.events.Response``, the caller's are ``SMTPResponse``).

    ``command`` is the verb (``"CONNECT"`` for the greeting, ``"."`` for the end of DATA
    content, ``"AUTH-RESPONSE"`` for a SASL response line); ``argument`` is the address
    of a MAIL or RCPT, ``"LAST"`` for the last BDAT chunk, or the recipient an LMTP
    end-of-data reply is for; ``reply`` is the codec's ``Reply`` (``code``,
    ``enhanced``, ``lines``, ``text``).
    """

    command: str
    argument: str
    reply: Reply

    @property
    def code(self) -> int:
        code: int = self.reply.code
        return code

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 400


_answer = tuple.__new__  # an Answer made without the Python frame of NamedTuple.__new__


class ServerClosing(NamedTuple):
    """A 421 that answered no command: the server is shutting the session down."""

    reply: Reply


Event = Answer | ServerClosing


# --- The connection -------------------------------------------------------------------------


class _Transaction:
    """What the client knows about one mail transaction."""

    __slots__ = ("accepted", "mail_ok", "recipients", "smtputf8", "stuffer")

    def __init__(self, smtputf8: bool) -> None:
        self.smtputf8 = smtputf8
        self.mail_ok: bool | None = None
        self.recipients = 0  # RCPT commands sent
        self.accepted: list[str] = []  # recipients the server took
        self.stuffer: DotStuffer | None = None  # for DATA content or BDAT chunks


class _Pending(NamedTuple):
    """A command waiting for its reply (made with ``_pending``: several per message)."""

    verb: str
    argument: str = ""
    transaction: _Transaction | None = None
    per_recipient: bool = False  # LMTP end of data: one reply per recipient


_make_pending = tuple.__new__  # without the Python frame of NamedTuple.__new__
_line_of = operator.attrgetter("line")  # a command's bytes, in C


class ClientConnection:
    """One SMTP (or LMTP, with ``lmtp=True``) client session, without I/O.

    ``codec`` is the codec module to use (``ferrosmtp._core`` or ``ferrosmtp._pure``);
    by default the one ``ferrosmtp.codec`` selected. Reply limits are those of
    ``codec.ReplyReader`` (2048 octets a line, 256 lines, 64 KiB a reply by default).
    """

    def __init__(
        self,
        *,
        lmtp: bool = False,
        codec: ModuleType | None = None,
        max_reply_line: int = 2048,
        max_reply_lines: int = 256,
        max_reply: int = 65536,
        check_params: bool = True,
    ) -> None:
        self.lmtp = lmtp
        # MAIL and RCPT parameters are checked before sending: their extension must be
        # advertised and their value valid (protocol/params.py, the server's own rules).
        # False: they are sent as given and the server decides, as aiosmtplib does (its
        # drop-in sets it). The SIZE limit and the SMTPUTF8 rules hold either way.
        self.check_params = check_params
        self.codec: ModuleType = codec if codec is not None else _active_codec
        self._reader = self.codec.ReplyReader(
            max_line=max_reply_line, max_lines=max_reply_lines, max_reply=max_reply
        )
        self._phase = Phase.GREETING
        self._pending: deque[_Pending] = deque([_Pending("CONNECT")])
        self._transaction: _Transaction | None = None
        self._extensions: EhloReply | None = None  # after a 250 to EHLO/LHLO
        self._names: frozenset[str] = frozenset()  # its keywords, upper-cased
        self._pipelining = False
        self._max_size: int | None = None
        self._tls = False
        self._authenticated = False
        self._server_open_transaction = False  # MAIL accepted, transaction not finished

    # --- What the session knows -----------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def closed(self) -> bool:
        return self._phase is Phase.CLOSED

    @property
    def outstanding(self) -> int:
        """How many commands still wait for their reply."""
        return len(self._pending)

    @property
    def extensions(self) -> EhloReply | None:
        """The codec's ``EhloReply`` of the last successful EHLO/LHLO, or None (before
        it, after HELO, and after STARTTLS until the next EHLO)."""
        return self._extensions

    @property
    def esmtp(self) -> bool:
        return self._extensions is not None

    @property
    def tls(self) -> bool:
        """True once ``tls_started()`` was called (or the caller declared, before the
        greeting, that the session runs over implicit TLS)."""
        return self._tls

    @tls.setter
    def tls(self, value: bool) -> None:
        if self._phase is not Phase.GREETING:
            raise LocalProtocolError("implicit TLS can only be declared before the greeting")
        self._tls = value

    @property
    def authenticated(self) -> bool:
        return self._authenticated

    @property
    def needs_reset(self) -> bool:
        """A transaction the server may still hold open (MAIL accepted, not finished):
        send RSET before the next MAIL."""
        return self._server_open_transaction or self._phase in (Phase.MAIL, Phase.CHUNKING)

    @property
    def accepted_recipients(self) -> list[str]:
        """Recipients the server accepted in the current transaction so far."""
        return list(self._transaction.accepted) if self._transaction else []

    def supports(self, extension: str) -> bool:
        """Whether the server's EHLO reply offered ``extension`` (any case)."""
        return extension.upper() in self._names

    def extension_param(self, extension: str) -> str | None:
        """The parameter text the server gave with ``extension`` in its EHLO reply, or None."""
        if self._extensions is None:
            return None
        value = self._extensions.param(extension)
        return None if value is None else str(value)

    @property
    def pipelining(self) -> bool:
        """Whether the server offers PIPELINING (RFC 2920)."""
        return self._pipelining

    @property
    def extension_names(self) -> frozenset[str]:
        """The keywords of the extensions the server offers now, upper-cased."""
        return self._names

    @property
    def max_size(self) -> int | None:
        """The server's SIZE limit in octets; None if it gave none (or 0: no limit)."""
        return self._max_size

    def can_send(self, verb: str) -> bool:
        """Whether a ``verb`` command may be sent now (sequencing and extensions)."""
        last = self._pending[-1].verb if self._pending else None
        try:
            self._check(self._phase, last, Command(verb, "", b""))
        except LocalProtocolError:
            return False
        return True

    # --- Sending commands -------------------------------------------------------------

    def send(self, command: Command) -> bytes:
        """Check that the session allows ``command`` now, record it, and return its bytes."""
        return self.send_all((command,))

    def send_all(self, commands: Sequence[Command]) -> bytes:
        """Several commands written at once (a pipelining group). All are checked before
        any is recorded: on error nothing changes and nothing is produced."""
        phase = self._phase
        pending = self._pending
        last = pending[-1].verb if pending else None
        txn = self._transaction
        utf8_txn = txn.smtputf8 if txn is not None else False
        rcpts = txn.recipients if txn is not None else 0  # RCPTs sent in ``txn``
        records: list[_Pending] = []
        transitions = _TRANSITIONS
        pipelining = self._pipelining
        # One pass: each command is checked, and what it will record is built aside
        # (a new MAIL's transaction too), to be committed only once every one passed.
        for command in commands:
            verb = command.verb
            following = transitions[phase].get(verb)
            if (
                following is None
                or command.utf8
                or verb in _CHECKED_VERBS
                or (last is not None and (not pipelining or last in _WAIT_FOR_REPLY))
            ):
                following = self._check(phase, last, command)  # the rules, and their errors
            elif command.params and (verb == "MAIL" or verb == "RCPT"):
                self._check_params(command)  # what _check would have checked of it
            phase = following
            if verb == "RCPT":
                if command.utf8 and not utf8_txn:
                    raise LocalProtocolError("a UTF-8 recipient needs MAIL ... SMTPUTF8")
                rcpts += 1
            elif verb == "MAIL":
                utf8_txn = bool(command.params) and command.has_param("SMTPUTF8")
                txn = _Transaction(utf8_txn)
                rcpts = 0
            elif verb == "DATA":
                if rcpts == 0:
                    raise LocalProtocolError("DATA needs at least one RCPT first")
            elif verb in _ENDS_TRANSACTION:
                txn = None
                utf8_txn = False
                rcpts = 0
            records.append(_make_pending(_Pending, (verb, command.argument, txn, False)))
            last = verb
        # Every command is allowed: commit the replies to wait for, the RCPT count of the
        # transaction now open (the only one whose count is read again) and the phase the
        # checks arrived at.
        if txn is not None:
            txn.recipients = rcpts
        pending.extend(records)
        self._transaction = txn
        self._phase = phase
        if len(commands) == 1:
            return commands[0].line
        return b"".join(map(_line_of, commands))

    def _check(self, phase: Phase, last: str | None, command: Command) -> Phase:
        """The one place that says whether ``command`` may be sent in ``phase`` after the
        outstanding command ``last`` (None if nothing is outstanding), and the phase that
        follows."""
        verb = command.verb
        following = _TRANSITIONS[phase].get(verb)
        if following is None:
            raise LocalProtocolError(f"{verb} is not allowed now (session phase: {phase.value})")
        if last is not None:
            if last in _WAIT_FOR_REPLY:
                raise LocalProtocolError(f"{verb} must wait for the reply to {last}")
            if not self._pipelining:
                raise LocalProtocolError(
                    f"{verb} must wait for the reply to {last}: "
                    "the server does not offer PIPELINING"
                )
        if verb in _NEEDS_EXTENSION:
            if verb == "STARTTLS" and self._tls:
                raise LocalProtocolError("TLS is already active")
            extension = _NEEDS_EXTENSION[verb]
            if extension not in self._names:
                raise ExtensionNotSupported(extension, verb)
        elif verb == "MAIL" or verb == "RCPT":
            self._check_params(command)
        elif verb in ("EHLO", "HELO", "LHLO") and (verb == "LHLO") != self.lmtp:
            raise LocalProtocolError(
                "an LMTP session greets with LHLO" if self.lmtp else "LHLO is only for LMTP"
            )
        elif verb in ("VRFY", "EXPN") and command.utf8 and "SMTPUTF8" not in self._names:
            raise ExtensionNotSupported("SMTPUTF8", f"a UTF-8 {verb} argument")
        return following

    def _check_params(self, command: Command) -> None:
        names = self._names
        checked = self.check_params
        for key, value in command.params:
            if checked:
                extension = _PARAM_EXTENSION.get(key)
                if extension is not None and extension not in names:
                    raise ExtensionNotSupported(extension, f"the {key} parameter")
                if key == "BODY" and value is not None:
                    extension = _BODY_EXTENSION.get(value.upper())
                    if extension is not None and extension not in names:
                        raise ExtensionNotSupported(extension, f"BODY={value}")
                if key != "SIZE":  # SIZE's rule is read once, below
                    rule = _VALUE_RULES.get(key)
                    if rule is not None and not rule(value, self.codec.xtext_decode):
                        raise ValueError(f"invalid value for ESMTP parameter {key}: {value!r}")
            if key == "SIZE":
                size, limit = rules.size_octets(value), self._max_size
                if size is None and checked:
                    raise ValueError(f"invalid value for ESMTP parameter {key}: {value!r}")
                if size is not None and limit is not None and size > limit:
                    raise MessageTooLarge(size, limit)
        if command.verb == "MAIL" and command.utf8 and not command.has_param("SMTPUTF8"):
            raise LocalProtocolError("a UTF-8 sender needs the SMTPUTF8 parameter")

    # Convenience wrappers: each builds the command and sends it.

    def ehlo(self, name: str) -> bytes:
        """EHLO (LHLO in an LMTP session)."""
        return self.send(Command.hello("LHLO" if self.lmtp else "EHLO", name, codec=self.codec))

    def helo(self, name: str) -> bytes:
        """The bytes of ``HELO name`` (checked against the session's state)."""
        return self.send(Command.hello("HELO", name, codec=self.codec))

    def lhlo(self, name: str) -> bytes:
        """The bytes of ``LHLO name`` (LMTP's EHLO)."""
        return self.send(Command.hello("LHLO", name, codec=self.codec))

    def mail(self, sender: str, params: Mapping[str, str | None] | None = None) -> bytes:
        """The bytes of ``MAIL FROM:<sender>`` with ESMTP ``params``."""
        smtputf8 = any(key.upper() == "SMTPUTF8" for key in params or {})
        return self.send(Command.mail(sender, params, smtputf8=smtputf8, codec=self.codec))

    def rcpt(self, recipient: str, params: Mapping[str, str | None] | None = None) -> bytes:
        """The bytes of ``RCPT TO:<recipient>`` with ESMTP ``params``."""
        smtputf8 = self._transaction.smtputf8 if self._transaction else False
        return self.send(Command.rcpt(recipient, params, smtputf8=smtputf8, codec=self.codec))

    def data(self) -> bytes:
        """The bytes of ``DATA``."""
        return self.send(_SIMPLE["DATA"])

    def rset(self) -> bytes:
        """The bytes of ``RSET``."""
        return self.send(_SIMPLE["RSET"])

    def noop(self) -> bytes:
        """The bytes of ``NOOP``."""
        return self.send(_SIMPLE["NOOP"])

    def quit(self) -> bytes:
        """The bytes of ``QUIT``."""
        return self.send(_SIMPLE["QUIT"])

    def starttls(self) -> bytes:
        """The bytes of ``STARTTLS``; after its 220 nothing more is read in plaintext."""
        return self.send(_SIMPLE["STARTTLS"])

    def vrfy(self, argument: str) -> bytes:
        """The bytes of ``VRFY argument``."""
        return self.send(Command.query("VRFY", argument, smtputf8=True))

    def expn(self, argument: str) -> bytes:
        """The bytes of ``EXPN argument``."""
        return self.send(Command.query("EXPN", argument, smtputf8=True))

    def help(self, topic: str | None = None) -> bytes:
        """The bytes of ``HELP [topic]``."""
        return self.send(Command.help(topic))

    def auth(self, mechanism: str, initial_response: str | None = None) -> bytes:
        """The bytes of ``AUTH mechanism [initial-response]``."""
        return self.send(Command.auth(mechanism, initial_response))

    def auth_response(self, response: str) -> bytes:
        """The bytes of one SASL response line, answering a 334 challenge."""
        return self.send(Command.auth_response(response))

    # --- Message content ------------------------------------------------------------

    def send_data(self, data: bytes, *, end: bool = False) -> bytes:
        """A piece of message content after the 354: line ends normalized, dots doubled;
        with ``end``, the last piece, followed by the end of the content (``end_data``).

        Feed the message in pieces of any size; only the bytes of this piece (and a CR
        held back from the previous one) are produced, so a large message is never
        copied whole. A whole message given at once (``end`` on the first piece) is
        encoded by one codec call."""
        txn = self._transaction
        if self._phase is not Phase.BODY or txn is None:
            raise LocalProtocolError(
                f"message content is not allowed now (phase: {self._phase.value})"
            )
        stuffer = txn.stuffer
        if stuffer is None:  # the first piece
            if end:
                out: bytes = self.codec.dot_stuff(data)
                self._content_ended(txn)
                return out
            stuffer = txn.stuffer = self.codec.DotStuffer()
        out = stuffer.feed(data)
        if end:
            out += stuffer.finish()
            self._content_ended(txn)
        return out

    def end_data(self) -> bytes:
        """The end of the message content: a final CRLF if missing, then ``.\\r\\n``.

        Also the right thing to send after a 354 when no recipient was accepted (RFC 2920
        §3.1: "the client SMTP should send a single dot")."""
        txn = self._transaction
        if self._phase is not Phase.BODY or txn is None:
            raise LocalProtocolError(
                f"message content is not allowed now (phase: {self._phase.value})"
            )
        # Nothing sent yet: the end of an empty message.
        out: bytes = txn.stuffer.finish() if txn.stuffer is not None else b".\r\n"
        self._content_ended(txn)
        return out

    def _content_ended(self, txn: _Transaction) -> None:
        txn.stuffer = None
        self._phase = Phase.READY
        self._transaction = None
        # Whatever its reply, the server ends the transaction at the end of the content.
        self._server_open_transaction = False
        self._pending.append(_make_pending(_Pending, (".", "", txn, self.lmtp)))

    def send_bdat(self, data: bytes, *, last: bool = False) -> bytes:
        """A BDAT chunk (RFC 3030): ``BDAT <n> [LAST]`` and the chunk, line ends
        normalized to CRLF (a final CRLF is ensured by the LAST chunk).

        Returns b"" for a non-LAST chunk that normalizes to nothing (a lone CR held back
        for the next chunk), since a ``BDAT 0`` without LAST is refused by servers."""
        last_pending = self._pending[-1].verb if self._pending else None
        self._check(self._phase, last_pending, Command("BDAT", "", b""))
        txn = self._transaction
        assert txn is not None
        if self._phase is Phase.MAIL and txn.recipients == 0:
            raise LocalProtocolError("BDAT needs at least one RCPT first")
        stuffer = txn.stuffer
        if stuffer is None:
            stuffer = txn.stuffer = self.codec.DotStuffer(dots=False)
        chunk: bytes = stuffer.feed(data) if data else b""
        if last:
            chunk += stuffer.finish()
        elif not chunk:
            self._phase = Phase.CHUNKING
            return b""
        header = b"BDAT %d LAST\r\n" % len(chunk) if last else b"BDAT %d\r\n" % len(chunk)
        self._pending.append(_Pending("BDAT", "LAST" if last else "", txn, last and self.lmtp))
        if last:
            txn.stuffer = None
            self._phase = Phase.READY
            self._transaction = None
            self._server_open_transaction = False  # LAST ends it, whatever the reply
        else:
            self._phase = Phase.CHUNKING
        return header + chunk

    # --- TLS ---------------------------------------------------------------------------

    def tls_started(self) -> None:
        """TLS is up after a 220 to STARTTLS: forget everything learned before it (RFC
        3207 §4.2) and require a new EHLO."""
        if self._phase is not Phase.TLS_HANDSHAKE:
            raise LocalProtocolError("tls_started() without a 220 reply to STARTTLS")
        self._tls = True
        self._set_extensions(None)
        self._authenticated = False
        self._phase = Phase.UNIDENTIFIED

    def _set_extensions(self, extensions: EhloReply | None) -> None:
        self._extensions = extensions
        self._names = frozenset(extensions.extensions) if extensions is not None else frozenset()
        self._pipelining = "PIPELINING" in self._names
        size = self.extension_param("SIZE")
        self._max_size = rules.size_octets(size) or None

    # --- Receiving replies ----------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the server; get the replies they complete, matched to commands.

        Raises RemoteProtocolError (and closes the session) on a malformed reply, a
        reply nothing asked for, or bytes after the 220 reply to STARTTLS. Empty ``data``
        changes nothing; report the end of the stream with ``connection_lost()``.
        """
        phase = self._phase
        if phase is Phase.CLOSED and not self._pending:
            return []  # after the reply to QUIT, or a 421, the server's words do not matter
        if not data:
            return []  # no news (the end of the stream is connection_lost(), not b"")
        if phase is Phase.TLS_HANDSHAKE:
            self._fail()
            raise RemoteProtocolError("data received after the 220 reply to STARTTLS")
        try:
            replies = self._reader.feed(data)
        except ValueError as exc:  # ReplyError
            self._fail()
            raise RemoteProtocolError(f"malformed reply: {exc}") from None
        events: list[Event] = []
        pending = self._pending
        for index, reply in enumerate(replies):
            if not pending:
                self._fail()
                if reply.code == 421:
                    events.append(ServerClosing(reply))
                    return events
                raise RemoteProtocolError(
                    f"unsolicited reply: {reply.code} {reply.text[:80]!r}", events
                )
            waiting = pending.popleft()
            if waiting.per_recipient:
                waiting = self._per_recipient(waiting)
            events.append(_answer(Answer, (waiting.verb, waiting.argument, reply)))
            phase = self._apply_reply(waiting, reply)
            if phase is Phase.TLS_HANDSHAKE and (
                index != len(replies) - 1 or self._reader.buffered or self._reader.in_reply
            ):
                self._fail()
                raise RemoteProtocolError("data received after the 220 reply to STARTTLS")
            if phase is Phase.CLOSED and not pending:
                # The session is over (a 421, or the reply to QUIT): what follows does not
                # matter. The phase alone does not say so: it is CLOSED as soon as a QUIT is
                # sent, and replies to the commands pipelined before it are still due.
                break
        return events

    def connection_lost(self) -> None:
        """The transport closed: nothing more can be sent or received."""
        self._fail()

    def _fail(self) -> None:
        self._phase = Phase.CLOSED
        self._pending.clear()

    def _per_recipient(self, pending: _Pending) -> _Pending:
        # LMTP (RFC 2033 §4.2): after the content, one reply per accepted recipient, in
        # RCPT order. Every RCPT reply has arrived by now (replies come in order).
        txn = pending.transaction
        recipients = txn.accepted if txn is not None and txn.accepted else [""]
        expanded = [_Pending(pending.verb, rcpt, txn) for rcpt in recipients]
        self._pending.extendleft(reversed(expanded[1:]))
        return expanded[0]

    def _apply_reply(self, pending: _Pending, reply: Reply) -> Phase:
        """How each reply changes the session; returns the phase after it."""
        code = reply.code
        verb = pending.verb
        if code == 421:
            self._fail()
        elif verb == "RCPT":
            if 200 <= code < 300 and pending.transaction is not None:
                pending.transaction.accepted.append(pending.argument)
        elif verb == "MAIL":
            txn = pending.transaction
            assert txn is not None
            txn.mail_ok = 200 <= code < 300
            self._server_open_transaction = txn.mail_ok
            if not txn.mail_ok and self._transaction is txn and not self._pending:
                # Nothing was pipelined after the refused MAIL: no transaction is open.
                self._transaction = None
                self._phase = Phase.READY
        elif verb == "DATA":
            if code == 354:
                assert self._transaction is not None
                self._transaction.stuffer = None  # made by the first send_data
                self._phase = Phase.BODY
            elif self._transaction is not None and self._transaction.mail_ok:
                self._phase = Phase.MAIL  # the server still holds the envelope: RSET or retry
            else:
                self._transaction = None
                self._phase = Phase.READY
        elif verb == ".":
            self._server_open_transaction = False
        elif verb == "BDAT":
            if pending.argument == "LAST" or pending.transaction is None:
                self._server_open_transaction = False
            elif not 200 <= code < 300:
                # A refused chunk: the server discards the rest until LAST (RFC 3030);
                # the client must RSET if it stops before sending LAST.
                self._server_open_transaction = True
        elif verb == "RSET":
            if 200 <= code < 300:
                self._server_open_transaction = False
        elif verb == "CONNECT":
            self._phase = Phase.UNIDENTIFIED if code == 220 else Phase.REFUSED
        elif verb in ("EHLO", "LHLO", "HELO"):
            if code == 250:
                ehlo = self.codec.parse_ehlo(list(reply.lines)) if verb != "HELO" else None
                self._set_extensions(ehlo)
                self._server_open_transaction = False
                self._phase = Phase.READY
            else:
                self._set_extensions(None)
                self._phase = Phase.UNIDENTIFIED
        elif verb == "STARTTLS":
            self._phase = Phase.TLS_HANDSHAKE if code == 220 else Phase.READY
        elif verb in ("AUTH", "AUTH-RESPONSE"):
            if code == 334:
                self._phase = Phase.AUTH_CHALLENGE
            else:
                self._authenticated = self._authenticated or code == 235
                self._phase = Phase.READY
        elif verb == "QUIT":
            self._fail()
        return self._phase
