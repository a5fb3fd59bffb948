"""Events a ServerConnection hands to the application, and the replies it takes back.

An event marked "answer" waits for ``ServerConnection.respond()`` before the next one
comes; the others only inform. Events are plain slotted dataclasses, to be treated as
read-only: one is made per command, and frozen dataclasses cost three times as much to
create.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ferrosmtp import codec


@dataclass(frozen=True)
class Response:
    """A reply: basic code, optional RFC 3463 enhanced code, one or more lines of text."""

    code: int
    lines: tuple[str, ...] = ("",)
    enhanced: str | None = None

    @classmethod
    def of(
        cls, code: int, text: str | list[str] | tuple[str, ...] = "", enhanced: str | None = None
    ) -> Response:
        """A Response from one line of text (or several) and an optional enhanced code."""
        lines = (text,) if isinstance(text, str) else tuple(text)
        return cls(code, lines or ("",), enhanced)

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    def __str__(self) -> str:
        prefix = f"{self.enhanced} " if self.enhanced else ""
        return f"{self.code} {prefix}{' / '.join(self.lines)}"

    def fill(self, **values: str) -> Response:
        """This reply with ``{name}`` in its text replaced by ``values[name]`` (plain
        replacement, not ``str.format``: a value may hold braces)."""
        lines = self.lines
        for name, value in values.items():
            lines = tuple(line.replace("{" + name + "}", value) for line in lines)
        return Response(self.code, lines, self.enhanced)


class Event:
    """Base class of everything next_event() returns."""

    __slots__ = ()
    needs_answer = True


@dataclass(slots=True)
class Hello(Event):
    """HELO, EHLO or LHLO (answer). ``extensions`` are the EHLO lines the server offers
    (empty for HELO); answering with them is what ``respond_default()`` does."""

    verb: str
    hostname: str
    extensions: tuple[str, ...] = ()


@dataclass(slots=True)
class MailFrom(Event):
    """MAIL FROM (answer). ``address`` is the mailbox as a string, "" for ``<>``."""

    path: codec.Path
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return str(self.path.address)


@dataclass(slots=True)
class RcptTo(Event):
    """RCPT TO (answer)."""

    path: codec.Path
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return str(self.path.address)


@dataclass(slots=True)
class Content(Event):
    """A piece of the message being received (inform): DATA unstuffed, or BDAT bytes."""

    data: bytes
    needs_answer = False


@dataclass(slots=True)
class MessageEnd(Event):
    """The whole message has arrived (answer; under LMTP with one reply per accepted
    recipient, see ``ServerConnection.respond_lmtp``)."""

    size: int
    bare_lf: bool = False
    bare_cr: bool = False


@dataclass(slots=True)
class MessageAborted(Event):
    """The message being received was refused by the connection itself (inform): the
    Content seen so far must be dropped. ``response`` is what the client was told."""

    response: Response
    needs_answer = False


@dataclass(slots=True)
class Reset(Event):
    """RSET (answer)."""


@dataclass(slots=True)
class Noop(Event):
    """NOOP (answer)."""

    arg: str = ""


@dataclass(slots=True)
class Verify(Event):
    """VRFY (answer)."""

    arg: str


@dataclass(slots=True)
class Expand(Event):
    """EXPN (answer)."""

    arg: str


@dataclass(slots=True)
class Help(Event):
    """HELP (answer)."""

    arg: str = ""


@dataclass(slots=True)
class Quit(Event):
    """QUIT (answer); the connection closes after the reply."""


@dataclass(slots=True)
class StartTLS(Event):
    """STARTTLS, already checked (answer). After a 220 the application runs the TLS
    handshake and calls ``tls_established()`` (or ``close()`` if it fails)."""


@dataclass(slots=True)
class Auth(Event):
    """AUTH, already checked (answer with ``auth_challenge()``, ``auth_succeeded()`` or
    ``auth_failed()``). ``initial`` is the initial response as sent (base64, or "=")."""

    mechanism: str
    initial: str | None = None


@dataclass(slots=True)
class AuthLine(Event):
    """The client's line after a 334 challenge (answer like Auth)."""

    data: bytes


@dataclass(slots=True)
class AuthAborted(Event):
    """The AUTH exchange ended without the application (inform): the client's line was
    too long, and the connection has already answered ``response``."""

    response: Response
    needs_answer = False


@dataclass(slots=True)
class Delay(Event):
    """The client keeps making errors (inform): wait ``seconds`` before reading or
    answering anything more (Postfix's ``smtpd_soft_error_limit`` and
    ``smtpd_error_sleep_time``). The replies so far are sent first."""

    seconds: float
    needs_answer = False


@dataclass(slots=True)
class Unknown(Event):
    """A well-formed command the protocol does not know (answer; default 500)."""

    verb: str
    arg: str


class Sentinel:
    """What ``next_event()`` returns when it has no event: NEED_DATA or CLOSED."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA = Sentinel("NEED_DATA")
"""next_event(): nothing more until receive_data() brings bytes."""

CLOSED = Sentinel("CLOSED")
"""next_event(): the connection is over; send data_to_send() and close the socket."""
