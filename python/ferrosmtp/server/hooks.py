"""The handler's hooks: found once by name, then called for each event of a connection.

``HookCalls`` answers the events of the mail transaction (HELO/EHLO, MAIL, RCPT, the
message, RSET and the simple commands) with the handler's hook when it has one, and with
ServerConnection's default reply when it does not.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import warnings
from collections.abc import Awaitable, Callable
from time import monotonic
from typing import Any

from ferrosmtp.protocol import events as ev
from ferrosmtp.protocol.events import Response
from ferrosmtp.server.base import ConnectionBase
from ferrosmtp.server.peers import printable
from ferrosmtp.server.status import parse_status, status_lines
from ferrosmtp.server.values import Envelope, is_missing

__all__ = ["FAST_KINDS", "HookCalls", "Hooks"]

log: logging.Logger = logging.getLogger("ferrosmtp.server")


class Hooks:
    """The hooks of one handler, found once by name (aiosmtpd's discovery rules)."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.by_name: dict[str, Callable[..., Any]] = {}
        for name in dir(handler):
            if name.startswith("handle_"):
                value = getattr(handler, name, None)
                if callable(value):
                    self.by_name[name[len("handle_") :]] = value
        self.ehlo_form: str | None = None
        ehlo = self.by_name.get("EHLO")
        if ehlo is not None:
            arity = len(inspect.signature(ehlo).parameters)
            if arity == 4:
                self.ehlo_form = "old"
            elif arity == 5:
                self.ehlo_form = "new"
            else:
                raise RuntimeError("Unsupported EHLO Hook")

    def get(self, name: str) -> Callable[..., Any] | None:
        """The handler's hook for ``name`` (``"DATA"`` for ``handle_DATA``), or None."""
        return self.by_name.get(name)

    def at_once(self, *, lmtp: bool, strict_ascii: bool) -> frozenset[type[ev.Event]]:
        """The events this handler has no say in (no hook is awaited for them, and no
        reply but the connection's default is possible): answered by the connection as
        it hands them out (ServerConnection.answer_at_once), recorded here after.
        ``strict_ascii``: decode_data without SMTPUTF8, where a message that is not
        ASCII gets a refusal of this layer's."""
        has = self.by_name.__contains__
        # A streaming handler is told when a message is dropped (HELO, RSET, an aborted
        # message), which it may await.
        told = has("DATA_CHUNK") and has("DATA_ABORT")
        kinds: set[type[ev.Event]] = {ev.Unknown}
        for kind, name in _SIMPLE.items():
            if not has(name):
                kinds.add(kind)
        if not (has("HELO") or has("EHLO") or told):
            kinds.add(ev.Hello)
        if not (has("RSET") or told):
            kinds.add(ev.Reset)
        if not told:
            kinds.add(ev.MessageAborted)
        if not has("DATA_CHUNK"):
            kinds.add(ev.Content)
            ends_quietly = not (has("DATA") or hasattr(self.handler, "process_message"))
            if ends_quietly and not lmtp and not strict_ascii:
                kinds.add(ev.MessageEnd)
        return frozenset(kinds)


# The events ServerConnection.fast_path answers: a handler with no say in any of them (all
# in Hooks.at_once) lets the connection run them without this layer.
FAST_KINDS = frozenset(
    {ev.Hello, ev.MailFrom, ev.RcptTo, ev.Content, ev.MessageEnd, ev.Reset, ev.Noop, ev.Quit}
)


# The events whose only hook is the one of their name.
_SIMPLE: dict[type[ev.Event], str] = {
    ev.MailFrom: "MAIL",
    ev.RcptTo: "RCPT",
    ev.Noop: "NOOP",
    ev.Verify: "VRFY",
    ev.Expand: "EXPN",
    ev.Help: "HELP",
    ev.Quit: "QUIT",
}


class HookCalls(ConnectionBase):
    """The transaction's events, answered through the handler's hooks."""

    envelope: Envelope | None

    def _simple(self, name: str, *args: Any) -> Awaitable[None] | None:
        hook = self._hooks.by_name.get(name)
        if hook is None:
            self.conn.respond_default()  # type: ignore[union-attr]
            return None
        return self._hooked(hook, *args)

    def _hooked(self, hook: Callable[..., Any], *args: Any) -> Awaitable[None] | None:
        """Answer with the hook's reply. A hook that is a plain function (ferrosmtp's
        own handlers' policy checks) is answered at once, with no task: only what must
        be awaited, or an exception to report, is (``_call``'s rules either way)."""
        result, error = self._invoke(hook, *args)
        if error is not None or inspect.isawaitable(result):
            return self._respond_later(result, error)
        self._respond(result)
        return None

    async def _respond_later(self, result: Any, error: Exception | None) -> None:
        self._respond(await self._outcome(result, error))

    def _on_hello(self, event: ev.Hello) -> Awaitable[None] | None:
        aborted = self._abort_message()
        if aborted is not None:
            return self._sequence(aborted, self._on_hello(event))
        hook = self._hooks.by_name.get("HELO" if event.verb == "HELO" else "EHLO")
        if hook is None:
            self._hello_seen(event)
            self.conn.respond_default()  # type: ignore[union-attr]
            return None
        self.envelope = self._create_envelope()
        return self._hello_hook(hook, event)

    def _hello_seen(self, event: ev.Hello) -> None:
        """HELO/EHLO without a hook: a new transaction, and the client's name."""
        self._abort_message()  # nothing to await: the handler is not told (at_once)
        self.envelope = self._create_envelope()
        session = self.session
        assert session is not None
        session.host_name = event.hostname
        session.extended_smtp = event.verb != "HELO"

    async def _hello_hook(self, hook: Callable[..., Any], event: ev.Hello) -> None:
        session = self.session
        assert session is not None and self.conn is not None
        if event.verb == "HELO":
            status = await self._call(hook, event.hostname)
            if is_missing(status):
                session.host_name = event.hostname
        else:
            session.extended_smtp = True
            ours = self.conn.default_response(event)  # the greeting line and extensions
            if self._hooks.ehlo_form == "new":
                status = await self._call(hook, event.hostname, status_lines(ours))
                if isinstance(status, (list, tuple)):
                    status = "\r\n".join(str(s) for s in status)
            else:  # the deprecated form: our lines, then whatever the hook says
                said = await self._call(hook, event.hostname)
                said_response = parse_status(said) if isinstance(said, (str, bytes)) else None
                if said_response is not None and said_response.code == 250:
                    status = Response(250, (*ours.lines[:-1], *said_response.lines), None)
                else:
                    status = said
        self._respond(status)
        if self.conn.hello is not None and session.host_name is None:
            session.host_name = event.hostname

    def _on_mail(self, event: ev.MailFrom) -> Awaitable[None] | None:
        hook = self._hooks.by_name.get("MAIL")
        if hook is None:
            self._mail_seen(event)
            self.conn.respond_default()  # type: ignore[union-attr]
            return None
        envelope = self.envelope
        assert envelope is not None
        params = event.params
        envelope.smtp_utf8 = "SMTPUTF8" in params
        envelope.mail_params = dict(params)
        address = "<>" if event.path.is_null else event.path.address
        return self._hooked(hook, address, _options(params))

    def _mail_seen(self, event: ev.MailFrom) -> None:
        """MAIL without a hook: the envelope takes the sender as accepted."""
        envelope = self.envelope
        assert envelope is not None
        params = event.params
        path = event.path
        envelope.mail_from = "<>" if path.is_null else path.address
        if params:
            envelope.smtp_utf8 = "SMTPUTF8" in params
            envelope.mail_params = dict(params)
            envelope.mail_options.extend(_options(params))
        else:  # the usual MAIL: nothing to copy
            envelope.smtp_utf8 = False
            envelope.mail_params = {}

    def _on_rcpt(self, event: ev.RcptTo) -> Awaitable[None] | None:
        hook = self._hooks.by_name.get("RCPT")
        if hook is None:
            self._rcpt_seen(event)
            self.conn.respond_default()  # type: ignore[union-attr]
            return None
        envelope = self.envelope
        assert envelope is not None
        address = event.path.address
        envelope.rcpt_params[address] = dict(event.params)
        return self._hooked(hook, address, _options(event.params))

    def _rcpt_seen(self, event: ev.RcptTo) -> None:
        """RCPT without a hook: the envelope takes the recipient as accepted."""
        envelope = self.envelope
        assert envelope is not None
        params = event.params
        address = event.path.address
        envelope.rcpt_tos.append(address)
        envelope.rcpt_params[address] = dict(params)
        if params:
            envelope.rcpt_options.extend(_options(params))

    def _on_content(self, event: ev.Content) -> Awaitable[None] | None:
        hook = self._hooks.by_name.get("DATA_CHUNK")
        if hook is None:
            self._content_seen(event)
            return None
        self._message_open = True
        if self._server.data_min_rate:
            self._content_progress(len(event.data))
        return self._chunk_hook(hook, event.data)

    def _content_seen(self, event: ev.Content) -> None:
        """Message content nobody streams: kept if a DATA hook will read it."""
        self._message_open = True
        if self._server.data_min_rate:
            self._content_progress(len(event.data))
        if self._server._reads_content:
            self._chunks.append(event.data)

    def _content_progress(self, size: int) -> None:
        # Checklist B9: message content counts as progress only at the minimum rate, so
        # a DATA trickled slower than that is cut off by the idle timeout.
        rate = self._server.data_min_rate
        assert rate
        now = monotonic()
        if self._data_started is None:
            self._data_started, self._data_bytes = now, 0
        self._data_bytes += size
        self._last_progress = min(now, self._data_started + self._data_bytes / rate)

    def _abort_message(self) -> Awaitable[None] | None:
        """Drop a message that will not complete; a streaming handler cleans up."""
        self._chunks = []
        self._data_started = None
        self.__dict__.pop("_chunk_error", None)
        if not self._message_open:
            return None
        self._message_open = False
        hook = self._hooks.by_name.get("DATA_ABORT")
        if hook is None or self._hooks.by_name.get("DATA_CHUNK") is None:
            return None
        return self._abort_hook(hook, self.envelope)

    async def _abort_hook(self, hook: Callable[..., Any], envelope: Envelope | None) -> None:
        try:
            result = hook(self, self.session, envelope)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("%s handle_DATA_ABORT failed", self._peer())

    def _chunk_hook(self, hook: Callable[..., Any], data: bytes) -> Awaitable[None] | None:
        """Hand ``data`` to the hook; a task only when it returns something to await
        or raises (as ``_hooked``)."""
        result, error = self._invoke(hook, data)
        if error is not None:
            return self._chunk_failed(error)
        if inspect.isawaitable(result):
            return self._chunk_awaited(result)
        return None

    async def _chunk_awaited(self, result: Awaitable[Any]) -> None:
        try:
            await result
        except asyncio.CancelledError:
            raise
        except Exception as error:
            await self._chunk_failed(error)

    async def _chunk_failed(self, error: Exception) -> None:
        # Remembered and answered at the end of the message; the handler cleans up
        # what it stored so far now (a half-written file, say).
        self._chunk_error = error
        abort = self._hooks.by_name.get("DATA_ABORT")
        if abort is not None:
            await self._abort_hook(abort, self.envelope)

    def _on_message_end(self, event: ev.MessageEnd) -> Awaitable[None] | None:
        assert self.conn is not None
        if not self._message_content():
            self._end_message(self.conn.replies.strict_ascii, event)
            return None
        hook = self._hooks.by_name.get("DATA")
        legacy = getattr(self.event_handler, "process_message", None) if hook is None else None
        if hook is None and legacy is None and not hasattr(self, "_chunk_error"):
            self._end_message(None, event)
            return None
        return self._message_hook(hook, legacy, event)

    def _message_content(self) -> bool:
        """The message's content into the envelope (none when it was streamed); False
        when decode_data without SMTPUTF8 finds it is not ASCII."""
        envelope = self.envelope
        assert envelope is not None
        self._message_open = False
        self._data_started = None
        streamed = self._hooks.by_name.get("DATA_CHUNK") is not None
        content = b"".join(self._chunks)
        self._chunks = []
        envelope.original_content = None if streamed else content
        envelope.content = None if streamed else content
        if self._server.decode_data and not streamed:
            if self.enable_SMTPUTF8:
                envelope.content = content.decode("utf-8", errors="surrogateescape")
            else:
                try:
                    envelope.content = content.decode("ascii")
                except UnicodeDecodeError:
                    return False
        return True

    def _message_seen(self, event: ev.MessageEnd) -> None:
        """The end of a message nobody reads, answered at once (no DATA hook): what
        _message_content and _message_done do, for a handler that neither streams nor
        has a DATA hook (Hooks.at_once), in one call."""
        self._message_open = False
        if self._data_started is not None:
            self._data_started = None
            self._last_progress = monotonic()  # the end is progress, at any rate
        envelope = self.envelope
        assert envelope is not None
        chunks = self._chunks
        content = b"".join(chunks) if chunks else b""
        chunks.clear()
        envelope.original_content = envelope.content = content
        if self._server.decode_data:  # with SMTPUTF8 (at_once): never refused
            envelope.content = content.decode("utf-8", errors="surrogateescape")
        if log.isEnabledFor(logging.INFO):
            self._message_logged(event)
        self.envelope = self._create_envelope()

    async def _message_hook(
        self, hook: Callable[..., Any] | None, legacy: Any, event: ev.MessageEnd
    ) -> None:
        chunk_error = self.__dict__.pop("_chunk_error", None)
        if chunk_error is not None:
            status: Any = await self._handle_exception(chunk_error)
        elif hook is not None:
            status = await self._call(hook)
        else:
            session, envelope = self.session, self.envelope
            assert session is not None and envelope is not None
            # aiosmtpd's pre-1.0 API, kept working; warned as aiosmtpd does.
            warnings.warn(
                "Use handler.handle_DATA() instead of .process_message()",
                DeprecationWarning,
                stacklevel=1,
            )
            try:
                status = legacy(
                    session.peer, envelope.mail_from, envelope.rcpt_tos, envelope.content
                )
                if inspect.isawaitable(status):
                    status = await status
            except ConnectionResetError:
                raise  # dropped, as from any hook
            except Exception as error:
                status = await self._handle_exception(error)
        self._end_message(status, event)

    def _end_message(self, status: Any, event: ev.MessageEnd) -> None:
        conn = self.conn
        assert conn is not None
        if self._server.lmtp and isinstance(status, (list, tuple)):
            conn.respond_lmtp([self._lmtp_response(s, event) for s in status])
        elif self._server.lmtp:
            response = self._lmtp_response(status, event)
            conn.respond_lmtp([response] * len(conn.recipients))
        else:
            self._respond(status)
        self._message_done(event)

    def _message_done(self, event: ev.MessageEnd) -> None:
        """A message was answered: logged, and the next transaction's envelope."""
        if log.isEnabledFor(logging.INFO):
            self._message_logged(event)
        self.envelope = self._create_envelope()

    def _message_logged(self, event: ev.MessageEnd) -> None:
        envelope = self.envelope
        assert envelope is not None
        log.info(
            "%s message from=<%s> rcpts=%d size=%d",
            self._peer(),
            printable(envelope.mail_from or ""),
            len(envelope.rcpt_tos),
            event.size,
        )

    def _lmtp_response(self, status: Any, event: ev.MessageEnd) -> Response:
        assert self.conn is not None
        if is_missing(status) or status is None:
            return self.conn.default_response(event)
        return self._response(status)

    def _on_message_aborted(self, event: ev.MessageAborted) -> Awaitable[None] | None:
        log.info("%s message refused: %s", self._peer(), event.response)
        step = self._abort_message()
        self.envelope = self._create_envelope()
        return step

    def _on_reset(self, event: ev.Reset) -> Awaitable[None] | None:
        aborted = self._abort_message()
        self.envelope = self._create_envelope()
        step = self._simple("RSET")
        if aborted is None:
            return step
        return self._sequence(aborted, step)

    def _reset_seen(self, event: ev.Reset) -> None:
        """RSET without a hook: a new transaction."""
        self._abort_message()  # nothing to await: the handler is not told (at_once)
        self.envelope = self._create_envelope()

    async def _sequence(self, *steps: Awaitable[None] | None) -> None:
        for step in steps:
            if step is not None:
                await step

    def _on_noop(self, event: ev.Noop) -> Awaitable[None] | None:
        return self._simple("NOOP", event.arg)

    def _on_verify(self, event: ev.Verify) -> Awaitable[None] | None:
        return self._simple("VRFY", event.arg)

    def _on_expand(self, event: ev.Expand) -> Awaitable[None] | None:
        return self._simple("EXPN", event.arg)

    def _on_help(self, event: ev.Help) -> Awaitable[None] | None:
        return self._simple("HELP", event.arg)

    def _on_quit(self, event: ev.Quit) -> Awaitable[None] | None:
        return self._simple("QUIT")

    def _on_unknown(self, event: ev.Unknown) -> Awaitable[None] | None:
        self.conn.respond_default()  # type: ignore[union-attr]
        return None

    def _seen(self, event: ev.Event) -> None:
        """An event answered at once that changes nothing here (NOOP, QUIT...)."""


def _options(params: dict[str, str | None]) -> list[str]:
    """ESMTP parameters as aiosmtpd's ``mail_options``/``rcpt_options`` list them."""
    return [(k if v is None else f"{k}={v}").upper() for k, v in params.items()]


# What records each kind of event answered at once (Hooks.at_once), in place of its
# handler method.
SEEN: dict[type, Callable[[Any, Any], object]] = {
    ev.Hello: HookCalls._hello_seen,
    ev.MailFrom: HookCalls._mail_seen,
    ev.RcptTo: HookCalls._rcpt_seen,
    ev.Content: HookCalls._content_seen,
    ev.MessageEnd: HookCalls._message_seen,
    ev.MessageAborted: HookCalls._on_message_aborted,
    ev.Reset: HookCalls._reset_seen,
    ev.Noop: HookCalls._seen,
    ev.Verify: HookCalls._seen,
    ev.Expand: HookCalls._seen,
    ev.Help: HookCalls._seen,
    ev.Quit: HookCalls._seen,
    ev.Unknown: HookCalls._seen,
}
