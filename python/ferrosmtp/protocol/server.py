"""ServerConnection: the receiving side of SMTP as a sans-IO state machine (h11 style).

Bytes go in with ``receive_data()``; ``next_event()`` hands out one event at a time;
the application answers events that need it with ``respond()`` (or the AUTH and TLS
methods); ``data_to_send()`` gives the reply bytes to write, batched so that a pipelined
group gets one write (RFC 2920 §3.2). Every sequencing rule lives in this module: what may
come before what, which limits apply, which replies the connection gives by itself.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ferrosmtp import codec as default_codec
from ferrosmtp.protocol import events as ev
from ferrosmtp.protocol import params as rules
from ferrosmtp.protocol.events import CLOSED, NEED_DATA, Event, Response, Sentinel
from ferrosmtp.protocol.replies import Replies

if TYPE_CHECKING:
    from ferrosmtp._core import _FastPathState as FastPathState
    from ferrosmtp.codec import Command, Data, DataEnd, Line, ServerFastPath, Violation

    # What the codec's ServerReader yields (the stub's classes; the pure twin's share
    # their interface).
    Item = Command | Violation | Data | DataEnd | Line

R = Response.of

# RFC 3207 §4: what a server that requires TLS answers before the handshake (aiosmtpd's
# ALLOWED_BEFORE_STARTTLS, with LMTP's LHLO); everything else gets 530.
BEFORE_STARTTLS = frozenset({"EHLO", "LHLO", "NOOP", "QUIT", "STARTTLS"})

# aiosmtpd's default for command_call_limit verbs it is not told about.
CALL_LIMIT_DEFAULT = 20

# Commands that cost the server work and move no mail (Postfix's smtpd_junk_command_limit).
JUNK_VERBS = frozenset({"NOOP", "RSET", "VRFY", "EXPN", "HELP"})

# RFC 2920 §3.1: these end a pipelined group; bytes after them are a protocol violation.
SYNC_VERBS = frozenset({"EHLO", "HELO", "LHLO", "DATA", "NOOP", "VRFY", "EXPN"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # shown as "?" when a reply quotes the client
HTTP_VERBS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "CONNECT", "PATCH"})


@dataclass
class ServerConfig:
    """What a server offers and enforces. Defaults follow RFC 5321 and Postfix."""

    hostname: str = "localhost"
    greeting: str = "ESMTP ferrosmtp"
    lmtp: bool = False
    max_message_size: int | None = 32 << 20
    max_command_line: int = 512
    max_auth_line: int = 12288
    max_text_line: int | None = None
    bare_newline: str = "reject"
    max_recipients: int = 1000
    # Errors: every refused command counts (Postfix's smtpd_hard_error_limit, 20), and
    # from soft_error_limit on each one costs the client error_sleep seconds first
    # (smtpd_soft_error_limit, 10, and smtpd_error_sleep_time, 1 s). A delivered message
    # forgives them. RCPTs over max_recipients count only past the overshoot allowance
    # (smtpd_recipient_overshoot_limit), so a large fan-out gets its 452s and goes on.
    max_errors: int = 20
    soft_error_limit: int = 10
    error_sleep: float = 1.0
    recipient_overshoot_limit: int = 1000
    max_auth_failures: int = 3
    max_junk_commands: int = 100
    smtputf8: bool = True
    eightbitmime: bool = True
    pipelining: bool = True
    chunking: bool = True
    dsn: bool = True
    enhanced_status_codes: bool = True
    starttls: bool = False  # a TLS context is there for STARTTLS
    tls_active: bool = False  # the connection is TLS from the start (RFC 8314)
    require_starttls: bool = False
    auth_mechanisms: tuple[str, ...] = ()
    auth_required: bool = False
    auth_require_tls: bool = True
    strict_pipelining: bool = True
    extra_extensions: tuple[str, ...] = field(default=())
    replies: Replies = field(default_factory=Replies)
    # Another server's words for the same replies (ferrosmtp.compat.aiosmtpd): called
    # with the connection (its state, read only), each reply and the event it answers
    # (None for a refusal), it returns the reply to send. The rules and limits stay here.
    dialect: Callable[[Any, Response, Event | None], Response] | None = None
    # The kinds of events whose answers the dialect may reword (None: any reply; it is
    # then asked about every one). The default answers of the others are formatted once.
    dialect_rewords: frozenset[type] | None = None
    # aiosmtpd's command_call_limit: how many times a session may send each verb (the
    # None key: any other verb); over it, 421 and close. None: no limit.
    command_call_limits: dict[str | None, int] | None = None
    # How many unrecognized commands a session may send; the last one is answered with
    # replies.too_many_unknown_commands and the connection closed (aiosmtpd's BOGUS_LIMIT,
    # 5). None: only the error limits apply.
    max_unknown_commands: int | None = None
    # Commands the application answers itself (an aiosmtpd SMTP subclass's smtp_<VERB>
    # methods): they come as Unknown events, are not counted as unrecognized, and HELP
    # names them.
    extra_commands: frozenset[str] = frozenset()
    # Whether VRFY's argument must be a name, a quoted string or a mailbox (RFC 5321
    # §3.5.3; aiosmtpd's rule); another gets replies.cannot_vrfy. Off: any argument.
    vrfy_needs_name: bool = False
    # Whether STARTTLS needs EHLO first (RFC 3207 offers it in EHLO's reply; aiosmtpd
    # takes it at any time).
    starttls_needs_ehlo: bool = True
    # Whether a handler's reply may carry a code outside RFC 5321 §4.2's grammar (second
    # digit 6 to 9: aiosmtpd passes a hook's 499 or 599 on). Its line is checked as any
    # other (no CR/LF or control characters); off, such a code is the handler's bug.
    any_reply_code: bool = False
    # Whether a message over both max_text_line and max_message_size is refused for the
    # limit it crossed first (aiosmtpd's order); off, for its size whatever came first.
    first_limit_wins: bool = False

    def __setattr__(self, name: str, value: Any) -> None:
        # What fast_start() makes once per configuration is made again after any change
        # (a check of every field per connection would cost what the cache saves).
        self.__dict__.pop("_fast_start", None)
        object.__setattr__(self, name, value)

    def __post_init__(self) -> None:
        if self.max_recipients < 1 or self.max_errors < 1 or self.max_auth_failures < 1:
            raise ValueError("limits must be at least 1")
        if self.soft_error_limit < 1 or self.error_sleep < 0 or self.recipient_overshoot_limit < 0:
            raise ValueError("soft_error_limit must be at least 1, the others not negative")
        if self.bare_newline not in ("reject", "normalize"):
            raise ValueError("bare_newline must be 'reject' or 'normalize'")


# RFC 3463 / RFC 5248 codes for positive replies that came without one.
_POSITIVE_ENHANCED: dict[type, str] = {
    ev.MailFrom: "2.1.0",
    ev.RcptTo: "2.1.5",
    ev.Verify: "2.1.5",
    ev.Auth: "2.7.0",
    ev.AuthLine: "2.7.0",
}


def _default_enhanced(kind: type | None, code: int) -> str | None:
    """The RFC 3463 code to prefix a reply that came without one (RFC 2034 wants one on
    every reply but the greeting, HELO/EHLO and intermediate 334/354 replies); ``kind``
    is the kind of event the reply answers."""
    if code in (334, 354) or kind is ev.Hello:
        return None
    cls = code // 100
    if cls == 2:
        return _POSITIVE_ENHANCED.get(kind, "2.0.0")  # type: ignore[arg-type]
    if cls in (4, 5):
        return f"{cls}.0.0"
    return None


def _fixed_defaults(replies: Replies) -> dict[type, Response]:
    """The default answers that depend on the event's kind only, by kind (made once per
    reply table)."""
    cached = _DEFAULTS_CACHE.get(id(replies))
    if cached is not None and cached[0] is replies:
        return cached[1]
    defaults: dict[type, Response] = {
        ev.MessageEnd: replies.message_accepted,
        ev.MailFrom: replies.ok,
        ev.RcptTo: replies.ok,
        ev.Reset: replies.ok,
        ev.Noop: replies.ok,
        ev.Quit: replies.quit,
        ev.Verify: replies.vrfy,
        ev.Expand: replies.expn,
        ev.StartTLS: replies.starttls_ready,
        ev.Auth: replies.auth_invalid,
        ev.AuthLine: replies.auth_invalid,
    }
    if len(_DEFAULTS_CACHE) > 64:
        _DEFAULTS_CACHE.clear()
    _DEFAULTS_CACHE[id(replies)] = (replies, defaults)
    return defaults


_DEFAULTS_CACHE: dict[int, tuple[Replies, dict[type, Response]]] = {}

# What a connection answers at once (answer_at_once) needs no formatting: the default
# answers that depend on the event's kind only, with their bytes, by kind.
FixedAnswers = dict[type, tuple[Response, bytes]]


class _Tables:
    """What every connection of one configuration and codec shares, made once (and
    again if anything it depends on changes): the reply table with the host name filled
    in, the default answers by kind (formatted too, where a dialect does not reword
    them), and which method takes which kind of codec item."""

    __slots__ = ("answers", "defaults", "fast", "key", "replies", "types")

    def __init__(self, config: ServerConfig, codec: ModuleType) -> None:
        self.key = _tables_key(config, codec)
        self.replies = replies = config.replies.for_host(config.hostname, config.greeting)
        self.defaults = _fixed_defaults(replies)
        self.types = _item_handlers(codec)
        self.answers: FixedAnswers = {}
        self.fast: dict[tuple[Any, ...], dict[str, bytes]] = {}  # fast_path()'s replies
        if config.dialect is None or config.dialect_rewords is not None:
            rewords = config.dialect_rewords or frozenset()
            codes = config.enhanced_status_codes
            for kind, response in self.defaults.items():
                if kind not in rewords and kind not in (ev.Auth, ev.AuthLine):
                    wire = _wire(response, kind, codes, config.any_reply_code, codec, False)
                    self.answers[kind] = (response, wire)


def _tables_key(config: ServerConfig, codec: ModuleType) -> tuple[Any, ...]:
    return (
        config.replies,
        config.hostname,
        config.greeting,
        codec,
        config.enhanced_status_codes,
        config.any_reply_code,
        config.dialect,
        config.dialect_rewords,
    )


def _tables(config: ServerConfig, codec: ModuleType) -> _Tables:
    tables: _Tables | None = config.__dict__.get("_tables")
    if tables is not None:
        k = tables.key
        if (  # by identity, but the strings (a Replies compares field by field)
            k[0] is config.replies
            and k[1] == config.hostname
            and k[2] == config.greeting
            and k[3] is codec
            and k[4] is config.enhanced_status_codes
            and k[5] is config.any_reply_code
            and k[6] is config.dialect
            and k[7] is config.dialect_rewords
        ):
            return tables
    tables = config.__dict__["_tables"] = _Tables(config, codec)
    return tables


def _reader(c: ServerConfig, codec: ModuleType) -> Any:
    """A new ``ServerReader`` under this configuration's limits."""
    return codec.ServerReader(
        max_command_line=c.max_command_line,
        max_auth_line=c.max_auth_line,
        max_text_line=c.max_text_line,
        max_message_size=c.max_message_size,
        bare_newline=c.bare_newline,
        smtputf8=c.smtputf8,
        first_limit_wins=c.first_limit_wins,
    )


def _fast_path_takes(c: ServerConfig) -> bool:
    """Whether the fast path keeps every rule of this configuration: not a dialect's,
    LMTP's, required STARTTLS or AUTH, nor per-verb limits."""
    return (
        c.dialect is None
        and not c.lmtp
        and not c.require_starttls
        and not c.auth_required
        and c.command_call_limits is None
    )


def _new_fast_path(
    c: ServerConfig,
    codec: ModuleType,
    reader: Any,
    data_min_rate: float | None,
    now: float,
    cached: dict[tuple[Any, ...], dict[str, bytes]],
    conn: ServerConnection | None,
) -> ServerFastPath:
    """ServerConnection.fast_path()'s and fast_start()'s, for a configuration the fast
    path takes (``_fast_path_takes``): a ``ServerFastPath`` over ``reader``, with the
    replies of ``conn`` (None: of a new connection of ``c``), kept in ``cached`` (its
    ``_Tables.fast``). Only a session that has read no input gets one, so it is TLS
    exactly when ``c.tls_active`` says."""
    # The replies, formatted once per configuration: by what the EHLO reply says (the
    # configuration may change between connections; the state machine reads it live).
    key = (
        c.tls_active,
        c.pipelining,
        c.max_message_size,
        c.eightbitmime,
        c.smtputf8,
        c.chunking,
        c.dsn,
        c.starttls,
        c.auth_mechanisms,
        c.auth_require_tls,
        c.extra_extensions,
    )
    replies = cached.get(key)
    if replies is None:
        if len(cached) > 8:
            cached.clear()
        replies = cached[key] = (conn or ServerConnection(c, codec=codec))._fast_path_replies()
    return codec.ServerFastPath(  # type: ignore[no-any-return]
        reader,
        **replies,
        max_recipients=c.max_recipients,
        max_junk_commands=c.max_junk_commands,
        strict_pipelining=c.strict_pipelining,
        tls=c.tls_active,
        data_min_rate=data_min_rate,
        now=now,
    )


def _fast_start_made(
    c: ServerConfig, codec: ModuleType, data_min_rate: float | None
) -> tuple[ModuleType, float | None, ServerFastPath | None, bytes]:
    """What fast_start() gives every session of this configuration (kept on it until it
    changes: ServerConfig.__setattr__): ``(codec, data_min_rate, prototype, greeting)``,
    each session's fast path a ``prototype.fresh(now)``; no prototype for the
    configurations the fast path does not take."""
    if not _fast_path_takes(c):
        return codec, data_min_rate, None, b""
    tables = _tables(c, codec)
    prototype = _new_fast_path(c, codec, _reader(c, codec), data_min_rate, 0.0, tables.fast, None)
    # start()'s greeting: never an enhanced code, and no dialect here to reword it.
    greeting = _wire(tables.replies.greeting, None, False, c.any_reply_code, codec, False)
    return codec, data_min_rate, prototype, greeting


# The events whose exchange needs the application (never answered at once).
_APPLICATIONS = frozenset({ev.Auth, ev.AuthLine, ev.StartTLS})

_AUTH = ev.Auth("", None)  # what an AUTH reply answers, for its default enhanced code

# Formatted replies, by (response, enhanced): most replies of a busy server are the same
# few. Bounded, since handlers may put unique text (queue ids) in theirs.
# Keyed by the response object's identity (its dataclass hash is Python code, run on every
# reply otherwise), the kind of event it answers, whether enhanced codes are on, and the
# codec; each entry keeps its response alive, so an identity cannot be reused while cached.
# A dialect makes new (equal) responses for every reply: those are keyed by value instead.
_wire_cache: dict[tuple[Any, type | None, bool, ModuleType], tuple[Response, bytes]] = {}
_WIRE_CACHE_SIZE = 512


def _wire(
    response: Response,
    kind: type | None,
    codes: bool,
    any_code: bool,
    codec: ModuleType,
    by_value: bool,
) -> bytes:
    """A reply's bytes, checked by the codec (code, enhanced code, no CR/LF or other
    control characters in the text), answering an event of ``kind`` (None: none);
    ``codes``: ENHANCEDSTATUSCODES is on; ``any_code`` lets a second digit of 6 to 9
    through; ``by_value``: cached by the response's value, not its identity."""
    key = (response if by_value else id(response), kind, codes, codec)
    cached = _wire_cache.get(key)
    if cached is not None and (by_value or cached[0] is response):
        return cached[1]
    enhanced = response.enhanced
    if not codes:
        enhanced = None
    elif enhanced is None:
        enhanced = _default_enhanced(kind, response.code)
    wire: bytes = codec.format_reply(
        response.code, list(response.lines), enhanced, any_code=any_code
    )
    if len(_wire_cache) >= _WIRE_CACHE_SIZE:
        _wire_cache.clear()
    _wire_cache[key] = (response, wire)
    return wire


class ServerConnection:
    """One SMTP (or LMTP) session, server side, without I/O."""

    # Slots: every command reads a dozen of these, and past 30 attributes an instance's
    # __dict__ loses CPython's fast attribute access (measured: 15% of a transaction).
    # A new piece of state needs its name here.
    __slots__ = (
        "_answers",
        "_at_once",
        "_auth_in_progress",
        "_awaiting",
        "_bdat_failed",
        "_bdat_started",
        "_bdat_total",
        "_calls",
        "_chunk_refusal",
        "_closing",
        "_codec",
        "_defaults",
        "_delay",
        "_eof",
        "_fast_replies",
        "_in_data",
        "_items",
        "_out",
        "_rcpt_overshoot",
        "_reader",
        "_received_any",
        "_started",
        "_types",
        "auth_failures",
        "authenticated",
        "config",
        "errors",
        "hello",
        "hello_name",
        "insecure",
        "junk",
        "mail",
        "recipients",
        "replies",
        "smtputf8",
        "tls",
        "tls_pending",
        "unknown",
        "verb",
    )

    def __init__(
        self, config: ServerConfig | None = None, *, codec: ModuleType | None = None
    ) -> None:
        self.config: ServerConfig = config or ServerConfig()
        self._codec = codec or default_codec.backend
        c = self.config
        tables = _tables(c, self._codec)
        self.replies: Replies = tables.replies
        self._defaults = tables.defaults
        self._answers = tables.answers
        self._types = tables.types
        self._fast_replies = tables.fast
        self._reader = _reader(c, self._codec)
        self._items: deque[Item] = deque()
        self._out: list[bytes] = []
        self._awaiting: Event | None = None
        self._at_once: frozenset[type] = frozenset()  # answer_at_once()
        self._closing = False
        self._eof = False
        # session state
        self.tls: bool = c.tls_active
        self.tls_pending: bool = False
        self.hello: str | None = None  # the verb of the accepted HELO/EHLO/LHLO
        self.hello_name: str | None = None
        self.authenticated: bool = False
        self.errors: int = 0
        self.junk: int = 0  # junk commands since the last message delivered
        self.unknown: int = 0  # unrecognized commands (max_unknown_commands)
        self.auth_failures: int = 0
        self._delay = 0.0  # seconds the client's errors cost it, not yet paid
        self._started = False
        self.verb: str = ""  # of the last command, for the dialect
        self._calls: dict[str, int] = {}  # per verb, when command_call_limits is set
        self.insecure: bool = False  # tls_refused(): only QUIT is answered
        self._received_any = False
        self._auth_in_progress = False
        self._reset_transaction()

    # -- state ---------------------------------------------------------------------------

    def _reset_transaction(self) -> None:
        self.mail: ev.MailFrom | None = None
        self.recipients: list[ev.RcptTo] = []
        self.smtputf8: bool = False  # this transaction declared SMTPUTF8
        self._in_data = False
        self._bdat_total = 0
        self._bdat_started = False
        self._bdat_failed = False  # a chunk was refused: the rest is dropped (until LAST)
        self._chunk_refusal: Response | None = None  # this chunk is being discarded
        self._rcpt_overshoot = 0  # RCPTs refused for max_recipients

    @property
    def esmtp(self) -> bool:
        return self.hello in ("EHLO", "LHLO")

    @property
    def in_transaction(self) -> bool:
        return self.mail is not None

    @property
    def in_bdat(self) -> bool:
        """A BDAT transaction is running or has failed: only BDAT and RSET go on."""
        return self._bdat_started or self._bdat_failed

    @property
    def auth_in_progress(self) -> bool:
        return self._auth_in_progress

    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def awaiting(self) -> Event | None:
        """The event waiting for an answer, if any."""
        return self._awaiting

    def extensions(self) -> list[str]:
        """The EHLO keywords offered now (they depend on TLS and authentication)."""
        c = self.config
        ext: list[str] = []
        if c.pipelining:
            ext.append("PIPELINING")
        if c.max_message_size:
            # No bare SIZE for "no limit": clients read it as a limit of 0 (issue 9).
            ext.append(f"SIZE {c.max_message_size}")
        if c.eightbitmime:
            ext.append("8BITMIME")
        if c.smtputf8:
            ext.append("SMTPUTF8")
        if c.enhanced_status_codes:
            ext.append("ENHANCEDSTATUSCODES")
        if c.chunking:
            ext.append("CHUNKING")
        if c.dsn:
            ext.append("DSN")
        if c.starttls and not self.tls:
            ext.append("STARTTLS")
        if self._auth_offered():
            ext.append("AUTH " + " ".join(c.auth_mechanisms))
        ext.extend(c.extra_extensions)
        ext.append("HELP")
        return ext

    def _auth_offered(self) -> bool:
        # RFC 4954 §4 / checklist B12: no plaintext passwords without TLS by default.
        return bool(self.config.auth_mechanisms) and (self.tls or not self.config.auth_require_tls)

    # -- input ---------------------------------------------------------------------------

    def start(self) -> None:
        """Queue the greeting (220)."""
        self._started = True
        self._send(self.replies.greeting, None, plain=True)

    def refuse_connection(self, response: Response) -> None:
        """Instead of the greeting: refuse the session (``replies.too_many_connections``
        or ``too_many_connections_from_address``) and close."""
        self._started = True
        self._fatal(response)

    def receive_data(self, data: bytes) -> None:
        """Take bytes the client sent; the events they complete come from ``next_event()``."""
        if self._closing:
            return
        if not self._started and data:
            # Checklist B3: a client that talks before the greeting is not a real MTA
            # (Postfix's pregreet test; the greeting may be delayed to catch them).
            self._fatal(self.replies.sync_error)
            return
        if self.tls_pending:
            # Plaintext after our 220 to STARTTLS, before the handshake: never read it.
            self._close()
            return
        if not self._received_any and data:
            self._received_any = True
            if data[0] == 0x16 and not self.tls:
                # A TLS ClientHello on the plaintext port (checklist B10): it will never
                # understand a reply; close at once instead of leaving it to time out.
                self._close()
                return
        self._items.extend(self._reader.feed(data))

    def receive_eof(self) -> None:
        """The client closed its side of the connection."""
        self._eof = True

    def answer_at_once(self, kinds: frozenset[type[Event]]) -> None:
        """Events of these kinds need nothing from the application but to be seen: those
        that wait for an answer get ``default_response()`` as they are handed out, and
        ``next_events()`` goes on past all of them. An application decides this once, for
        the events its handler has no hook for (a sink: nearly all of them), and a read
        of a pipelined group then costs one call instead of one round per command. AUTH's
        and STARTTLS's cannot be in it (the checker, the handshake are the application's)."""
        if not kinds.isdisjoint(_APPLICATIONS):
            raise ValueError("AUTH and STARTTLS need the application")
        self._at_once = kinds

    def next_event(self) -> Event | Sentinel:
        """The next event, NEED_DATA, or CLOSED."""
        return self.next_events(1)[0]

    def next_events(self, limit: int) -> list[Event | Sentinel]:
        """The events the input so far completes, in order, at most ``limit`` of them:
        those of ``answer_at_once()``'s kinds (already answered), then the first of any
        other kind, or NEED_DATA or CLOSED when no more can come now (the list ends with an
        event of those kinds only when it reached the limit)."""
        return self.receive(None, limit)

    def receive(self, data: bytes | None, limit: int) -> list[Event | Sentinel]:
        """``receive_data(data)`` (unless None), then ``next_events(limit)``: what an I/O
        layer does with every read, in one call."""
        if data is not None:
            if self._started and self._received_any and not (self._closing or self.tls_pending):
                self._items.extend(self._reader.feed(data))
            else:  # the first bytes, or bytes that must not be read: its checks
                self.receive_data(data)
        if self._awaiting is not None:
            raise RuntimeError(f"respond to {self._awaiting!r} before asking for the next event")
        events: list[Event | Sentinel] = []
        at_once = self._at_once
        items = self._items
        types = self._types
        while True:
            if self._closing:
                events.append(CLOSED)
                return events
            if limit <= 0:
                return events
            if self._delay:
                delay, self._delay = self._delay, 0.0
                events.append(ev.Delay(delay))
                return events
            if self.tls_pending:
                events.append(NEED_DATA)
                return events
            if not items:
                if self._eof:
                    self._close()
                    events.append(CLOSED)
                else:
                    events.append(NEED_DATA)
                return events
            item = items.popleft()
            event = types[type(item)](self, item)
            if event is None:
                continue
            events.append(event)
            limit -= 1
            kind = type(event)
            if kind not in at_once:
                if event.needs_answer:
                    self._awaiting = event
                return events
            if event.needs_answer:
                self._answer_by_default(event, kind)

    def fast_path(self, *, data_min_rate: float | None, now: float) -> ServerFastPath | None:
        """For an I/O layer whose application answers none of HELO/EHLO, MAIL, RCPT, the
        message, RSET, NOOP and QUIT (a sink), and records nothing of them: the codec's
        ``ServerFastPath`` over this connection's reader, which runs those commands with
        this state machine's replies and limits and stops at anything else; then
        ``take_over()`` goes on here. Call it after ``start()``, before any input; None
        when the session is not open for it (not greeted, closed, input read already) or
        this configuration has rules the fast path does not keep (a dialect, LMTP,
        required STARTTLS or AUTH, per-verb limits). ``data_min_rate`` and ``now``: the
        I/O layer's idle-timeout rule (``ServerFastPath``)."""
        if not self._started or self._closing or self._received_any:
            # The greeting decides (a refused session, a pregreet).
            return None
        c = self.config
        if not _fast_path_takes(c):
            return None
        return _new_fast_path(
            c, self._codec, self._reader, data_min_rate, now, self._fast_replies, self
        )

    @classmethod
    def fast_start(
        cls,
        config: ServerConfig | None = None,
        *,
        codec: ModuleType | None = None,
        data_min_rate: float | None,
        now: float,
    ) -> tuple[ServerFastPath, bytes] | None:
        """A new session on ``fast_path()`` from its first byte, with no ServerConnection
        until one is needed: the fast path and the greeting to send. When it stops,
        ``resume(fast)`` makes the connection that goes on (then ``take_over(fast)``).
        None for the configurations ``fast_path()`` does not take. For the I/O layer
        whose sessions mostly never leave the fast path (one message per connection),
        where the state machine's set-up is most of a session's cost."""
        config = config or ServerConfig()
        codec = codec or default_codec.backend
        made = config.__dict__.get("_fast_start")
        if made is None or made[0] is not codec or made[1] != data_min_rate:
            made = config.__dict__["_fast_start"] = _fast_start_made(config, codec, data_min_rate)
        prototype, greeting = made[2], made[3]
        if prototype is None:
            return None
        return prototype.fresh(now), greeting

    @classmethod
    def resume(
        cls,
        fast: ServerFastPath,
        config: ServerConfig | None = None,
        *,
        codec: ModuleType | None = None,
    ) -> ServerConnection:
        """The connection of a session ``fast_start()`` began (with the same ``config``
        and ``codec``): greeted, reading with ``fast``'s reader; ``take_over(fast)`` then
        adopts where the fast path stopped."""
        conn = cls(config, codec=codec)
        conn._reader = fast.reader
        conn._started = True
        return conn

    def _fast_path_replies(self) -> dict[str, bytes]:
        """The replies of fast_path(), as this state machine gives them."""
        c, answers, r, codec = self.config, self._answers, self.replies, self._codec
        codes, any_code = c.enhanced_status_codes, c.any_reply_code
        ehlo = Response(250, (*r.helo.lines, *self.extensions()), r.helo.enhanced)
        return {
            "hello": _wire(r.helo, ev.Hello, codes, any_code, codec, False),
            "ehlo": _wire(ehlo, ev.Hello, codes, any_code, codec, True),
            "mail": answers[ev.MailFrom][1],
            "rcpt": answers[ev.RcptTo][1],
            "data": _wire(r.data_ready, None, codes, any_code, codec, False),
            "message": answers[ev.MessageEnd][1],
            "reset": answers[ev.Reset][1],
            "noop": answers[ev.Noop][1],
            "quit": answers[ev.Quit][1],
        }

    def take_over(self, fast: ServerFastPath) -> FastPathState:
        """Go on from where ``fast`` (made by ``fast_path()``) stopped: its session state,
        its replies not yet sent and the input it did not take become this connection's.
        Returns that state for the I/O layer's own records (``ServerFastPath.take_over``)."""
        state = fast.take_over()
        hello, name, mail, recipients, in_data, junk, closed, out, items, unread, received = state[
            :11
        ]
        if hello is not None:
            self.hello, self.hello_name = hello, name
        self._reset_transaction()
        if mail is not None:
            self.mail = ev.MailFrom(mail, {})
            self.recipients = [ev.RcptTo(path, {}) for path in recipients]
        self._in_data = in_data
        self.junk = junk
        self._received_any = received
        if out:
            self._out.append(out)
        if closed:
            self._close()  # it answered QUIT
        self._items.extend(items)
        if unread:
            self.receive_data(unread)
        return state

    def data_to_send(self) -> bytes:
        """The bytes to write to the client now (replies, batched); empties the buffer."""
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    # -- answering -----------------------------------------------------------------------

    def respond(
        self, code: int, text: str | list[str] | tuple[str, ...] = "", enhanced: str | None = None
    ) -> None:
        """Answer the waiting event."""
        self.respond_with(R(code, text, enhanced))

    def respond_with(self, response: Response) -> None:
        """Answer the event that is waiting for a reply with ``response``."""
        event = self._awaiting
        if event is None:
            raise RuntimeError("no event is waiting for an answer")
        if type(event) in (ev.Auth, ev.AuthLine):
            self.auth_respond(response)
            return
        self._awaiting = None
        self._send(response, event)
        self._apply(event, response)

    def respond_default(self) -> None:
        """Answer the waiting event the way a server with no opinion would."""
        event = self._awaiting
        if event is None:
            raise RuntimeError("no event is waiting for an answer")
        kind = type(event)
        if kind in (ev.Auth, ev.AuthLine):
            self.auth_respond(self.default_response(event))
            return
        self._awaiting = None  # what respond_with does, one call less on every command
        self._answer_by_default(event, kind)

    def _answer_by_default(self, event: Event, kind: type) -> None:
        """Send ``event``'s default answer and apply it (``kind`` is its type): the bytes
        formatted once per configuration when the answer is fixed. One rule for
        respond_default() and the events answered at once."""
        fixed = self._answers.get(kind)
        if fixed is not None:
            response = fixed[0]
            self._out.append(fixed[1])
        else:
            response = self.default_response(event)
            self._send(response, event)
        self._apply(event, response)

    def default_response(self, event: Event) -> Response:
        """The reply the server gives ``event`` when no hook decides otherwise."""
        fixed = self._defaults.get(type(event))
        if fixed is not None:  # nearly always: one lookup on the hot path
            return fixed
        r = self.replies
        kind = type(event)
        if kind is ev.Hello:
            assert isinstance(event, ev.Hello)
            if event.verb == "HELO":
                return r.helo
            return Response(250, (*r.helo.lines, *event.extensions), r.helo.enhanced)
        if kind is ev.Help:
            return r.help.fill(commands=" ".join(self._commands_supported()))
        if kind is ev.Unknown:
            assert isinstance(event, ev.Unknown)
            return r.unknown_command.fill(verb=event.verb)
        return r.ok

    def respond_lmtp(self, responses: list[Response]) -> None:
        """Answer MessageEnd under LMTP: one reply per accepted recipient (RFC 2033 §4.2)."""
        event = self._awaiting
        if not isinstance(event, ev.MessageEnd):
            raise RuntimeError("respond_lmtp answers MessageEnd only")
        if len(responses) != len(self.recipients):
            raise ValueError(f"LMTP needs {len(self.recipients)} replies, got {len(responses)}")
        self._awaiting = None
        for response in responses:
            self._send(response, event)
        self._reset_transaction()
        if any(r.positive for r in responses):
            self.junk = self.errors = 0  # as for a delivered message (_apply)
        else:
            self._count_error()

    def _apply(self, event: Event, response: Response) -> None:
        """What an answer changes: the state transition of the event it answers."""
        kind = type(event)
        code = response.code
        ok = 200 <= code < 400  # response.positive
        if kind is ev.MailFrom:
            if ok:
                self.mail = event  # type: ignore[assignment]
                self.smtputf8 = "SMTPUTF8" in event.params  # type: ignore[attr-defined]
        elif kind is ev.RcptTo:
            if ok:
                self.recipients.append(event)  # type: ignore[arg-type]
        elif kind is ev.MessageEnd:
            self._reset_transaction()
            if ok:  # a client that delivers mail is forgiven its junk and errors (Postfix)
                self.junk = self.errors = 0
        elif kind is ev.Hello:
            if ok:
                self.hello, self.hello_name = event.verb, event.hostname  # type: ignore[attr-defined]
        elif kind is ev.Quit:
            self._close()
            return
        elif kind is ev.StartTLS:
            if ok:
                self.tls_pending = True  # the reader stays paused until the handshake
            else:
                self._resume(self._reader.expect_command())
        if code >= 400:
            # Every refused command is an error, whoever refused it (Postfix counts the
            # same): a hook's 550s to a directory harvest cost the harvester too.
            self._count_error()

    # -- AUTH ------------------------------------------------------------------------------

    def auth_challenge(self, challenge: str) -> None:
        """Send ``334 challenge`` (already base64) and read the client's answer line."""
        if not isinstance(self._awaiting, (ev.Auth, ev.AuthLine)):
            raise RuntimeError("no AUTH exchange is waiting")
        if not challenge.isascii() or not challenge.isprintable():
            raise ValueError("an AUTH challenge must be base64 text")
        self._awaiting = None
        # RFC 4954 §4: "334" SP [base64] CRLF; the space is there even when it is empty.
        self._out.append(b"334 " + challenge.encode("ascii") + b"\r\n")
        self._resume(self._reader.expect_line())

    def auth_respond(self, response: Response) -> None:
        """Answer the AUTH exchange with a reply by its code: 334 is a challenge, 235 ends
        it with success, anything else with failure."""
        if response.code == 334:
            self.auth_challenge(" ".join(response.lines))
        elif response.code == 235:
            self.auth_succeeded(response)
        else:
            self.auth_failed(response)

    def auth_succeeded(self, response: Response | None = None) -> None:
        """End the AUTH exchange: the client is authenticated (235 unless ``response`` says)."""
        if not self._end_auth():
            return
        self.authenticated = True
        self._send(response or self.replies.auth_succeeded, _AUTH)
        self._resume(self._reader.expect_command())

    def auth_failed(self, response: Response | None = None) -> None:
        """End the exchange with a failure (``replies.auth_invalid`` by default, or
        another entry: ``auth_cancelled``, ``auth_bad_base64``, ``auth_locked_out``...).
        Any failure is an error of the session; a 535 is also a failed login."""
        if not self._end_auth():
            return
        response = response or self.replies.auth_invalid
        if response.code < 400:
            raise ValueError(f"an AUTH failure needs a 4xx or 5xx reply, not {response.code}")
        self._send(response, _AUTH)
        if response.code == 535:
            self.auth_failures += 1
            if self.auth_failures >= self.config.max_auth_failures:
                # RFC 4954 §9 allows dropping after failures, but not before three.
                self._fatal(self.replies.too_many_auth_failures)
                return
        self._count_error()
        if not self._closing:
            self._resume(self._reader.expect_command())

    def _end_auth(self) -> bool:
        if not self._auth_in_progress:
            return False  # the exchange already ended (an overlong line, say)
        self._auth_in_progress = False
        self._awaiting = None
        return True

    # -- TLS and endings -------------------------------------------------------------------

    def tls_established(self) -> None:
        """The STARTTLS handshake finished: forget everything said in plaintext (RFC 3207
        §4.2) and read commands again."""
        if not self.tls_pending:
            raise RuntimeError("no STARTTLS handshake was pending")
        self.tls_pending = False
        self.tls = True
        self.hello = self.hello_name = None
        self.authenticated = False
        self._reset_transaction()
        self._reader.reset()

    def tls_refused(self) -> None:
        """The application refused the TLS session just set up (handle_STARTTLS said
        no): the client may only QUIT; everything else gets 554."""
        self.insecure = True

    def timeout(self) -> None:
        """The idle timer fired: say so and close."""
        self._end(self.replies.timeout)

    def hook_timed_out(self) -> None:
        """The application did not answer in time: say so and close."""
        self._end(self.replies.hook_timeout)

    def internal_error(self) -> None:
        """The application failed in a way that leaves the session unusable: say so and
        close."""
        self._end(self.replies.internal_error)

    def shutdown(self) -> None:
        """The server is stopping: say so (RFC 5321 §3.8: 421, then close), whatever the
        session was doing; a client that has not been greeted is only disconnected."""
        self._end(self.replies.shutting_down if self._started else None)

    def push(self, response: Response) -> None:
        """Queue a reply that answers no event (aiosmtpd's ``push``), exactly as given:
        no enhanced code is added or removed."""
        if not self._closing:
            wire: bytes = self._codec.format_reply(
                response.code,
                list(response.lines),
                response.enhanced,
                any_code=self.config.any_reply_code,
            )
            self._out.append(wire)

    def _end(self, response: Response | None) -> None:
        if not self._closing:
            self._auth_in_progress = False
            if response is not None:
                self._send(response, None)
            self._close()

    def close(self) -> None:
        """Stop: no more events; what is still to send is sent."""
        self._close()

    def _close(self) -> None:
        self._closing = True
        self._items.clear()
        self._awaiting = None

    # -- helpers ---------------------------------------------------------------------------

    def _send(self, response: Response, event: Event | None, *, plain: bool = False) -> None:
        """Queue a reply; ``plain`` (the greeting) never gets an enhanced code."""
        config = self.config
        by_value = False
        if config.dialect is not None:
            said = config.dialect(self, response, event)
            by_value = said is not response  # reworded: a new object every time
            response = said
        self._out.append(
            _wire(
                response,
                None if event is None else type(event),
                config.enhanced_status_codes and not plain,
                config.any_reply_code,
                self._codec,
                by_value,
            )
        )

    def _refuse(self, response: Response, *, error: bool = True) -> None:
        """Answer a command the connection refuses by itself: an error of the session
        unless ``error`` says otherwise."""
        self._send(response, None)
        if error:
            self._count_error()

    def _count_error(self) -> None:
        if self._closing:
            return
        self.errors += 1
        c = self.config
        if self.errors >= c.max_errors:
            self._fatal(self.replies.too_many_errors)
        elif self.errors >= c.soft_error_limit:
            self._delay += c.error_sleep

    def _fatal(self, response: Response) -> None:
        self._send(response, None)
        self._close()

    def _resume(self, items: list[Item]) -> None:
        """Items the reader produced from input it had held back during a pause."""
        self._items.extendleft(reversed(items))

    def _pipelined(self) -> bool:
        return bool(self._items) or self._reader.buffered > 0

    def _commands_supported(self) -> list[str]:
        verbs = ["DATA", "HELP", "MAIL", "NOOP", "QUIT", "RCPT", "RSET", "VRFY", "EXPN"]
        verbs += ["LHLO"] if self.config.lmtp else ["EHLO", "HELO"]
        if self.config.chunking:
            verbs.append("BDAT")
        if self.config.starttls:
            verbs.append("STARTTLS")
        if self.config.auth_mechanisms:
            verbs.append("AUTH")
        verbs.extend(self.config.extra_commands)
        return sorted(set(verbs))

    # -- codec items -----------------------------------------------------------------------

    def _violation(self, item: Violation) -> Event | None:
        response = Response(item.code, (item.text,), item.enhanced)
        self._refuse(response)
        if item.fatal:
            self._close()
        elif self._auth_in_progress:
            # an overlong line in an AUTH exchange ends the exchange
            self._auth_in_progress = False
            self._resume(self._reader.expect_command())
            return ev.AuthAborted(response)
        return None

    def _command(self, cmd: Command) -> Event | None:
        verb = self.verb = cmd.verb
        c = self.config
        if verb == "STARTTLS" and self._pipelined():
            self._fatal(self.replies.starttls_pipelined)  # checklist B5, CVE-2011-0411
            return None
        if (
            c.strict_pipelining
            and (
                verb in SYNC_VERBS
                or (verb == "AUTH" and " " not in cmd.arg)
                # A client that said HELO was not offered PIPELINING: no groups at all
                # (Postfix checks every command of a non-ESMTP session).
                or self.hello == "HELO"
            )
            and (self._items or self._reader.buffered)  # _pipelined(), inline
        ):
            # RFC 2920 §3.1 / checklist B3: nothing may follow these in one group.
            self._fatal(self.replies.sync_error)
            return None
        if verb in JUNK_VERBS:
            self.junk += 1
            if self.junk > c.max_junk_commands:
                self._count_error()  # from here on each one costs an error (Postfix)
                if self._closing:
                    return None
        if self.insecure and verb != "QUIT":
            self._refuse(self.replies.insecure)
            if verb in ("DATA", "AUTH", "STARTTLS"):
                self._resume(self._reader.expect_command())  # the reader paused
            return None
        limits = c.command_call_limits
        if limits is not None:
            calls = self._calls[verb] = self._calls.get(verb, 0) + 1
            if calls > limits.get(verb, limits.get(None, CALL_LIMIT_DEFAULT)):
                self._fatal(self.replies.too_many_calls.fill(verb=verb))
                return None
        if c.require_starttls and not self.tls and verb not in BEFORE_STARTTLS:
            if verb != "BDAT":  # BDAT's chunk must be read: _bdat refuses it
                self._refuse(self.replies.need_starttls)
                if verb in ("DATA", "AUTH"):
                    self._resume(self._reader.expect_command())  # the reader paused
                return None
        handler = _COMMANDS.get(verb)
        if handler is None:
            return self._unknown(cmd)
        event: Event | None = handler(self, cmd)
        return event

    def _unknown(self, cmd: Command) -> Event | None:
        if cmd.verb in HTTP_VERBS:
            self._fatal(self.replies.http_command)
            return None
        limit = self.config.max_unknown_commands
        if limit is not None and cmd.verb not in self.config.extra_commands:
            self.unknown += 1
            if self.unknown >= limit:
                self._fatal(self.replies.too_many_unknown_commands)
                return None
        return ev.Unknown(cmd.verb, cmd.arg)

    def _hello(self, cmd: Command) -> Event | None:
        lmtp = self.config.lmtp
        if (cmd.verb == "LHLO") != lmtp:
            self._refuse(self.replies.unknown_command.fill(verb=cmd.verb))
            return None
        self._reset_transaction()  # RFC 5321 §4.1.4: a new EHLO aborts a transaction
        extensions = () if cmd.verb == "HELO" else tuple(self.extensions())
        return ev.Hello(cmd.verb, cmd.arg, extensions)

    def _session_ready(self) -> Response | None:
        if self.hello is None:
            return self.replies.need_helo
        if self.config.require_starttls and not self.tls:
            return self.replies.need_starttls
        if self.config.auth_required and not self.authenticated:
            return self.replies.need_auth
        return None

    def _mail(self, cmd: Command) -> Event | None:
        params = cmd.params  # each read of a Rust item's field builds a new object
        refusal = self._session_ready()
        if refusal is None and self.mail is not None:
            refusal = self.replies.nested_mail
        if refusal is None and (self._bdat_started or self._bdat_failed):
            refusal = self.replies.mail_after_bdat
        if refusal is None and params and not self.esmtp:
            refusal = self.replies.mail_params_need_ehlo  # RFC 5321 §4.1.1.11: ESMTP only
        if refusal is None and params:
            refusal = self._mail_params(params)
        if refusal is not None:
            self._refuse(refusal)
            return None
        path = cmd.path
        assert path is not None  # the codec refuses a MAIL line without a path
        return ev.MailFrom(path, params)

    def _mail_params(self, params: dict[str, str | None]) -> Response | None:
        c, r, xtext = self.config, self.replies, self._codec.xtext_decode
        for key, value in params.items():
            if key == "SIZE":
                size = rules.size_octets(value)
                if size is None:
                    return r.bad_size
                if c.max_message_size is not None and size > c.max_message_size:
                    return r.message_too_big
            elif key == "BODY" and c.eightbitmime:
                if not rules.body_ok(value):
                    return r.bad_body
            elif key == "SMTPUTF8" and c.smtputf8:
                if not rules.smtputf8_ok(value):
                    return r.bad_smtputf8
            elif key == "RET" and c.dsn:
                if not rules.ret_ok(value):
                    return r.bad_ret
            elif key == "ENVID" and c.dsn:
                if not rules.envid_ok(value, xtext):
                    return r.bad_envid
            elif key == "AUTH":
                # RFC 4954 §5: kept, but it means nothing from an unauthenticated client
                if not rules.auth_ok(value, xtext):
                    return r.bad_auth_param
            else:
                return r.mail_param_unsupported.fill(keyword=key)
        return None

    def _rcpt(self, cmd: Command) -> Event | None:
        r = self.replies
        refusal = self._session_ready()
        if refusal is None and self.mail is None:
            refusal = r.need_mail
        if refusal is None and (self._bdat_started or self._bdat_failed):
            refusal = r.rcpt_after_bdat
        if refusal is not None:
            self._refuse(refusal)
            return None
        path, params = cmd.path, cmd.params
        assert path is not None  # the codec refuses an RCPT line without a path
        if not self.smtputf8 and not path.address.isascii():
            self._refuse(r.need_smtputf8)
            return None
        refusal = None
        if params:
            refusal = self._rcpt_params(params) if self.esmtp else r.rcpt_params_need_ehlo
        if refusal is not None:
            self._refuse(refusal)
            return None
        if len(self.recipients) >= self.config.max_recipients:
            # RFC 5321 §4.5.3.1.10: 452, and the client goes on with the recipients it
            # has. Only RCPTs past the overshoot allowance are errors (Postfix).
            self._rcpt_overshoot += 1
            self._refuse(
                r.too_many_recipients,
                error=self._rcpt_overshoot > self.config.recipient_overshoot_limit,
            )
            return None
        return ev.RcptTo(path, params)

    def _rcpt_params(self, params: dict[str, str | None]) -> Response | None:
        r, xtext = self.replies, self._codec.xtext_decode
        for key, value in params.items():
            if key == "NOTIFY" and self.config.dsn:
                if not rules.notify_ok(value):
                    return r.bad_notify
            elif key == "ORCPT" and self.config.dsn:
                if not rules.orcpt_ok(value, xtext):
                    return r.bad_orcpt
            else:
                return r.rcpt_param_unsupported.fill(keyword=key)
        return None

    def _data(self, cmd: Command) -> Event | None:
        refusal = self._transaction_ready()
        if refusal is not None:
            self._refuse(refusal)
            self._resume(self._reader.expect_command())
            return None
        self._in_data = True
        self._send(self.replies.data_ready, None)
        held = self._reader.expect_data()
        if held:  # _resume(), inline: a client that did not wait for the 354
            self._items.extendleft(reversed(held))
        return None

    def _transaction_ready(self) -> Response | None:
        refusal = self._session_ready()
        if refusal is None and (self._bdat_started or self._bdat_failed):
            refusal = self.replies.data_after_bdat
        if refusal is None and self.mail is None:
            refusal = self.replies.need_mail
        if refusal is None and not self.recipients:
            refusal = self.replies.no_recipients
        return refusal

    def _bdat(self, cmd: Command) -> Event | None:
        # The reader consumes the chunk whatever we decide (checklist B4); here we only
        # decide whether its bytes are content or are dropped, and what to answer after it.
        r = self.replies
        refusal: Response | None = None
        if not self.config.chunking:
            refusal = r.not_implemented
        elif self._bdat_failed:
            refusal = r.bdat_failed
        else:
            refusal = self._session_ready()
            if refusal is None and self.mail is None:
                refusal = r.need_mail
            if refusal is None and not self.recipients:
                refusal = r.no_recipients
            size = cmd.chunk_size
            assert size is not None  # the codec refuses a BDAT line without a size
            if refusal is None and size == 0 and not cmd.last:
                refusal = r.null_bdat
            limit = self.config.max_message_size
            if refusal is None and limit is not None and self._bdat_total + size > limit:
                refusal = r.message_too_big
        self._chunk_refusal = refusal
        if refusal is None:
            self._bdat_started = True
        return None

    def _content(self, item: Data) -> Event | None:
        if self._in_data or (self._bdat_started and self._chunk_refusal is None):
            return ev.Content(item.data)
        return None

    def _data_end(self, item: DataEnd) -> Event | None:
        if self._in_data:
            self._in_data = False
            violation = item.violation
            if violation is not None:
                response = Response(violation.code, (violation.text,), violation.enhanced)
                self._refuse(response)
                self._reset_transaction()
                return ev.MessageAborted(response)
            return ev.MessageEnd(item.size, item.bare_lf, item.bare_cr)
        return self._chunk_end(item)

    def _chunk_end(self, item: DataEnd) -> Event | None:
        refusal = self._chunk_refusal
        self._chunk_refusal = None
        aborted: Event | None = None
        if refusal is None and item.violation is not None:
            v = item.violation
            refusal = Response(v.code, (v.text,), v.enhanced)
        if refusal is not None:
            self._refuse(refusal)
            if self._bdat_started:
                aborted = ev.MessageAborted(refusal)
                self._bdat_started = False
            if self.mail is not None and self.recipients:
                # The message is incomplete now: nothing but BDAT (discarded) and RSET
                # until the LAST chunk, which ends the transaction (Postfix's
                # SMTPD_BDAT_STAT_ERROR; RFC 3030 §3: the client SHOULD send RSET).
                if item.last:
                    self._reset_transaction()
                else:
                    self._bdat_failed = True
            return aborted
        self._bdat_total += item.size
        if not item.last:
            self._send(self.replies.chunk_received.fill(size=str(item.size)), None)
            return None
        total = self._bdat_total
        self._bdat_started = False
        return ev.MessageEnd(total, item.bare_lf, item.bare_cr)

    def _rset(self, cmd: Command) -> Event | None:
        self._reset_transaction()
        return ev.Reset()

    def _noop(self, cmd: Command) -> Event | None:
        return ev.Noop(cmd.arg)

    def _vrfy(self, cmd: Command) -> Event | None:
        if self.config.auth_required and not self.authenticated:
            self._refuse(self.replies.need_auth)  # no address probing before AUTH
            return None
        if self.config.vrfy_needs_name and not rules.query_ok(cmd.arg, self._is_mailbox):
            shown = _CONTROL.sub("?", cmd.arg)
            self._refuse(self.replies.cannot_vrfy.fill(argument=shown))
            return None
        return ev.Verify(cmd.arg)

    def _is_mailbox(self, text: str) -> bool:
        path = text if text.startswith("<") else f"<{text}>"
        try:
            self._codec.parse_path(path, smtputf8=True)
        except ValueError:
            return False
        return True

    def _expn(self, cmd: Command) -> Event | None:
        return ev.Expand(cmd.arg)

    def _help(self, cmd: Command) -> Event | None:
        if self.config.auth_required and not self.authenticated:
            self._refuse(self.replies.need_auth)
            return None
        return ev.Help(cmd.arg)

    def _quit(self, cmd: Command) -> Event | None:
        return ev.Quit()

    def _starttls(self, cmd: Command) -> Event | None:
        r = self.replies
        refusal: Response | None = None
        if not self.config.starttls and not self.tls:
            refusal = r.not_implemented
        elif self.tls:
            refusal = r.tls_active
        elif not self.esmtp and self.config.starttls_needs_ehlo:
            refusal = r.need_ehlo
        if refusal is not None:
            self._refuse(refusal)
            self._resume(self._reader.expect_command())
            return None
        return ev.StartTLS()

    def _auth(self, cmd: Command) -> Event | None:
        mechanism, _, initial = cmd.arg.partition(" ")
        mechanism = mechanism.upper()
        r = self.replies
        refusal: Response | None = None
        if not self.config.auth_mechanisms:
            refusal = r.not_implemented
        elif not self.esmtp:
            refusal = r.need_ehlo
        elif self.config.auth_require_tls and not self.tls:
            refusal = r.need_starttls
        elif self.authenticated:
            refusal = r.already_authenticated
        elif self.mail is not None:
            refusal = r.auth_in_transaction
        elif mechanism not in self.config.auth_mechanisms:
            refusal = r.unknown_mechanism
        if refusal is not None:
            self._refuse(refusal)
            self._resume(self._reader.expect_command())
            return None
        self._auth_in_progress = True
        return ev.Auth(mechanism, initial.strip(" ") or None)

    def _auth_line(self, item: Line) -> Event | None:
        return ev.AuthLine(item.data)


# An item's class picks the method that takes it; that pairing (Command -> _command...)
# is more than a dict's type can say, hence Any for the item here and only here.
ItemHandler = Callable[["ServerConnection", Any], Event | None]
_ITEM_HANDLERS: dict[ModuleType, dict[type, ItemHandler]] = {}


def _item_handlers(codec: ModuleType) -> dict[type, ItemHandler]:
    """Which method takes which kind of codec item, per backend (made once)."""
    handlers = _ITEM_HANDLERS.get(codec)
    if handlers is None:
        handlers = _ITEM_HANDLERS[codec] = {
            codec.Command: ServerConnection._command,
            codec.Violation: ServerConnection._violation,
            codec.Data: ServerConnection._content,
            codec.DataEnd: ServerConnection._data_end,
            codec.Line: ServerConnection._auth_line,
        }
    return handlers


_COMMANDS: dict[str, Callable[[ServerConnection, Command], Event | None]] = {
    "HELO": ServerConnection._hello,
    "EHLO": ServerConnection._hello,
    "LHLO": ServerConnection._hello,
    "MAIL": ServerConnection._mail,
    "RCPT": ServerConnection._rcpt,
    "DATA": ServerConnection._data,
    "BDAT": ServerConnection._bdat,
    "RSET": ServerConnection._rset,
    "NOOP": ServerConnection._noop,
    "VRFY": ServerConnection._vrfy,
    "EXPN": ServerConnection._expn,
    "HELP": ServerConnection._help,
    "QUIT": ServerConnection._quit,
    "STARTTLS": ServerConnection._starttls,
    "AUTH": ServerConnection._auth,
}
