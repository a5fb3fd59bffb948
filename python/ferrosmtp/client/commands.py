"""The commands outside mail transactions: EHLO, HELO, HELP, RSET, NOOP, QUIT, VRFY,
EXPN, and ``execute_command`` for anything else."""

from __future__ import annotations

from collections.abc import Iterable

from ferrosmtp.client.core import SessionCore
from ferrosmtp.client.options import DEFAULT, Timeout
from ferrosmtp.client.results import SMTPResponse
from ferrosmtp.errors import SMTPResponseException
from ferrosmtp.protocol.client import Command

__all__ = ["Commands"]


class Commands(SessionCore):
    """The commands a caller sends one by one, each answered by one reply."""

    async def ehlo(
        self, *, hostname: str | None = None, timeout: Timeout = DEFAULT
    ) -> SMTPResponse:
        """EHLO (LHLO for LMTP). Raises SMTPHeloError unless the reply is 250."""
        return await self._locked(
            lambda: self._hello("LHLO" if self.lmtp else "EHLO", hostname, timeout)
        )

    async def helo(
        self, *, hostname: str | None = None, timeout: Timeout = DEFAULT
    ) -> SMTPResponse:
        """HELO. Raises SMTPHeloError unless the reply is 250."""
        return await self._locked(lambda: self._hello("HELO", hostname, timeout))

    async def help(self, *, timeout: Timeout = DEFAULT) -> str:
        """HELP: the text of the reply (211, 214, or 250 as aiosmtpd answers)."""

        async def run() -> str:
            await self._ehlo_or_helo_if_needed()
            response = await self._command(Command.help(), timeout)
            if response.code not in (211, 214, 250):
                raise SMTPResponseException(response.code, response.message)
            return response.message

        return await self._locked(run)

    async def rset(self, *, timeout: Timeout = DEFAULT) -> SMTPResponse:
        """RSET: abandon the current mail transaction."""
        return await self._locked(lambda: self._simple("RSET", timeout))

    async def noop(self, *, timeout: Timeout = DEFAULT) -> SMTPResponse:
        """NOOP: a round trip that changes nothing (keeps a connection alive, checks it)."""
        return await self._locked(lambda: self._simple("NOOP", timeout))

    async def _simple(self, verb: str, timeout: Timeout) -> SMTPResponse:
        await self._ehlo_or_helo_if_needed()
        response = await self._command(Command.simple(verb), timeout)
        if response.code != 250:
            raise SMTPResponseException(response.code, response.message)
        return response

    async def quit(self, *, timeout: Timeout = DEFAULT) -> SMTPResponse:
        """QUIT, then close the connection."""

        async def run() -> SMTPResponse:
            try:
                response = await self._command(Command.simple("QUIT"), timeout)
            finally:
                self.close()
            if response.code != 221:
                raise SMTPResponseException(response.code, response.message)
            return response

        return await self._locked(run)

    async def execute_command(self, *args: bytes | str, timeout: Timeout = DEFAULT) -> SMTPResponse:
        """Send one command (``args`` joined by spaces, bytes as UTF-8) and return its
        reply whatever its code, like aiosmtplib's ``execute_command``.

        NOOP, RSET, QUIT (which then closes), HELP, VRFY and EXPN go out as themselves.
        The other commands the session tracks (EHLO, MAIL, RCPT, DATA, BDAT, STARTTLS,
        AUTH, ...) raise ``ValueError``: their methods keep the session in step. Anything
        else (ETRN, an extension) may be sent outside a mail transaction and is never
        pipelined. The session greets the server first if it has not yet. CR, LF, NUL and
        other control characters raise ``ValueError``."""
        text = " ".join(a.decode("utf-8") if isinstance(a, bytes) else a for a in args)
        verb, _, rest = text.partition(" ")
        upper = verb.upper()
        if upper in ("NOOP", "RSET", "QUIT") and not rest:
            command = Command.simple(upper)
        elif upper == "HELP":
            command = Command.help(rest or None)
        elif upper in ("VRFY", "EXPN"):
            command = Command.query(upper, rest, smtputf8=True)
        else:
            command = Command.other(text)

        async def run() -> SMTPResponse:
            try:
                if upper != "QUIT":
                    await self._ehlo_or_helo_if_needed()  # as the other command methods
                return await self._command(command, timeout)
            finally:
                if upper == "QUIT":
                    self.close()

        return await self._locked(run)

    async def vrfy(
        self, address: str, /, *, options: Iterable[str] | None = None, timeout: Timeout = DEFAULT
    ) -> SMTPResponse:
        """VRFY. Returns 250, 251 or 252 replies; raises SMTPResponseException otherwise."""
        return await self._locked(lambda: self._query("VRFY", address, options, timeout))

    async def expn(
        self, address: str, /, *, options: Iterable[str] | None = None, timeout: Timeout = DEFAULT
    ) -> SMTPResponse:
        """EXPN. Returns 250, 251 or 252 replies; raises SMTPResponseException otherwise."""
        return await self._locked(lambda: self._query("EXPN", address, options, timeout))

    async def _query(
        self, verb: str, argument: str, options: Iterable[str] | None, timeout: Timeout
    ) -> SMTPResponse:
        command = Command.query(verb, argument, smtputf8=True)  # validate before any I/O
        if options and any(o.upper() != "SMTPUTF8" for o in options):
            raise ValueError(f"{verb} takes no options other than SMTPUTF8")
        await self._ehlo_or_helo_if_needed()
        response = await self._command(command, timeout)
        if response.code not in (250, 251, 252):
            raise SMTPResponseException(response.code, response.message)
        return response
