"""Sending mail: step by step (``mail()``, ``rcpt()``, ``data()``, ``bdat()``) or a whole
message at once (``sendmail()``, ``send_message()``, through the transaction engine)."""

from __future__ import annotations

import email.message
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from ferrosmtp.client.message import extract_recipients, extract_sender, flatten_message
from ferrosmtp.client.options import DEFAULT, Timeout
from ferrosmtp.client.request import SendRequest, dsn_notify, params_from_options
from ferrosmtp.client.results import SendResult, SMTPResponse, smtp_response
from ferrosmtp.client.transaction import TransactionEngine, first_refusal
from ferrosmtp.errors import (
    SMTPDataError,
    SMTPNotSupported,
    SMTPRecipientRefused,
    SMTPSenderRefused,
)
from ferrosmtp.protocol.client import Command, Phase

__all__ = ["Messages"]


class Messages(TransactionEngine):
    """The mail-sending methods of ``Client``."""

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
            refusal = first_refusal(chunks)
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
        request = SendRequest(
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
            request.check_syntax()  # refuse bad DSN arguments before any I/O
        return await self._transaction(request, body, use_bdat, timeout)

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
        request = SendRequest(
            sender,
            recipient_list,
            params_from_options(mail_options),
            params_from_options(rcpt_options),
            dsn_notify(notify),
            ret,
            envid,
            orcpt,
        )
        request.check_syntax()
        await self._locked(self._ehlo_or_helo_if_needed)
        conn, _ = self._session()
        utf8 = request.needs_smtputf8
        if utf8 and not conn.supports("SMTPUTF8"):
            raise SMTPNotSupported(
                "An address containing non-ASCII characters was provided, but "
                "SMTPUTF8 is not supported by this server"
            )
        cte_type = "8bit" if conn.supports("8BITMIME") else "7bit"
        body = flatten_message(message, utf8=utf8, cte_type=cte_type)
        return await self._transaction(request, body, use_bdat, timeout)


def _is_utf8(encoding: str) -> bool:
    return encoding.lower().replace("-", "").replace("_", "") == "utf8"
