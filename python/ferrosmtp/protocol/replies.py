"""Every reply the server gives by itself, in one table.

``ServerConnection`` answers from ``ServerConfig.replies``, and so does the asyncio layer
(the connection refusals, the AUTH exchange, the 421s of timeouts and shutdown), through
the connection: nothing else holds a reply text. A namespace that must match another
server's texts (``compat.aiosmtpd``) changes them in one place::

    replies = dataclasses.replace(Replies(), need_helo=Response.of(503, "Error: send HELO first"))
    ServerConfig(..., replies=replies)

Texts follow Postfix and aiosmtpd where clients are known to match on them. A text may
name ``{hostname}`` (the server's name; filled in once per configuration) and, in the few
replies that say which command or parameter they refuse, ``{verb}``, ``{keyword}``,
``{size}`` or ``{commands}`` (filled in when the reply is sent). An enhanced code left
``None`` is supplied by the connection when ENHANCEDSTATUSCODES is on (RFC 2034).
"""

# ruff: noqa: RUF009  (the defaults are frozen Responses, made once and shared safely)

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from ferrosmtp.protocol.events import Response

__all__ = ["Replies"]

R = Response.of


@dataclass(frozen=True)
class Replies:
    """The server's own replies, by what they answer (see the module documentation)."""

    # -- the session ---------------------------------------------------------------------
    greeting: Response = R(220, "{hostname} {greeting}")
    helo: Response = R(250, "{hostname}")
    ok: Response = R(250, "OK")
    quit: Response = R(221, "Bye", "2.0.0")
    help: Response = R(214, "Supported commands: {commands}", "2.0.0")
    vrfy: Response = R(
        252, "Cannot VRFY user, but will accept message and attempt delivery", "2.0.0"
    )
    expn: Response = R(502, "EXPN not implemented", "5.5.1")
    # ServerConfig.vrfy_needs_name: VRFY's argument is neither a name nor a mailbox.
    cannot_vrfy: Response = R(502, "Cannot VRFY {argument}", "5.5.4")
    unknown_command: Response = R(500, 'Error: command "{verb}" not recognized', "5.5.1")
    not_implemented: Response = R(502, "Error: command not implemented", "5.5.1")
    # ServerConfig.max_unknown_commands was reached: said, then the connection closes.
    too_many_unknown_commands: Response = R(
        421, "{hostname} Error: too many unknown commands", "4.7.0"
    )
    http_command: Response = R(502, "Error: HTTP command received, this is an SMTP server", "5.7.0")
    # RFC 2920 §3.1 and checklist B3: input after a sync point, or before the greeting.
    sync_error: Response = R(554, "Error: SMTP protocol synchronization", "5.5.0")

    # -- sequencing ----------------------------------------------------------------------
    need_helo: Response = R(503, "Error: send HELO/EHLO first", "5.5.1")
    need_ehlo: Response = R(503, "Error: send EHLO first", "5.5.1")
    need_mail: Response = R(503, "Error: need MAIL command", "5.5.1")
    nested_mail: Response = R(503, "Error: nested MAIL command", "5.5.1")
    no_recipients: Response = R(554, "Error: no valid recipients", "5.5.1")
    need_starttls: Response = R(530, "Must issue a STARTTLS command first", "5.7.0")
    need_auth: Response = R(530, "Authentication required", "5.7.0")
    # handle_STARTTLS refused the TLS session: nothing but QUIT (aiosmtpd's text).
    insecure: Response = R(554, "Command refused due to lack of security", "5.7.0")
    mail_params_need_ehlo: Response = R(
        501, "Syntax: MAIL FROM:<address> (parameters need EHLO)", "5.5.4"
    )
    rcpt_params_need_ehlo: Response = R(
        501, "Syntax: RCPT TO:<address> (parameters need EHLO)", "5.5.4"
    )

    # -- MAIL and RCPT -------------------------------------------------------------------
    too_many_recipients: Response = R(452, "Error: too many recipients", "4.5.3")
    message_too_big: Response = R(552, "Message size exceeds fixed maximum message size", "5.3.4")
    need_smtputf8: Response = R(553, "Must declare SMTPUTF8 to send unicode address", "5.6.7")
    bad_size: Response = R(501, "Syntax error in SIZE parameter", "5.5.4")
    bad_body: Response = R(501, "Error: BODY can only be one of 7BIT, 8BITMIME", "5.5.4")
    bad_smtputf8: Response = R(501, "Error: SMTPUTF8 takes no value", "5.5.4")
    bad_ret: Response = R(501, "Error: RET must be FULL or HDRS", "5.5.4")
    bad_envid: Response = R(501, "Error: ENVID must be xtext of at most 100 characters", "5.5.4")
    bad_auth_param: Response = R(501, "Error: AUTH parameter must be xtext or <>", "5.5.4")
    bad_notify: Response = R(501, "Error: NOTIFY must be NEVER or SUCCESS, FAILURE, DELAY", "5.5.4")
    bad_orcpt: Response = R(501, "Error: ORCPT must be addr-type;xtext", "5.5.4")
    mail_param_unsupported: Response = R(
        555, "Error: MAIL parameter {keyword} not supported", "5.5.4"
    )
    rcpt_param_unsupported: Response = R(
        555, "Error: RCPT parameter {keyword} not supported", "5.5.4"
    )

    # -- DATA and BDAT -------------------------------------------------------------------
    data_ready: Response = R(354, "End data with <CR><LF>.<CR><LF>")
    message_accepted: Response = R(250, "OK", "2.0.0")
    chunk_received: Response = R(250, "{size} octets received", "2.0.0")
    null_bdat: Response = R(501, "Error: BDAT 0 without LAST", "5.5.4")
    # A BDAT transaction, running or refused, takes nothing but BDAT until it ends (at
    # BDAT LAST, or RSET): Postfix's texts (smtpd.c, SMTPD_PROCESSING_BDAT).
    mail_after_bdat: Response = R(503, "Error: MAIL after BDAT", "5.5.1")
    rcpt_after_bdat: Response = R(503, "Error: RCPT after BDAT", "5.5.1")
    data_after_bdat: Response = R(503, "Error: DATA after BDAT", "5.5.1")
    bdat_failed: Response = R(503, "Error: this message was refused; send RSET", "5.5.1")
    strict_ascii: Response = R(500, "Error: strict ASCII mode", "5.6.0")

    # -- STARTTLS and AUTH ---------------------------------------------------------------
    starttls_ready: Response = R(220, "Ready to start TLS", "2.0.0")
    tls_active: Response = R(554, "Error: TLS already active", "5.5.1")
    starttls_pipelined: Response = R(554, "Error: commands pipelined after STARTTLS", "5.5.1")
    auth_succeeded: Response = R(235, "Authentication successful", "2.7.0")
    auth_invalid: Response = R(535, "Authentication credentials invalid", "5.7.8")
    already_authenticated: Response = R(503, "Error: already authenticated", "5.5.1")
    auth_in_transaction: Response = R(503, "Error: MAIL transaction in progress", "5.5.1")
    unknown_mechanism: Response = R(504, "Unrecognized authentication type", "5.5.4")
    auth_cancelled: Response = R(501, "Auth aborted", "5.7.0")
    auth_bad_base64: Response = R(501, "Can't decode base64", "5.5.2")
    auth_bad_plain: Response = R(501, "Can't split auth value", "5.5.2")
    auth_locked_out: Response = R(
        454, "Error: too many authentication failures, try later", "4.7.0"
    )

    # -- the end of a session --------------------------------------------------------------
    too_many_errors: Response = R(421, "{hostname} Error: too many errors", "4.7.0")
    too_many_auth_failures: Response = R(
        421, "{hostname} Error: too many authentication failures", "4.7.0"
    )
    too_many_connections: Response = R(421, "{hostname} Error: too many connections", "4.7.0")
    too_many_connections_from_address: Response = R(
        421, "{hostname} Error: too many connections from your address", "4.7.0"
    )
    # None, here and in shutting_down: close without a word (aiosmtpd's way).
    timeout: Response | None = R(421, "{hostname} Error: timeout exceeded", "4.4.2")
    hook_timeout: Response = R(421, "{hostname} Error: handler timed out", "4.3.0")
    # RFC 5321 §3.8: a server that stops SHOULD say so.
    shutting_down: Response | None = R(421, "{hostname} Service shutting down", "4.3.2")
    internal_error: Response = R(421, "{hostname} Error: internal server error", "4.3.0")
    # aiosmtpd's command_call_limit (ServerConfig.command_call_limits) was exceeded.
    too_many_calls: Response = R(421, "{verb} sent too many times", "4.7.0")
    # What a handler's hook that raised, or returned something that is not a reply, costs
    # the client: a temporary failure of that one command.
    hook_error: Response = R(451, "Error: internal server error", "4.3.0")

    def for_host(self, hostname: str, greeting: str) -> Replies:
        """This table with ``{hostname}`` (and the greeting's ``{greeting}``) filled in."""
        changes = {}
        for f in fields(self):
            response: Response | None = getattr(self, f.name)
            if response is None:
                continue
            if any("{hostname}" in line or "{greeting}" in line for line in response.lines):
                filled = tuple(
                    line.replace("{hostname}", hostname).replace("{greeting}", greeting).rstrip()
                    for line in response.lines
                )
                changes[f.name] = Response(response.code, filled, response.enhanced)
        return replace(self, **changes)
