"""The part of a server session that needs nothing from the application, run without it.

``ServerConnection`` (protocol/server.py) is the one authority on what a server answers;
this is its hot loop for the case where the application answers no event itself (a sink:
no hook for HELO/EHLO, MAIL, RCPT, the message, RSET, NOOP or QUIT). It takes only what
that state machine would accept and answer by default, with the same replies, and stops at
the first item it does not take, before changing anything for it: every refusal, limit and
other command stays the state machine's, which then goes on from the state handed back
(``take_over``). The differential tests hold a connection run this way to the same bytes
as one run by the state machine alone.
"""

from __future__ import annotations

from collections import deque

from ferrosmtp._pure.address import Path
from ferrosmtp._pure.command import Command
from ferrosmtp._pure.framing import Data, DataEnd, Item, ServerReader

# RFC 2920 §3.1: commands that end a pipelined group (the state machine's SYNC_VERBS, of
# the verbs taken here).
_SYNC = frozenset({"EHLO", "HELO", "DATA", "NOOP"})
_JUNK = frozenset({"RSET", "NOOP"})  # Postfix's junk commands, of the verbs taken here

FastPathState = tuple[
    str | None,  # hello: the verb of the accepted HELO/EHLO
    str | None,  # hello_name
    Path | None,  # mail: the transaction's reverse-path
    list[Path],  # recipients
    bool,  # in_data: reading message content
    int,  # junk: RSET/NOOP since the last message
    bool,  # closed: it answered QUIT
    bytes,  # replies given and not yet returned
    list[Item],  # items read and not taken, in order
    bytes,  # input given to receive() and not fed to the reader
    bool,  # received_any: input was fed
    float,  # last_progress
    float | None,  # data_started: when this message's content began (data_min_rate)
    int,  # data_bytes: content read since then
]


class ServerFastPath:
    """The commands of a server session that need nothing from the application, run
    without it: a sink's whole mail transaction.

    It feeds the session's ``reader`` and takes HELO and EHLO, MAIL and RCPT without
    parameters, DATA and its message, RSET, NOOP and QUIT, answering each with the bytes
    given for it (``hello``, ``ehlo``, ``mail``, ``rcpt``, ``data``, ``message``,
    ``reset``, ``noop``, ``quit``) as the server's state machine would when the
    application answers nothing, under the same limits (``max_recipients``,
    ``max_junk_commands``, ``strict_pipelining``). It stops after QUIT, and at the first
    item it does not take (another command, anything refused, a violation, a limit, the
    first bytes of a TLS handshake on a connection that is not ``tls``) before changing
    anything for it: ``receive()`` then returns None and ``take_over()`` hands the session
    back. ``now`` is the time of each read (``time.monotonic()``): ``last_progress`` is
    when the client last completed something, message content counting at
    ``data_min_rate`` octets a second (None: any).
    """

    def __init__(
        self,
        reader: ServerReader,
        *,
        hello: bytes,
        ehlo: bytes,
        mail: bytes,
        rcpt: bytes,
        data: bytes,
        message: bytes,
        reset: bytes,
        noop: bytes,
        quit: bytes,
        max_recipients: int,
        max_junk_commands: int,
        strict_pipelining: bool,
        tls: bool,
        data_min_rate: float | None,
        now: float,
    ) -> None:
        if not isinstance(reader, ServerReader):
            raise TypeError("reader must be a ServerReader")
        self._reader = reader
        self._replies = (hello, ehlo, mail, rcpt, data, message, reset, noop, quit)
        self._max_recipients = max_recipients
        self._max_junk = max_junk_commands
        self._strict = strict_pipelining
        self._tls = tls
        self._rate = data_min_rate
        self._hello: str | None = None
        self._hello_name: str | None = None
        self._mail: Path | None = None
        self._recipients: list[Path] = []
        self._in_data = False
        self._junk = 0
        self._closed = False
        self._out: list[bytes] = []
        self._items: deque[Item] = deque()
        self._unread = b""
        self._received_any = False
        self._last_progress = now
        self._data_started: float | None = None
        self._data_bytes = 0
        self._stopped = False

    def fresh(self, now: float) -> ServerFastPath:
        """A new session's fast path, read at ``now``, as if made with this one's arguments
        (its replies and limits, and a new reader with its reader's limits), with none of
        its state: one configuration's fast path is made once, then copied per connection."""
        r = self._reader
        reader = ServerReader(
            max_command_line=r.max_command_line,
            max_auth_line=r.max_auth_line,
            max_text_line=r.max_text_line,
            max_message_size=r.max_message_size,
            bare_newline=r.bare_newline,
            smtputf8=r.smtputf8,
            max_buffer=r.max_buffer,
            first_limit_wins=r.first_limit_wins,
        )
        hello, ehlo, mail, rcpt, data, message, reset, noop, quit = self._replies
        return ServerFastPath(
            reader,
            hello=hello,
            ehlo=ehlo,
            mail=mail,
            rcpt=rcpt,
            data=data,
            message=message,
            reset=reset,
            noop=noop,
            quit=quit,
            max_recipients=self._max_recipients,
            max_junk_commands=self._max_junk,
            strict_pipelining=self._strict,
            tls=self._tls,
            data_min_rate=self._rate,
            now=now,
        )

    @property
    def last_progress(self) -> float:
        """When the client last completed something (a ``time.monotonic()`` value)."""
        return self._last_progress

    @property
    def closed(self) -> bool:
        """It answered QUIT: the session is over (its 221 comes with ``take_over()``)."""
        return self._closed

    @property
    def reader(self) -> ServerReader:
        """The session's reader, which it feeds."""
        return self._reader

    def receive(self, data: bytes, limit: int, now: float) -> bytes | None:
        """Feed ``data`` (read at ``now``) and answer what it completes, at most ``limit``
        items: the replies to write, or None when it stopped (then ``take_over()``)."""
        if self._stopped:
            raise RuntimeError("the fast path has stopped: take_over()")
        if not self._received_any and data:
            if data[0] == 0x16 and not self._tls:
                # A TLS ClientHello on the plaintext port: the state machine closes.
                self._unread = bytes(data)
                self._stopped = True
                return None
            self._received_any = True
        items = self._items
        items.extend(self._reader.feed(data))
        out = self._out
        first = True  # no event yet in this read
        while items:
            item = items[0]
            kind = type(item)
            if limit <= 0:
                taken = None
            elif kind is Command:
                taken = self._command(item)  # type: ignore[arg-type]
            elif kind is Data:
                taken = self._in_data or None
            elif kind is DataEnd:
                taken = self._data_end(item)  # type: ignore[arg-type]
            else:
                taken = None
            if taken is not None:
                items.popleft()
                limit -= 1
            if taken is None or self._closed:  # the state machine goes on (QUIT: closes)
                self._stopped = True
                return None
            if taken:
                if first:
                    # The server marks progress once per read that yields an event, then
                    # records the events in order: content at the rate, the end at once.
                    first = False
                    self._last_progress = now
                if kind is Data:
                    self._content_progress(len(item.data), now)  # type: ignore[union-attr]
                elif kind is DataEnd and self._data_started is not None:
                    self._data_started = None
                    self._last_progress = now
        result = b"".join(out)
        out.clear()
        return result

    def take_over(self) -> FastPathState:
        """The session as it stands, for the state machine to go on from: ``(hello,
        hello_name, mail, recipients, in_data, junk, closed, replies, items, unread,
        received_any, last_progress, data_started, data_bytes)``; the fast path is done."""
        self._stopped = True
        state: FastPathState = (
            self._hello,
            self._hello_name,
            self._mail,
            list(self._recipients),
            self._in_data,
            self._junk,
            self._closed,
            b"".join(self._out),
            list(self._items),
            self._unread,
            self._received_any,
            self._last_progress,
            self._data_started,
            self._data_bytes,
        )
        self._out.clear()
        self._items.clear()
        self._unread = b""
        return state

    # -- one item each: None to stop (nothing changed), else whether it was an event ------

    def _command(self, cmd: Command) -> bool | None:
        verb = cmd.verb
        pipelined = len(self._items) > 1 or self._reader.buffered > 0
        if self._strict and pipelined and (verb in _SYNC or self._hello == "HELO"):
            return None  # the state machine refuses the group
        if verb in _JUNK and self._junk + 1 > self._max_junk:
            return None  # it counts an error
        hello, ehlo, mail, rcpt, data, _message, reset, noop, quit = self._replies
        if verb == "MAIL":
            if self._hello is None or self._mail is not None or cmd.params:
                return None
            assert cmd.path is not None
            self._mail = cmd.path
            self._out.append(mail)
            return True
        if verb == "RCPT":
            path = cmd.path
            if self._mail is None or cmd.params or path is None:
                return None
            if not path.address.isascii() or len(self._recipients) >= self._max_recipients:
                return None
            self._recipients.append(path)
            self._out.append(rcpt)
            return True
        if verb == "DATA":
            if self._mail is None or not self._recipients:
                return None
            self._in_data = True
            self._out.append(data)
            # The reader paused after DATA: nothing follows it in the deque yet, so what it
            # held back comes right after it.
            self._items.extend(self._reader.expect_data())
            return False  # DATA is no event: the 354 is the connection's own
        if verb in ("HELO", "EHLO"):
            self._hello, self._hello_name = verb, cmd.arg
            self._reset()
            self._out.append(hello if verb == "HELO" else ehlo)
            return True
        if verb == "RSET":
            self._junk += 1
            self._reset()
            self._out.append(reset)
            return True
        if verb == "NOOP":
            self._junk += 1
            self._out.append(noop)
            return True
        if verb == "QUIT":
            self._closed = True
            self._out.append(quit)
            return True
        return None

    def _content_progress(self, size: int, now: float) -> None:
        # Checklist B9: content counts as progress only at the minimum rate, so a DATA
        # trickled slower than that is cut off by the idle timeout.
        rate = self._rate
        if not rate:
            return
        if self._data_started is None:
            self._data_started, self._data_bytes = now, 0
        self._data_bytes += size
        self._last_progress = min(now, self._data_started + self._data_bytes / rate)

    def _data_end(self, item: DataEnd) -> bool | None:
        if not self._in_data or item.violation is not None:
            return None
        self._in_data = False
        self._reset()
        self._junk = 0  # a client that delivers mail is forgiven its junk
        self._out.append(self._replies[5])
        return True

    def _reset(self) -> None:
        self._mail = None
        self._recipients = []
        self._in_data = False
