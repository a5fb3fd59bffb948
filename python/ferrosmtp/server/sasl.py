"""AUTH: the SASL exchanges (PLAIN, LOGIN, the handler's ``auth_<MECH>`` methods) and
aiosmtpd's ``push`` / ``challenge_auth``, on one connection."""

from __future__ import annotations

import asyncio
import base64
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from ferrosmtp import codec
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
        conn, session = self.conn, self.session
        assert conn is not None and session is not None
        if self._server._auth_blocked(self._peer_key):
            conn.auth_failed(
                Response.of(454, "Error: too many authentication failures, try later", "4.7.0")
            )
            return
        failures = conn.auth_failures
        await self._run_auth(event)
        if conn.auth_failures > failures:
            # Checklist B13: every failure costs the guesser time, and counts for its address.
            self._server._auth_failed(self._peer_key)
            log.warning("%s failed AUTH %s", self._peer(), event.mechanism)
            if self._server.auth_failure_delay > 0 and not self._closing:
                await asyncio.sleep(self._server.auth_failure_delay)

    async def _run_auth(self, event: ev.Auth) -> None:
        conn, session = self.conn, self.session
        assert conn is not None and session is not None
        args = [event.mechanism] + ([event.initial] if event.initial is not None else [])
        hook = self._hooks.get("AUTH")
        if hook is not None:
            status = await self._call(hook, args)
            if not conn.auth_in_progress:
                return
            if not is_missing(status):  # MISSING: the mechanism decides (aiosmtpd)
                if status is None:
                    status = "535 5.7.8 Authentication credentials invalid"
                await self.push(status)
                return
        method = self._auth_methods.get(event.mechanism)
        if method is None:  # only a handle_AUTH hook knew this mechanism
            await self.push("535 5.7.8 Authentication credentials invalid")
            return
        try:
            result = method(self, args)
            while inspect.isawaitable(result):  # an async method, or one returning a coroutine
                result = await result
        except asyncio.CancelledError:
            raise
        except Exception as error:
            result = None
            await self.push(await self._handle_exception(error))
        if not conn.auth_in_progress:
            return
        success = "235 2.7.0 Authentication successful"
        invalid = "535 5.7.8 Authentication credentials invalid"
        if is_auth_result(result):
            if result.success:
                session.authenticated = True
                session.auth_data = result.auth_data
                session.login_data = getattr(result.auth_data, "login", None)
                await self.push(result.message or success)
            elif not result.handled or result.message:
                await self.push(result.message or invalid)
            else:
                conn.auth_failed()
        elif result is None:
            conn.auth_failed()
        elif is_missing(result) or result is False:
            await self.push(invalid)
        else:
            # aiosmtpd's legacy convention: any other value is the authenticated identity.
            # (Awaitables were awaited above: a coroutine object can never land here.)
            session.authenticated = True
            session.login_data = result
            await self.push(success)

    async def push(self, status: str | bytes) -> None:
        """Send a reply now (aiosmtpd's ``push``). Inside an AUTH exchange a 235 ends it
        with success, a 334 is a challenge, anything else ends it with failure."""
        conn = self.conn
        if conn is None or self._closing:
            return
        response = parse_status(status, conn.config.enhanced_status_codes)
        if conn.auth_in_progress:
            if response.code == 334:
                conn.auth_challenge(" ".join(response.lines))
                self._flush()
            elif response.code == 235:
                if self.session is not None:
                    self.session.authenticated = True
                conn.auth_succeeded(response)
            else:
                conn.auth_failed(response)
            return
        self._flush()  # replies queued before this one go first
        self._write(codec.format_reply(response.code, list(response.lines), response.enhanced))

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
            conn.auth_failed(Response.of(501, "Auth aborted", "5.7.0"))
        except SASLError:
            conn.auth_failed(Response.of(501, "Can't decode base64", "5.5.2"))
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
                    self._last_progress = self.loop.time()
                    return event.data
                if isinstance(event, ev.AuthAborted) or event is CLOSED:
                    self._flush()
                    return None
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
        if len(args) == 1:
            answer = await self.challenge_auth("")
            if is_missing(answer):
                return AuthResult(success=False)
        else:
            try:
                answer = decode_response(args[1], initial=True)
            except SASLError:
                await self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        try:
            _, login, password = answer.split(b"\x00")
        except ValueError:
            await self.push("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        return await self._authenticate("PLAIN", LoginPassword(login, password))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        """AUTH LOGIN: user name and password asked for in turn."""
        if len(args) == 1:
            login = await self.challenge_auth(self.AuthLoginUsernameChallenge)
            if is_missing(login):
                return AuthResult(success=False)
        else:
            try:
                login = decode_response(args[1], initial=True)
            except SASLError:
                await self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        password = await self.challenge_auth(self.AuthLoginPasswordChallenge)
        if is_missing(password):
            return AuthResult(success=False)
        return await self._authenticate("LOGIN", LoginPassword(login, password))

    async def _authenticate(self, mechanism: str, auth_data: LoginPassword) -> AuthResult:
        """Ask the authenticator (or the legacy auth_callback); either may be async."""
        server = self._server
        if server.authenticator is not None:
            result = server.authenticator(self, self.session, self.envelope, mechanism, auth_data)
            if inspect.isawaitable(result):
                result = await result
            # An authenticator returns an AuthResult, ferrosmtp's or aiosmtpd's (same
            # attributes). It is passed on unchecked; _run_auth checks what it got.
            return cast(AuthResult, result)
        if server.auth_callback is not None:
            ok = server.auth_callback(mechanism, *auth_data)
            if inspect.isawaitable(ok):
                ok = await ok
            if ok is True:
                return AuthResult(success=True, handled=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)
