"""The mail transaction engine: MAIL, RCPT and DATA (or BDAT) for one message, pipelined
when the server offers PIPELINING, and handed from one transaction to the next when
several tasks share a client."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from functools import partial
from typing import Any

from ferrosmtp.client.auth import Authentication
from ferrosmtp.client.core import DATA, RSET
from ferrosmtp.client.io import SMTPProtocol
from ferrosmtp.client.lock import Turn
from ferrosmtp.client.options import CHUNK_SIZE, Timeout
from ferrosmtp.client.request import SendRequest
from ferrosmtp.client.results import (
    SendResult,
    SMTPResponse,
    all_refused,
    send_result,
    smtp_response,
)
from ferrosmtp.errors import SMTPDataError, SMTPException, SMTPSenderRefused, SMTPServerDisconnected
from ferrosmtp.protocol.client import Answer, ClientConnection, Command, Phase

__all__ = ["TransactionEngine", "first_refusal"]


class TransactionEngine(Authentication):
    """``_transaction``: one message, from its envelope to its final reply."""

    async def _transaction(
        self, request: SendRequest, body: bytes, use_bdat: bool | None, timeout: Timeout
    ) -> SendResult:
        """Run one mail transaction, greeting the server first if needed.

        With PIPELINING, MAIL, every RCPT and DATA go in one write and their replies are
        matched in order (RFC 2920); the content follows the 354. Message content may
        start a pipelining group (RFC 2920 §3.1), so when several tasks share the client,
        the next transaction's envelope is written together with this message's content,
        and the session is handed over before this message's final reply arrives: one
        write and one round trip per message.

        The common case (a pipelining SMTP session, a message sent by DATA in one write)
        runs in reply callbacks (``_on_envelope``, ``_on_final``): the content goes out
        from ``data_received`` as soon as the 354 is read, and the task sleeps once, until
        the final reply. Any other outcome wakes it with the envelope's replies.

        Content is only sent once a recipient has been accepted, so a server that
        mishandles a refused BDAT chunk can never read message content as commands;
        unless the client was made with ``pipeline_bdat=True``: then a message of one
        chunk goes as ``BDAT n LAST`` in the same write as MAIL and RCPT (RFC 3030 allows
        it; a compliant server reads the chunk even after refusing every recipient), and
        the whole transaction takes one write and one round trip. A transaction
        interrupted half-way (cancelled, or failing unexpectedly) closes the connection:
        the server's state is unknown, and the next command could otherwise be read as
        message content.
        """
        conn = self._conn
        if conn is None or conn.phase is Phase.UNIDENTIFIED:  # is_ehlo_or_helo_needed
            await self._locked(self._ehlo_or_helo_if_needed)
            conn = self._conn
        if conn is None:
            conn, _ = self._session()  # raises the right error
        offered = conn.extension_names
        pipelining = conn.pipelining
        small = len(body) <= CHUNK_SIZE
        along = (  # the whole message in the envelope's write
            self.pipeline_bdat
            and pipelining
            and small
            and use_bdat is not False
            and "CHUNKING" in offered
            and not self.lmtp
        )
        chunking = along or ("CHUNKING" in offered and self._wants_bdat(use_bdat, len(body)))
        commands = request.commands(conn, body)
        if not chunking:
            commands.append(DATA)
        turn = Turn(commands, timeout)
        turn.request = request
        if along:
            turn.chunk = body  # sent with the envelope: nobody else may send it
        elif pipelining:
            if not chunking and not self.lmtp and small:
                turn.body = body  # the callbacks send it
            self._turns.append(turn)  # the transaction ahead of us may send it for us
        lock = self._lock
        held = False  # the session is ours: nobody else may write until we release it
        settled = False  # True once only our final reply is outstanding
        self._active += 1
        try:
            outcome: Any = None
            if not lock.try_acquire():
                # Wait for the session. The transaction ahead may send our envelope with
                # its content and pass the session straight to us: our callbacks then
                # carry the message on, and we wake up once, with their outcome.
                turn.waiter = turn.wake = lock.enqueue()
                try:
                    outcome = await turn.waiter
                except BaseException:
                    if turn.handed or (turn.waiter.done() and not turn.waiter.cancelled()):
                        held = True  # the session is ours already: pass it on below
                    else:
                        lock.forget(turn.waiter)
                    raise
            held = True
            if outcome is None:  # the session is ours: our envelope is not sent yet
                waiting = self._send_envelope(turn)
                if along:  # the whole transaction is on the wire: the next may go
                    held = False
                    turn.released = True
                    self._release_session()
                outcome = await waiting
            if outcome[0] == "final":  # the callbacks sent the content: the reply is in
                held = False  # (they passed the session on)
                settled = True
                _, refused, accepted, finals = outcome
                return self._result(refused, accepted, finals)
            answers: list[Answer] = outcome[1]
            refused, accepted, refusal = self._envelope_outcome(turn, request, answers, chunking)
            if refusal is not None:  # reset the session, then report the refusal
                if along:
                    pass  # BDAT LAST ended whatever the server held: nothing to reset
                elif refusal.code == 354:  # every RCPT failed, yet DATA was accepted
                    await (await self._start_content(b"", timeout, hand_over=False))
                else:
                    # After a refused sender too (aiosmtplib does so): the server holds
                    # no transaction then, but one RSET costs nothing and leaves no doubt.
                    sender_refused = isinstance(refusal.error, SMTPSenderRefused)
                    await self._abandon(conn, timeout, always=sender_refused)
                settled = True
                raise refusal.error
            turn.content_started = True
            chunks: list[asyncio.Future[list[Answer]]] = []
            if chunking:
                chunks, last = await self._send_chunks(body, timeout)
                if last is None:  # stopped at a refused chunk
                    stopped = first_refusal(chunks)
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
            failed = first_refusal(chunks)
            if failed is not None:  # the LAST chunk ended the (failed) transaction
                raise SMTPDataError(failed.code, str(failed.reply.text))
            return self._result(refused, accepted, finals)
        except BaseException as exc:
            if turn.sent and not settled and not turn.released:
                self.close()
            if isinstance(exc, SMTPServerDisconnected) and not turn.content_started:
                # Nothing of the message went out: a Pool may retry it elsewhere.
                exc.message_not_sent = True  # type: ignore[attr-defined]
            raise
        finally:
            self._active -= 1
            if held:
                self._release_session()
            if not turn.sent and turn in self._turns:
                self._turns.remove(turn)

    def _send_envelope(self, turn: Turn) -> Awaitable[tuple[Any, ...]]:
        """Send a transaction's envelope (nobody sent it for us): in one write when the
        server pipelines, else one command at a time (in a task). Returns what to await
        for the outcome: ``("replies", answers)``, or what the callbacks reached."""
        if turn in self._turns:
            self._turns.remove(turn)
        conn, protocol = self._session()
        if not conn.pipelining:
            commands = self._reset_first(conn, turn)
            loop = asyncio.get_running_loop()
            task = loop.create_task(self._one_by_one(commands, turn.timeout))
            turn.sent = True
            return task
        data = self._envelope_bytes(turn, conn, protocol)
        turn.wake = wake = protocol.loop.create_future()
        protocol.write(data)
        return wake

    # --- The reply callbacks of the common case ---------------------------------------

    def _on_envelope(self, turn: Turn, answers: list[Answer] | SMTPException) -> None:
        """The envelope's replies are in (in ``data_received``). If they let the message
        go and the turn carries its body, send the content now (with the next queued
        envelope) and pass the session on; else wake the task with the replies."""
        if isinstance(answers, SMTPException):
            _fail(turn, answers)
            return
        wake = turn.wake
        if wake is None or wake.done():
            return  # the task is gone (cancelled): it closes the connection
        if turn.chunk is not None:  # MAIL, RCPT... and BDAT LAST: the last is the final
            refused, accepted, refusal = self._envelope_outcome(turn, turn.request, answers, True)
            if refusal is None:
                wake.set_result(("final", refused, accepted, answers[-1:]))
            else:
                wake.set_result(("replies", answers))
            return
        body = turn.body
        if body is None:
            wake.set_result(("replies", answers))
            return
        refused, accepted, refusal = self._envelope_outcome(turn, turn.request, answers, False)
        if refusal is not None:
            wake.set_result(("replies", answers))
            return
        if self._active > 1:
            # Another transaction of this client is about to queue its envelope (its
            # task wakes up in this turn of the loop): let it, so that it rides with our
            # content, one write for both.
            self._session()[1].loop.call_soon(self._send_content, turn, body, refused, accepted)
        else:
            self._send_content(turn, body, refused, accepted)

    def _send_content(
        self, turn: Turn, body: bytes, refused: dict[str, SMTPResponse], accepted: list[str]
    ) -> None:
        """Write the content after the 354 (with the next queued envelope), wait for the
        final reply in ``_on_final``, and pass the session on."""
        wake = turn.wake
        if wake is None or wake.done():
            return  # the task is gone (cancelled): it closes the connection
        try:
            conn, protocol = self._session()
            data = conn.send_data(body, end=True)
            seconds = self.data_timeout
            if seconds is None:
                seconds = self._timeout(turn.timeout)
            protocol.expect_then(1, seconds, partial(self._on_final, turn, refused, accepted))
            turn.content_started = True
            protocol.write(self._hand_over(data, conn, protocol))
        except Exception as exc:  # the connection failed under us, or a bug: never hang
            self.close()
            _fail(turn, exc if isinstance(exc, SMTPException) else SMTPException(str(exc)))
            return
        turn.released = True
        self._release_session()

    def _on_final(
        self,
        turn: Turn,
        refused: dict[str, SMTPResponse],
        accepted: list[str],
        finals: list[Answer] | SMTPException,
    ) -> None:
        if isinstance(finals, SMTPException):
            _fail(turn, finals)
            return
        wake = turn.wake
        if wake is not None and not wake.done():
            wake.set_result(("final", refused, accepted, finals))

    def _envelope_outcome(
        self, turn: Turn, request: SendRequest, answers: list[Answer], chunking: bool
    ) -> tuple[dict[str, SMTPResponse], list[str], _Refusal | None]:
        """What the replies to the envelope say: the refused and accepted recipients, and
        the refusal that stops the message (sender refused, every recipient refused,
        DATA refused), if any."""
        if turn.reset:
            answers = answers[1:]
        mail_reply = answers[0]
        if mail_reply.reply.code != 250:
            refused_sender = SMTPSenderRefused(
                mail_reply.code, str(mail_reply.reply.text), request.sender
            )
            return {}, [], _Refusal(refused_sender)
        refused: dict[str, SMTPResponse] = {}
        accepted: list[str] = []
        for recipient, response in zip(request.recipients, answers[1:], strict=False):
            if response.reply.code in (250, 251):
                accepted.append(recipient)
            else:
                refused[recipient] = smtp_response(response.reply)
        if not chunking:
            # DATA's reply, or the last RCPT's when DATA was not sent (``_one_by_one``:
            # nobody accepted), which is then a refusal like DATA's.
            data_code = answers[-1].reply.code
            if data_code != 354:
                if not accepted:
                    return refused, accepted, _Refusal(all_refused(refused))
                reply = answers[-1].reply
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

    async def _one_by_one(
        self, commands: list[Command], timeout: Timeout
    ) -> tuple[str, list[Answer]]:
        """An envelope for a server without PIPELINING: one command at a time, stopping
        where the replies make the rest pointless: after a refused MAIL (there is no
        transaction for RCPT to join) and before DATA when no recipient was accepted.
        ``_envelope_outcome`` reads the shorter list of replies."""
        conn, protocol = self._session()
        seconds = self._timeout(timeout)
        answers: list[Answer] = []
        for command in commands:
            if command.verb == "DATA" and not conn.accepted_recipients:
                break
            data = self._encode(conn, [command])
            waiter = protocol.expect(1, seconds)
            protocol.write(data)
            (answer,) = await waiter
            answers.append(answer)
            if command.verb == "MAIL" and answer.code != 250:
                break
        return "replies", answers

    def _reset_first(self, conn: ClientConnection, turn: Turn) -> list[Command]:
        if conn.needs_reset:  # a refused transaction the server may still hold open
            turn.reset = True
            return [RSET, *turn.commands]
        return turn.commands

    def _envelope_bytes(self, turn: Turn, conn: ClientConnection, protocol: SMTPProtocol) -> bytes:
        """Encode ``turn``'s envelope and wait for its replies; raises before recording
        anything if the session refuses it."""
        commands = self._reset_first(conn, turn)
        data = self._encode(conn, commands)
        count = len(commands)
        if turn.chunk is not None:  # pipeline_bdat: the message rides along
            data += conn.send_bdat(turn.chunk, last=True)
            count += 1
            turn.content_started = True
        then = partial(self._on_envelope, turn)
        protocol.expect_then(count, self._timeout(turn.timeout), then)
        turn.sent = True
        return data

    def _hand_over(self, data: bytes, conn: ClientConnection, protocol: SMTPProtocol) -> bytes:
        """``data`` (the end of a message) followed by the next queued envelope, if any:
        the next transaction starts in the same write, and the session goes to it when
        released (``_release_session``)."""
        if not self._turns:
            return data
        turn = self._turns[0]
        try:
            envelope = self._envelope_bytes(turn, conn, protocol)
        except (SMTPException, ValueError):
            return data  # its owner will send it and meet the error itself
        self._turns.popleft()
        self._handed = turn
        return data + envelope

    def _release_session(self) -> None:
        """Let the next exchange go: the transaction whose envelope we sent, if any (its
        commands are on the wire: nothing else may be written before its content; its
        callbacks carry it on), else whoever waits first."""
        turn, self._handed = self._handed, None
        if turn is not None and turn.waiter is not None and not turn.waiter.done():
            turn.handed = True
            self._lock.pass_to(turn.waiter)
        else:
            self._lock.release()

    def _result(
        self, refused: dict[str, SMTPResponse], accepted: list[str], finals: list[Answer]
    ) -> SendResult:
        """The outcome from the final reply (SMTP) or the per-recipient replies (LMTP)."""
        if not self.lmtp:
            final = smtp_response(finals[-1].reply)
            if final.code != 250:
                raise SMTPDataError(final.code, final.message)
            return send_result(refused, final.message, dict.fromkeys(accepted, final))
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
        return send_result(refused, first.message, delivered)

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

    def _small_content(self, body: bytes, timeout: Timeout) -> asyncio.Future[list[Answer]]:
        """``_start_content`` for a body of at most CHUNK_SIZE: one write, no waiting."""
        conn, protocol = self._session()
        replies = max(1, len(conn.accepted_recipients)) if self.lmtp else 1
        data = conn.send_data(body) + conn.end_data()
        seconds = self.data_timeout if self.data_timeout is not None else self._timeout(timeout)
        final = protocol.expect(replies, seconds)
        protocol.write(self._hand_over(data, conn, protocol) if conn.pipelining else data)
        return final

    async def _start_content(
        self, body: bytes, timeout: Timeout, *, hand_over: bool = True
    ) -> asyncio.Future[list[Answer]]:
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
        if hand_over and conn.pipelining:
            data = self._hand_over(data, conn, protocol)
        protocol.write(data)
        return final

    async def _send_chunks(
        self, body: bytes, timeout: Timeout
    ) -> tuple[list[asyncio.Future[list[Answer]]], asyncio.Future[list[Answer]] | None]:
        """Write the content as BDAT chunks (RFC 3030), pipelined when the server allows.

        Returns the futures of the replies to the non-LAST chunks and of the reply to
        the LAST one (one per accepted recipient for LMTP), or None for the latter if
        sending stopped at a refused chunk (the server discards the rest)."""
        conn, protocol = self._session()
        seconds = self._timeout(timeout)
        deadline = self._deadline()
        replies = max(1, len(conn.accepted_recipients)) if self.lmtp else 1
        reply_timeout = self._until(deadline, None if deadline else seconds)
        chunks: list[asyncio.Future[list[Answer]]] = []
        starts = range(0, max(len(body), 1), CHUNK_SIZE)
        for start in starts:
            if chunks and not conn.pipelining:
                await asyncio.wait([chunks[-1]])
            if first_refusal(chunks) is not None:
                return chunks, None  # the server discards the rest: stop sending it
            piece = body[start : start + CHUNK_SIZE]  # one slice at a time: bounded memory
            if start == starts[-1]:
                data = conn.send_bdat(piece, last=True)
                final = protocol.expect(replies, reply_timeout)
                protocol.write(self._hand_over(data, conn, protocol) if conn.pipelining else data)
                return chunks, final
            data = conn.send_bdat(piece)
            if data:  # empty when only a CR is held back for the next piece
                chunks.append(protocol.expect(1, reply_timeout))
                protocol.write(data)
                await protocol.drain(self._until(deadline, seconds))
        raise AssertionError("unreachable")  # pragma: no cover


def _fail(turn: Turn, error: SMTPException) -> None:
    wake = turn.wake
    if wake is not None and not wake.done():
        wake.set_exception(error)


class _Refusal:
    """A refusal that stops a message, to raise once the session has been reset.
    ``code`` 354: DATA was accepted although no recipient was, so a lone "." ends it."""

    __slots__ = ("code", "error")

    def __init__(self, error: SMTPException, code: int = 0) -> None:
        self.error = error
        self.code = code


def first_refusal(waiters: Sequence[asyncio.Future[list[Answer]]]) -> Answer | None:
    """The first reply received so far that is not 250, if any."""
    for waiter in waiters:
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            response = waiter.result()[0]
            if response.code != 250:
                return response
    return None
