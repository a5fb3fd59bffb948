"""Logging in: SASL PLAIN, LOGIN, CRAM-MD5 and XOAUTH2 (RFC 4954), with the rule that no
password goes in clear to a peer that is not loopback unless the caller allows it."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from ferrosmtp import auth as sasl
from ferrosmtp.client.options import DEFAULT, Timeout
from ferrosmtp.client.results import SMTPResponse
from ferrosmtp.client.tls import StartTLS
from ferrosmtp.errors import SMTPAuthenticationError, SMTPException
from ferrosmtp.protocol.client import Command

__all__ = ["Authentication"]


def _is_loopback(peer: Any) -> bool:
    if isinstance(peer, tuple) and peer:
        try:
            return ipaddress.ip_address(str(peer[0]).split("%")[0]).is_loopback
        except ValueError:
            return False
    return isinstance(peer, (str, bytes))  # a Unix socket path


class Authentication(StartTLS):
    """AUTH: ``login()`` picks a mechanism; ``auth_*`` run one."""

    AUTH_METHODS: tuple[str, ...] = ("cram-md5", "plain", "login")

    @property
    def supported_auth_methods(self) -> list[str]:
        return [m for m in self.AUTH_METHODS if m in self.server_auth_methods]

    async def login(
        self, username: str | bytes, password: str | bytes, /, *, timeout: Timeout = DEFAULT
    ) -> SMTPResponse:
        """Log in with the best mechanism both sides support (CRAM-MD5, PLAIN, LOGIN),
        trying the next one if the server refuses."""
        await self._locked(self._ehlo_or_helo_if_needed)
        if not self.supports_extension("auth"):
            hint = "" if self.is_tls else " Try connecting via TLS (or STARTTLS)."
            raise SMTPException("The SMTP AUTH extension is not supported by this server." + hint)
        methods = self.supported_auth_methods
        if not methods:
            raise SMTPException("No suitable authentication method found.")
        error: SMTPAuthenticationError | None = None
        for method in methods:
            function = getattr(self, "auth_" + method.replace("-", ""))
            try:
                response: SMTPResponse = await function(username, password, timeout=timeout)
            except SMTPAuthenticationError as exc:
                error = exc
                continue
            return response
        assert error is not None
        raise error

    def _check_cleartext_allowed(self, mechanism: str) -> None:
        """No AUTH exchange, whatever the mechanism, goes over an unencrypted connection
        to a peer that is not this host unless the caller allowed it: PLAIN, LOGIN and
        XOAUTH2 would show the secret to anyone on the path, and CRAM-MD5 shows the user
        name and a digest that can be cracked offline (RFC 4954 §4, RFC 8314 §2)."""
        if self.allow_insecure_auth or self.is_tls:
            return
        peer = self.transport.get_extra_info("peername") if self.transport else None
        if self.socket_path is not None or _is_loopback(peer):
            return
        raise SMTPException(
            f"Refusing AUTH {mechanism} over an unencrypted connection: the credentials "
            "would be exposed. Use TLS (use_tls=True or STARTTLS), or pass "
            "allow_insecure_auth=True."
        )

    async def auth_plain(
        self, username: str | bytes, password: str | bytes, /, *, timeout: Timeout = DEFAULT
    ) -> SMTPResponse:
        """AUTH PLAIN (RFC 4616) with ``username`` and ``password``; SMTPAuthenticationError if
        refused."""
        initial = sasl.plain_response(username, password)
        return await self._locked(lambda: self._sasl("PLAIN", initial, None, timeout))

    async def auth_login(
        self, username: str | bytes, password: str | bytes, /, *, timeout: Timeout = DEFAULT
    ) -> SMTPResponse:
        """AUTH LOGIN: the user name, then the password, each answering the server's challenge."""
        initial = sasl.b64(username.encode() if isinstance(username, str) else username)

        def respond(challenge: str) -> str:
            return sasl.login_response(challenge, username, password)

        return await self._locked(lambda: self._sasl("LOGIN", initial, respond, timeout))

    async def auth_crammd5(
        self, username: str | bytes, password: str | bytes, /, *, timeout: Timeout = DEFAULT
    ) -> SMTPResponse:
        """AUTH CRAM-MD5 (RFC 2195): the password never crosses the wire, only its HMAC of the
        challenge."""

        def respond(challenge: str) -> str:
            return sasl.cram_md5_response(challenge, username, password)

        return await self._locked(lambda: self._sasl("CRAM-MD5", None, respond, timeout))

    async def auth_xoauth2(
        self, username: str | bytes, access_token: str | bytes, /, *, timeout: Timeout = DEFAULT
    ) -> SMTPResponse:
        """AUTH XOAUTH2 with an OAuth 2.0 ``access_token`` (Gmail's and Outlook's SASL)."""
        initial = sasl.xoauth2_response(username, access_token)

        def respond(challenge: str) -> str:
            return ""  # the challenge is an error report; an empty line gets the final reply

        return await self._locked(lambda: self._sasl("XOAUTH2", initial, respond, timeout))

    async def _sasl(
        self,
        mechanism: str,
        initial: str | None,
        respond: Callable[[str], str] | None,
        timeout: Timeout,
    ) -> SMTPResponse:
        """One SASL exchange: AUTH, then a response to each 334 challenge (at most 5).
        Every mechanism comes through here, and so past the cleartext check."""
        self._session()  # not connected: say so, not "unencrypted"
        self._check_cleartext_allowed(mechanism)
        await self._ehlo_or_helo_if_needed()
        response = await self._command(Command.auth(mechanism, initial), timeout)
        rounds = 0
        while response.code == 334:
            rounds += 1
            answer = "*"
            if respond is not None and rounds <= 5:
                try:
                    answer = respond(response.message)
                except ValueError:
                    answer = "*"  # a challenge we cannot answer: cancel the exchange
            response = await self._command(Command.auth_response(answer), timeout)
        if response.code != 235:
            raise SMTPAuthenticationError(response.code, response.message)
        return response
