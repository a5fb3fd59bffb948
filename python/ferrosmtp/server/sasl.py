"""AUTH: the SASL exchanges (PLAIN, LOGIN, the handler's ``auth_<MECH>`` methods) and
aiosmtpd's ``push`` / ``challenge_auth``, on one connection."""

from __future__ import annotations

import asyncio
import base64
import inspect
import logging
from collections.abc import Awaitable, Callable
from time import monotonic
from typing import Any

from ferrosmtp.auth import SASLCancelled, SASLError, decode_response
from ferrosmtp.protocol import events as ev
from ferrosmtp.protocol.events import CLOSED, NEED_DATA, Response
from ferrosmtp.server.base import ConnectionBase
from ferrosmtp.server.status import parse_status
from ferrosmtp.server.values import MISSING, AuthResult, LoginPassword, is_auth_result, is_missing

__all__ = ["SASL"]

log: logging.Logger = logging.getLogger("ferrosmtp.server")


class SASL(ConnectionBase):
    """The AUTH command of one connection."""

    AuthLoginUsernameChallenge = "User Name\x00"
    AuthLoginPasswordChallenge = "Password\x00"

    @property
    def _auth_methods(self) -> dict[str, Callable[..., Awaitable[Any]]]:
        """Mechanism name -> method, found on first use (most connections never AUTH)."""
        if self._auth_methods_cache is None:
            self._auth_methods_cache = self._server._auth_methods_for(self)
        return self._auth_methods_cache

    # -- AUTH --------------------------------------------------------------------------------

    def _on_auth(self, event: ev.Auth) -> Awaitable[None] | None:
        return self._auth(event)

    async def _auth(self, event: ev.Auth) -> None:
        conn = self.conn
        assert conn is not None
        server, key = self._server, self._peer_key
        # Checklist B13: failures count per client address. An exchange counts from its
        # start, so a hundred opened at once cannot all pass the check before the first
        # one fails (issue 10, fault 6); a success takes its count back.
        attempt = server._auth_attempt(key)
        if attempt is None:
            conn.auth_failed(conn.replies.auth_locked_out)
            log.warning("%s AUTH refused: too many failures from this address", self._peer())
            return
        await self._run_auth(event)
        if conn.authenticated:
            server._auth_forgive(key, attempt)
            return
        log.warning("%s failed AUTH %s", self._peer(), event.mechanism)
        if server.auth_failure_delay > 0 and not self._closing:
            await asyncio.sleep(server.auth_failure_delay)  # every failure costs time

    async def _run_auth(self, event: ev.Auth) -> None:
        conn = self.conn
        assert conn is not None
        args = [event.mechanism] + ([event.initial] if event.initial is not None else [])
        hook = self._hooks.get("AUTH")
        if hook is not None:
            status = await self._call(hook, args)
            if not conn.auth_in_progress:
                return
            if not is_missing(status):  # MISSING: the mechanism decides (aiosmtpd)
                if status is None:
                    conn.auth_failed()
                else:
                    self._auth_answer(self._response(status))
                return
        method = self._auth_methods.get(event.mechanism)
        if method is None:  # only a handle_AUTH hook knew this mechanism
            conn.auth_failed()
            return
        try:
            result = method(self, args)
            while inspect.isawaitable(result):  # an async method, or one returning a coroutine
                result = await result
        except asyncio.CancelledError:
            raise
        except Exception as error:
            result = None
            self._auth_answer(self._response(await self._handle_exception(error)))
        if conn.auth_in_progress:
            self._auth_outcome(event.mechanism, result)

    def _auth_outcome(self, mechanism: str, result: Any) -> None:
        """End the exchange by what the mechanism's method returned (aiosmtpd's two
        conventions). Only an explicit success authenticates (issue 10, fault 12)."""
        conn, session = self.conn, self.session
        assert conn is not None and session is not None
        if is_auth_result(result):
            message = self._response(result.message) if result.message else None
            if result.success is True and (message is None or message.code == 235):
                session.authenticated = True
                session.auth_data = result.auth_data
                session.login_data = getattr(result.auth_data, "login", None)
                conn.auth_succeeded(message)
                return
            if result.success is not True and result.success is not False:
                log.warning(
                    "%s auth_%s returned AuthResult(success=%r): only True authenticates",
                    *(self._peer(), mechanism, result.success),
                )
            if message is not None and message.code < 400:
                message = None  # a failure never answers 2xx or 3xx
            conn.auth_failed(message)
        elif result is None or is_missing(result) or result is False:
            conn.auth_failed()
        elif result is True or (result and not isinstance(result, (int, float))):
            # aiosmtpd's older convention for a mechanism's own method: a login value
            # (non-empty, not a number) is the authenticated identity.
            session.authenticated = True
            session.login_data = None if result is True else result
            conn.auth_succeeded()
        else:
            log.warning(
                "%s auth_%s returned %r, not an AuthResult: authentication refused",
                *(self._peer(), mechanism, result),
            )
            conn.auth_failed()

    def _auth_answer(self, response: Response) -> None:
        """Answer the AUTH exchange with a reply by its code (ServerConnection's rule:
        334 a challenge, 235 success, anything else failure)."""
        conn = self.conn
        assert conn is not None
        conn.auth_respond(response)
        if conn.authenticated and self.session is not None:
            self.session.authenticated = True
        self._flush()

    async def push(self, status: str | bytes) -> None:
        """Send a reply now (aiosmtpd's ``push``). Inside an AUTH exchange a 235 ends it
        with success, a 334 is a challenge, anything else ends it with failure."""
        conn = self.conn
        if conn is None or self._closing:
            return
        config = conn.config
        response = parse_status(
            status, config.enhanced_status_codes, any_code=config.any_reply_code
        )
        if conn.auth_in_progress:
            self._auth_answer(response)
            return
        self._flush()  # replies queued before this one go first
        conn.push(response)
        self._flush()

    async def challenge_auth(
        self, challenge: str | bytes, encode_to_b64: bool = True, log_client_response: bool = False
    ) -> bytes | Any:
        """Send ``334 challenge`` and return the client's decoded answer, or MISSING if it
        cancelled with "*" or sent invalid base64 (the client has then been answered)."""
        conn = self.conn
        assert conn is not None
        if isinstance(challenge, str):
            challenge = challenge.encode()
        text = (base64.b64encode(challenge) if encode_to_b64 else challenge).decode(
            "ascii", "replace"
        )
        conn.auth_challenge(text)
        self._flush()
        line = await self._next_auth_line()
        if line is None:
            return MISSING
        if log_client_response:
            log.debug("%s AUTH response %r", self._peer(), line)
        try:
            return decode_response(line)
        except SASLCancelled:
            conn.auth_failed(conn.replies.auth_cancelled)
        except SASLError:
            conn.auth_failed(conn.replies.auth_bad_base64)
        self._flush()
        return MISSING

    async def _next_auth_line(self) -> bytes | None:
        """Read events until the client's AUTH line; None if the exchange ended."""
        conn = self.conn
        assert conn is not None and self.transport is not None
        self.transport.resume_reading()  # type: ignore[attr-defined]
        try:
            while True:
                if not conn.auth_in_progress:
                    return None
                event = conn.next_event()
                if isinstance(event, ev.AuthLine):
                    self._last_progress = monotonic()
                    return event.data
                if isinstance(event, ev.AuthAborted) or event is CLOSED:
                    self._flush()
                    return None
                if isinstance(event, ev.Delay):
                    self._flush()
                    await asyncio.sleep(event.seconds)
                    continue
                if event is NEED_DATA:
                    if self._closing:
                        return None
                    self._input_waiter = self.loop.create_future()
                    try:
                        await self._input_waiter
                    finally:
                        self._input_waiter = None
                    continue
                raise RuntimeError(f"unexpected {event!r} during AUTH")
        finally:
            self._pause_reading()

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        """AUTH PLAIN (RFC 4616), with or without an initial response."""
        conn = self.conn
        assert conn is not None
        if len(args) == 1:
            answer = await self.challenge_auth("")
            if is_missing(answer):
                return AuthResult(success=False)
        else:
            try:
                answer = decode_response(args[1], initial=True)
            except SASLError:
                conn.auth_failed(conn.replies.auth_bad_base64)
                return AuthResult(success=False, handled=True)
        try:
            # RFC 4616: [authzid] NUL authcid NUL passwd. The authzid is passed on: the
            # identity the client asks to act as (issue 10, fault 11).
            authzid, login, password = answer.split(b"\x00")
        except ValueError:
            conn.auth_failed(conn.replies.auth_bad_plain)
            return AuthResult(success=False, handled=True)
        return await self._authenticate("PLAIN", LoginPassword(login, password, authzid))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        """AUTH LOGIN: user name and password asked for in turn."""
        conn = self.conn
        assert conn is not None
        if len(args) == 1:
            login = await self.challenge_auth(self.AuthLoginUsernameChallenge)
            if is_missing(login):
                return AuthResult(success=False)
        else:
            try:
                login = decode_response(args[1], initial=True)
            except SASLError:
                conn.auth_failed(conn.replies.auth_bad_base64)
                return AuthResult(success=False, handled=True)
        password = await self.challenge_auth(self.AuthLoginPasswordChallenge)
        if is_missing(password):
            return AuthResult(success=False)
        return await self._authenticate("LOGIN", LoginPassword(login, password))

    async def _authenticate(self, mechanism: str, auth_data: LoginPassword) -> AuthResult:
        """Ask the authenticator (or the legacy auth_callback); either may be async.

        Fails closed: only ``True`` or an AuthResult with ``success=True`` authenticates
        (issue 10, fault 12), and a client that asks to act as someone other than its
        login (AUTH PLAIN's authzid) is refused unless the AuthResult names that identity
        in ``authorization_id`` (RFC 4616 §2; fault 11)."""
        server = self._server
        result: Any = None
        if server.authenticator is not None:
            result = server.authenticator(self, self.session, self.envelope, mechanism, auth_data)
        elif server.auth_callback is not None:
            result = server.auth_callback(mechanism, auth_data.login, auth_data.password)
        if inspect.isawaitable(result):
            result = await result
        if result is True:
            result = AuthResult(success=True, handled=False, auth_data=auth_data)
        elif not is_auth_result(result):
            if result is not None and result is not False:
                log.warning(
                    "%s the authenticator returned %r, not True or an AuthResult: "
                    "authentication refused",
                    *(self._peer(), result),
                )
            return AuthResult(success=False, handled=False)
        checked: AuthResult = result
        authzid = auth_data.authzid
        if checked.success is True and authzid and authzid != auth_data.login:
            allowed = getattr(checked, "authorization_id", None)  # not on aiosmtpd's
            if isinstance(allowed, str):
                allowed = allowed.encode("utf-8")
            if allowed != authzid:
                log.warning(
                    "%s AUTH %s: %r may not act as %r",
                    *(self._peer(), mechanism, auth_data.login, authzid),
                )
                return AuthResult(success=False, handled=False)
        return checked
