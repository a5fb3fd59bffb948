"""aiosmtpd's ``SMTP`` and ``LMTP``: the protocol of one connection, made per connection
by a controller's ``factory()`` (or by ``loop.create_server(lambda: SMTP(handler))``), with
aiosmtpd's constructor, attributes and override points (``smtp_<VERB>`` methods,
``push()``, ``_create_session()``...).

The engine is ferrosmtp's: each ``SMTP`` is a ``ferrosmtp.server.smtp.SMTP`` connection
on a ``ferrosmtp.Server`` configured with aiosmtpd's defaults and words. That server (the
configuration, the handler's hooks read once, and the limits that span connections:
connections counted, AUTH failures per address) is made once per SMTP class, handler and
arguments, and shared by every connection made with them (``_engine``).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import threading
import warnings
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from ferrosmtp.protocol import events as ev
from ferrosmtp.protocol.events import Response
from ferrosmtp.server import Server as _Server
from ferrosmtp.server.smtp import _HANDLERS
from ferrosmtp.server.smtp import SMTP as _Connection
from ferrosmtp.server.status import parse_status

from .dialect import AIOSMTPD_REPLIES, SYNTAX, Syntax, dialect_for

__all__ = [
    "BOGUS_LIMIT",
    "CALL_LIMIT_DEFAULT",
    "DATA_SIZE_DEFAULT",
    "LMTP",
    "SMTP",
    "TLSSetupException",
    "__ident__",
    "__version__",
    "syntax",
]

__version__ = "1.4.6"  # the aiosmtpd release whose behaviour this module reproduces
__ident__ = f"Python SMTP {__version__}"
DATA_SIZE_DEFAULT = 2**25
CALL_LIMIT_DEFAULT = 20
BOGUS_LIMIT = 5

F = TypeVar("F", bound=Callable[..., Any])


class TLSSetupException(Exception):
    """What ``handle_exception`` receives when a STARTTLS handshake fails (aiosmtpd's);
    the TLS error is its ``__cause__``."""


def syntax(text: str, extended: str | None = None, when: str | None = None) -> Callable[[F], F]:
    """aiosmtpd's decorator: the HELP text of an ``smtp_<VERB>`` method (``extended`` is
    added for ESMTP sessions; ``when`` names an attribute that must be true for HELP to
    list it)."""

    def decorator(f: F) -> F:
        f.__smtp_syntax__ = text  # type: ignore[attr-defined]
        f.__smtp_syntax_extended__ = extended  # type: ignore[attr-defined]
        f.__smtp_syntax_when__ = when  # type: ignore[attr-defined]
        return f

    return decorator


# The events of the commands aiosmtpd implements as smtp_<VERB> methods.
_VERB_OF: dict[type, str] = {
    ev.MailFrom: "MAIL",
    ev.RcptTo: "RCPT",
    ev.MessageEnd: "DATA",
    ev.Reset: "RSET",
    ev.Noop: "NOOP",
    ev.Verify: "VRFY",
    ev.Expand: "EXPN",
    ev.Help: "HELP",
    ev.Quit: "QUIT",
    ev.StartTLS: "STARTTLS",
    ev.Auth: "AUTH",
}
# The commands the state machine knows; a subclass's smtp_<VERB> for any other verb is a
# command of its own (ServerConfig.extra_commands).
_KNOWN_VERBS = frozenset(
    "HELO EHLO LHLO MAIL RCPT DATA BDAT RSET NOOP VRFY EXPN HELP QUIT STARTTLS AUTH".split()
)


def _event_loop() -> asyncio.AbstractEventLoop:
    """The running loop; outside one, the thread's (made if there is none), as aiosmtpd."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return asyncio.get_event_loop()
        except RuntimeError:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            return loop


# -- the engine, one per SMTP class, handler and arguments -----------------------------------

_ENGINES: collections.OrderedDict[Any, _Server] = collections.OrderedDict()
_ENGINES_LOCK = threading.Lock()
_MAX_ENGINES = 64  # an application has a few; a factory making a new handler each time, more
_LAST: dict[type, tuple[Any, tuple[Any, ...], _Server]] = {}  # per class, the last one used


def _frozen(value: Any) -> Any:
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(value)
    return value


# SMTP's arguments, in the order _engine() takes their values.
_OPTIONS = (
    "data_size_limit",
    "enable_SMTPUTF8",
    "decode_data",
    "hostname",
    "ident",
    "tls_context",
    "require_starttls",
    "timeout",
    "auth_required",
    "auth_require_tls",
    "auth_exclude_mechanism",
    "auth_callback",
    "command_call_limit",
    "authenticator",
    "proxy_protocol_timeout",
)


def _engine(cls: type[SMTP], handler: Any, values: tuple[Any, ...]) -> _Server:
    """The ferrosmtp Server the connections of ``cls(handler, ...)`` with these argument
    values (in ``_OPTIONS``' order) run on. The entry holds the handler and the values,
    so their id()s cannot be reused while the entry lives."""
    last = _LAST.get(cls)
    if last is not None and last[0] is handler and last[1] == values:
        return last[2]  # a controller's factory(): the same arguments each connection
    engine = _registered(cls, handler, values)
    _LAST[cls] = (handler, values, engine)
    return engine


def _registered(cls: type[SMTP], handler: Any, values: tuple[Any, ...]) -> _Server:
    try:
        key: Any = (cls, id(handler), tuple(map(_frozen, values)))
        hash(key)
    except TypeError:  # an argument that cannot be compared: a server of its own
        return _make_engine(cls, handler, dict(zip(_OPTIONS, values, strict=True)))
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is not None:
            _ENGINES.move_to_end(key)
            return engine
    engine = _make_engine(cls, handler, dict(zip(_OPTIONS, values, strict=True)))
    with _ENGINES_LOCK:
        engine = _ENGINES.setdefault(key, engine)
        while len(_ENGINES) > _MAX_ENGINES:
            _ENGINES.popitem(last=False)
    return engine


def _make_engine(cls: type[SMTP], handler: Any, options: dict[str, Any]) -> _Server:
    options = dict(options)
    command_call_limit = options.pop("command_call_limit")
    if options["authenticator"] is None and options["auth_callback"] is None:
        # aiosmtpd always offers its built-in PLAIN and LOGIN; without a checker every
        # login fails (its login_always_fail).
        options["auth_callback"] = _login_always_fail
    engine = _Server(
        handler,
        ident=options.pop("ident") or __ident__,
        lmtp=cls._lmtp,
        max_line_length=cls.line_length_limit,
        command_size_limit=cls.command_size_limit,
        enhanced_status_codes=False,
        chunking=False,
        dsn=False,
        **options,
    )
    config = engine._base_config
    config.pipelining = False  # aiosmtpd reads pipelined commands but offers none
    config.replies = AIOSMTPD_REPLIES
    config.dialect = dialect_for(cls._syntax)
    config.dialect_rewords = frozenset({ev.Help})  # the only answer it rewords
    config.max_unknown_commands = BOGUS_LIMIT
    config.starttls_needs_ehlo = False
    config.vrfy_needs_name = True
    config.any_reply_code = True
    config.first_limit_wins = True
    config.extra_commands = frozenset(cls._overrides) - _KNOWN_VERBS
    if command_call_limit is not None:
        if isinstance(command_call_limit, int):
            limits: dict[str | None, int] = {None: command_call_limit}
        else:
            limits = {verb: n for verb, n in command_call_limit.items()}
            limits[None] = command_call_limit.get("*", CALL_LIMIT_DEFAULT)
        config.command_call_limits = limits
    return engine


def _login_always_fail(mechanism: str, login: bytes, password: bytes) -> bool:
    return False


def _check_call_limit(limit: int | dict[str, int]) -> None:
    if isinstance(limit, dict):
        if not all(isinstance(v, int) for v in limit.values()):
            raise TypeError("All command_call_limit values must be int")
    elif not isinstance(limit, int):
        raise TypeError("command_call_limit must be int or Dict[str, int]")


# -- SMTP ---------------------------------------------------------------------------------


class SMTP(_Connection):
    """aiosmtpd's ``SMTP``: the same constructor, defaults, attributes, replies and
    override points, one per connection."""

    command_size_limit = 512
    line_length_limit = 1001
    local_part_limit = 0

    _lmtp = False
    # aiosmtpd's @syntax strings of this class's commands, and the smtp_<VERB> methods a
    # subclass defines (found once per class, by __init_subclass__).
    _syntax: Syntax = SYNTAX
    _overrides: dict[str, str] = {}
    _overridden: frozenset[type[ev.Event]] = frozenset()  # the events of _overrides

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        table = dict(SYNTAX)
        overrides: dict[str, str] = {}
        for name in dir(cls):
            if not name.startswith("smtp_"):
                continue
            verb = name[len("smtp_") :].upper()
            method = getattr(cls, name)
            text = getattr(method, "__smtp_syntax__", None)
            if text is not None:
                table[verb] = (text, getattr(method, "__smtp_syntax_extended__", None) or "")
            if method is not getattr(SMTP, name, None):
                overrides[verb] = name
        cls._syntax = table
        cls._overrides = overrides
        if overrides:
            # Only a class with its own commands pays for looking them up per event.
            cls._dispatch = cls._dispatch_overridable  # type: ignore[method-assign,assignment]
        # The events of the commands its methods answer are not answered at once.
        kinds: set[type[ev.Event]] = set()
        for verb in overrides:
            if verb in ("HELO", "EHLO", "LHLO"):
                kinds.add(ev.Hello)
            elif verb not in _KNOWN_VERBS:
                kinds.add(ev.Unknown)
        kinds.update(kind for kind, verb in _VERB_OF.items() if verb in overrides)
        cls._overridden = frozenset(kinds)

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
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if auth_required and not auth_require_tls:
            warnings.warn(
                "Requiring AUTH while not requiring TLS can lead to security vulnerabilities!",
                UserWarning,
                stacklevel=2,
            )
        if command_call_limit is not None:
            _check_call_limit(command_call_limit)
        engine = _engine(
            type(self),
            handler,
            (
                data_size_limit,
                enable_SMTPUTF8,
                decode_data,
                hostname,
                ident,
                tls_context,
                require_starttls,
                timeout,
                auth_required,
                auth_require_tls,
                auth_exclude_mechanism,
                auth_callback,
                command_call_limit,
                authenticator,
                proxy_protocol_timeout,
            ),
        )
        super().__init__(engine, loop or _event_loop())
        self.__ident__: str = engine.ident
        self.command_call_limit = command_call_limit
        self._proxy_timeout = proxy_protocol_timeout  # aiosmtpd's names, read by its tests
        limits = engine._base_config.command_call_limits
        if limits is not None:
            self._call_limit_default = limits[None]
        self._pushed: list[Response] = []  # continuation lines push()ed by an smtp_ method
        self._answering: ev.Event | None = None  # the event an smtp_ method is answering
        if engine._hooks.ehlo_form == "old":
            warnings.warn(
                "Use the 5-argument handle_EHLO() hook instead of the 4-argument "
                "handle_EHLO() hook; support for the 4-argument handle_EHLO() hook will "
                "be removed in version 2.0",
                DeprecationWarning,
                stacklevel=2,
            )

    @property
    def command_size_limits(self) -> dict[str, int]:
        """aiosmtpd's per-command size limits (a default of ``command_size_limit``). Made
        when first read: its default refers back to this connection, a reference cycle
        that would keep every connection, its buffers included, alive until the cyclic
        garbage collector runs."""
        limits: dict[str, int] | None = self.__dict__.get("_command_size_limits")
        if limits is None:
            limits = collections.defaultdict(lambda: self.command_size_limit)
            self.__dict__["_command_size_limits"] = limits
        return limits

    @command_size_limits.setter
    def command_size_limits(self, limits: dict[str, int]) -> None:
        self.__dict__["_command_size_limits"] = limits

    @property
    def max_command_size_limit(self) -> int:
        return max(self.command_size_limits.values(), default=self.command_size_limit)

    def eof_received(self) -> bool | None:
        """asyncio: the client closed its side; the commands already read are answered,
        then the connection closes (aiosmtpd's answer: False)."""
        super().eof_received()
        return False

    def _tls_setup_error(self, error: Exception) -> Exception:
        failure = TLSSetupException()
        failure.__cause__ = error
        return failure

    # -- smtp_<VERB> methods: a subclass's own commands, and its overrides -------------------

    def _at_once_kinds(self) -> frozenset[type[ev.Event]]:
        """The engine's, but those of the commands this class's own methods answer."""
        kinds = super()._at_once_kinds()
        return kinds - self._overridden if self._overridden else kinds

    def _dispatch_overridable(self, event: ev.Event) -> Awaitable[None] | None:
        """An event, to the subclass's smtp_<VERB> method when it has one for its command
        (the state machine has checked the command already), else as ferrosmtp does."""
        kind = type(event)
        if kind is ev.Unknown:
            verb = event.verb  # type: ignore[attr-defined]
        elif kind is ev.Hello:
            verb = event.verb  # type: ignore[attr-defined]
        else:
            verb = _VERB_OF.get(kind, "")
        name = self._overrides.get(verb)
        if name is None:
            return _Connection._dispatch(self, event)
        self._last_progress = self.loop.time()
        return self._run_override(getattr(self, name), event)

    async def _run_override(self, method: Callable[..., Any], event: ev.Event) -> None:
        conn = self.conn
        assert conn is not None
        self._answering = event
        try:
            await method(_argument(event))
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as error:
            status = await self._handle_exception(error)
            if conn.awaiting is event:
                self._answer(self._response(status))
        finally:
            self._answering = None
            self._pushed = []
        if conn.awaiting is event:  # the method said nothing: the engine's own answer
            await self._default(event)

    async def _default(self, event: ev.Event) -> None:
        """The engine's answer to ``event`` (handler hooks included): what an SMTP
        subclass gets from ``await super().smtp_<VERB>(arg)``."""
        conn = self.conn
        if conn is None or conn.awaiting is not event:
            return  # answered already
        self._answering = None
        step = _HANDLERS[type(event)](self, event)
        if step is not None:
            await step

    def _answer(self, response: Response) -> None:
        conn = self.conn
        assert conn is not None
        if conn.auth_in_progress:
            self._auth_answer(response)
        else:
            conn.respond_with(response)
            self._flush()

    async def push(self, status: str | bytes) -> None:
        """Send a reply (aiosmtpd's ``push``). From an smtp_<VERB> method it answers that
        command (a continuation line, ``250-...``, waits for the last one)."""
        event = self._answering
        conn = self.conn
        if event is None or conn is None or conn.awaiting is not event:
            await super().push(status)
            return
        if isinstance(status, bytes):
            status = status.decode("utf-8", "surrogateescape")
        if status[3:4] == "-":  # one line of several: held until the last
            self._pushed.append(parse_status(status.replace("-", " ", 1), False, any_code=True))
            return
        response = parse_status(status, False, any_code=True)
        if self._pushed:
            lines = [line for r in self._pushed for line in r.lines]
            response = Response(response.code, (*lines, *response.lines), None)
            self._pushed = []
        self._answer(response)

    async def smtp_HELO(self, hostname: str) -> None:
        """HELO: the engine's answer (handle_HELO included); override to change it."""
        await self._default_for("HELO")

    async def smtp_EHLO(self, hostname: str) -> None:
        """EHLO: the engine's answer (handle_EHLO included); override to change it."""
        await self._default_for("EHLO")

    async def smtp_LHLO(self, hostname: str) -> None:
        """LHLO (LMTP): the engine's answer; override to change it."""
        await self._default_for("LHLO")

    async def smtp_MAIL(self, arg: str) -> None:
        """MAIL: the engine's answer (handle_MAIL included); override to change it."""
        await self._default_for("MAIL")

    async def smtp_RCPT(self, arg: str) -> None:
        """RCPT: the engine's answer (handle_RCPT included); override to change it."""
        await self._default_for("RCPT")

    async def smtp_DATA(self, arg: str) -> None:
        """DATA, once the message has arrived: the engine's answer (handle_DATA included)."""
        await self._default_for("DATA")

    async def smtp_RSET(self, arg: str) -> None:
        """RSET: the engine's answer (handle_RSET included); override to change it."""
        await self._default_for("RSET")

    async def smtp_NOOP(self, arg: str) -> None:
        """NOOP: the engine's answer (handle_NOOP included); override to change it."""
        await self._default_for("NOOP")

    async def smtp_VRFY(self, arg: str) -> None:
        """VRFY: the engine's answer (handle_VRFY included); override to change it."""
        await self._default_for("VRFY")

    async def smtp_HELP(self, arg: str) -> None:
        """HELP: the engine's answer (this class's commands listed); override to change it."""
        await self._default_for("HELP")

    async def smtp_QUIT(self, arg: str) -> None:
        """QUIT: the engine's answer (handle_QUIT included); override to change it."""
        await self._default_for("QUIT")

    async def smtp_STARTTLS(self, arg: str) -> None:
        """STARTTLS: the engine's answer and handshake; override to change it."""
        await self._default_for("STARTTLS")

    async def smtp_AUTH(self, arg: str) -> None:
        """AUTH: the engine's exchange (handle_AUTH, auth_<MECH>); override to change it."""
        await self._default_for("AUTH")

    async def _default_for(self, verb: str) -> None:
        event = self._answering
        if event is None:
            raise RuntimeError(f"smtp_{verb}() answers a {verb} command the client sent")
        await self._default(event)


def _argument(event: ev.Event) -> str | None:
    """The command's argument as aiosmtpd hands it to smtp_<VERB> (None when empty)."""
    for name in ("arg", "hostname"):
        value = getattr(event, name, None)
        if isinstance(value, str):
            return value or None
    return None


class LMTP(SMTP):
    """aiosmtpd's ``LMTP``: LHLO instead of HELO and EHLO (RFC 2033)."""

    _lmtp = True
