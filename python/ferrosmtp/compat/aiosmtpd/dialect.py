"""aiosmtpd 1.4.6's words for ferrosmtp's replies: the state machine's reply table
(``AIOSMTPD_REPLIES``) and its ``dialect`` hook (:func:`aiosmtpd_dialect`), which rewords
the codec's refusals and the few replies whose words depend on the session's state.

Only words change here: every rule (what is refused, when, which limits apply) stays the
state machine's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from ferrosmtp.protocol import events as ev
from ferrosmtp.protocol.events import Event, Response
from ferrosmtp.protocol.replies import Replies

__all__ = ["AIOSMTPD_REPLIES", "SYNTAX", "aiosmtpd_dialect", "dialect_for"]

R = Response.of

# aiosmtpd's `@syntax` strings (verb -> text, and what ESMTP sessions see after it), for
# HELP and the 501 usage replies. An SMTP subclass's own smtp_<VERB> methods add theirs.
Syntax = Mapping[str, tuple[str, str]]
SYNTAX: Syntax = {
    "AUTH": ("AUTH <mechanism>", ""),
    "DATA": ("DATA", ""),
    "EHLO": ("EHLO hostname", ""),
    "HELO": ("HELO hostname", ""),
    "HELP": ("HELP [command]", ""),
    "LHLO": ("LHLO hostname", ""),
    "MAIL": ("MAIL FROM: <address>", " [SP <mail-parameters>]"),
    "NOOP": ("NOOP [ignored]", ""),
    "QUIT": ("QUIT", ""),
    "RCPT": ("RCPT TO: <address>", " [SP <mail-parameters>]"),
    "RSET": ("RSET", ""),
    "STARTTLS": ("STARTTLS", ""),
    "VRFY": ("VRFY <address>", ""),
}

# aiosmtpd 1.4.6's words for the replies the state machine gives by itself (its one reply
# table). The server adds no enhanced codes; where aiosmtpd writes one, it is in the text.
AIOSMTPD_REPLIES = replace(
    Replies(),
    need_helo=R(503, "Error: send HELO first"),
    no_recipients=R(503, "Error: need RCPT command"),
    need_auth=R(530, "5.7.0 Authentication required"),
    need_smtputf8=R(500, "Error: strict ASCII mode"),
    bad_smtputf8=R(501, "Error: SMTPUTF8 takes no arguments"),
    message_too_big=R(552, "Error: message size exceeds fixed maximum message size"),
    rcpt_param_unsupported=R(555, "RCPT TO parameters not recognized or not implemented"),
    already_authenticated=R(503, "Already authenticated"),
    unknown_mechanism=R(504, "5.5.4 Unrecognized authentication type"),
    auth_succeeded=R(235, "2.7.0 Authentication successful"),
    auth_invalid=R(535, "5.7.8 Authentication credentials invalid"),
    auth_cancelled=R(501, "5.7.0 Auth aborted"),
    auth_bad_base64=R(501, "5.5.2 Can't decode base64"),
    auth_bad_plain=R(501, "5.5.2 Can't split auth value"),
    too_many_calls=R(421, "4.7.0 {verb} sent too many times"),
    cannot_vrfy=R(502, "Could not VRFY {argument}"),
    too_many_unknown_commands=R(502, "5.5.1 Too many unrecognized commands, goodbye."),
    # aiosmtpd closes a connection without a word when it stops and when the client has
    # been idle too long.
    shutting_down=None,
    timeout=None,
)

# The codec's refusals (they are not in the reply table): its text -> aiosmtpd's reply.
_TEXTS: dict[str, Response] = {
    "Line too long": R(500, "Command line too long"),
    "Line too long (see RFC 5321 4.5.3.1.6)": R(500, "Line too long (see RFC5321 4.5.3.1.6)"),
    "Syntax error: empty command": R(500, "Error: bad syntax"),
    "Syntax error: command unrecognized": R(500, "Error: bad syntax"),
    "Syntax error: invalid character in command": R(500, "Error: bad syntax"),
    "Syntax error: 8-bit characters not allowed": R(500, "Error: strict ASCII mode"),
    "Syntax error: invalid UTF-8": R(500, "Error: strict ASCII mode"),
    "Must declare SMTPUTF8 to send unicode address": R(500, "Error: strict ASCII mode"),
}

# (verb, ferrosmtp's text) -> aiosmtpd's reply, where aiosmtpd's depends on the command.
_BY_VERB: dict[tuple[str, str], Response] = {
    ("DATA", "Message size exceeds fixed maximum message size"): R(
        552, "Error: Too much mail data"
    ),
    ("STARTTLS", "Error: command not implemented"): R(454, "TLS not available"),
    ("AUTH", "Error: command not implemented"): R(500, "Error: command 'AUTH' not recognized"),
    ("AUTH", "Must issue a STARTTLS command first"): R(
        538, "5.7.11 Encryption required for requested authentication mechanism"
    ),
    ("DATA", "Error: need MAIL command"): R(503, "Error: need RCPT command"),
}


Dialect = Callable[[Any, Response, Event | None], Response]


def dialect_for(syntax: Syntax) -> Dialect:
    """The dialect of an SMTP class whose commands have these ``@syntax`` strings."""
    if syntax == SYNTAX:
        return aiosmtpd_dialect

    def dialect(conn: Any, response: Response, event: Event | None) -> Response:
        return aiosmtpd_dialect(conn, response, event, syntax)

    return dialect


def aiosmtpd_dialect(
    conn: Any, response: Response, event: Event | None, syntax: Syntax = SYNTAX
) -> Response:
    """ServerConnection's reply, in aiosmtpd 1.4.6's words. ``conn`` is the connection
    (read only): some of aiosmtpd's replies depend on its state. Called for every reply:
    answers and positive replies leave at once (the hot path of a session)."""
    if event is not None:  # an answer (a hook's or a default): only HELP's words differ
        if type(event) is ev.Help:
            return _help(conn, event.arg, response, syntax)
        return response
    if response.code < 400:  # the greeting, 354, ...: aiosmtpd's words already
        return response
    text = response.lines[0]
    said = _BY_VERB.get((conn.verb, text)) or _TEXTS.get(text)
    if said is not None:
        return said
    if text.startswith("Syntax: AUTH"):
        return _auth_usage(conn, text.endswith("(too many arguments)"))
    if text.startswith("Error: MAIL parameter "):
        if text == "Error: MAIL parameter SMTPUTF8 not supported":
            return R(501, "Error: SMTPUTF8 disabled")
        return R(555, "MAIL FROM parameters not recognized or not implemented")
    if text.endswith(_MALFORMED):
        return R(553, "5.1.3 Error: malformed address")
    usage = _usage_verb(conn, text, syntax)
    if usage is not None:
        return R(501, _usage(conn, usage, syntax))
    return response


def _usage_verb(conn: Any, text: str, syntax: Syntax) -> str | None:
    """The command a syntax refusal is about, when aiosmtpd answers it with its usage."""
    if text.startswith("Syntax: "):  # the codec's usage reply names its command
        verb = text.split()[1]
        return verb if verb in syntax else None
    if text.startswith("Bad sender address syntax"):
        return "MAIL"
    if text.startswith("Bad recipient address syntax"):
        return "RCPT"
    if text.startswith(_PARAMETER_ERRORS):
        # The codec names no command here: MAIL if no transaction is open, else RCPT.
        return "MAIL" if conn.mail is None else "RCPT"
    return None


# Path refusals aiosmtpd answers 553 (an empty local part or domain); the others get its
# usage reply.
_MALFORMED = (
    ": invalid source route",
    ": invalid domain",
    ": empty local part",
    ": local part too long",  # aiosmtpd's local_part_limit; ferrosmtp's is RFC 5321's 64
)

_PARAMETER_ERRORS = (
    "Syntax error in parameters",
    "Syntax error in SIZE parameter",
    "Syntax error: duplicate parameter",
    "Syntax error: invalid xtext",
    "Error: AUTH parameter",
    "Error: RET ",
    "Error: ENVID ",
    "Error: NOTIFY ",
    "Error: ORCPT ",
)


def _usage(conn: Any, verb: str, syntax: Syntax) -> str:
    text, extended = syntax[verb]
    return "Syntax: " + text + (extended if conn.esmtp else "")


def _auth_usage(conn: Any, too_many: bool) -> Response:
    """AUTH without a mechanism, or with more than a mechanism and an initial response
    (the codec refuses both): aiosmtpd checks the session first, in this order."""
    if conn.hello is None:
        return R(503, "Error: send EHLO first")
    if not conn.esmtp:
        return R(500, "Error: command 'AUTH' not recognized")
    if conn.config.auth_require_tls and not conn.tls:
        return R(538, "5.7.11 Encryption required for requested authentication mechanism")
    if conn.authenticated:
        return R(503, "Already authenticated")
    if too_many:
        return R(501, "Too many values")
    return R(501, "Not enough value")


def _help(conn: Any, arg: str, response: Response, syntax: Syntax) -> Response:
    if response.code != 214:
        return response  # a handler's own HELP reply
    # ferrosmtp's list names the verbs this connection offers; aiosmtpd's lists those
    # with a syntax line (so not EXPN or BDAT), an SMTP subclass's own commands too.
    offered = response.lines[0].removeprefix("Supported commands: ").split()
    verbs = sorted(v for v in {*offered, "AUTH"} if v in syntax)
    if arg:
        verb = arg.upper()
        if verb in verbs:
            return R(250, _usage(conn, verb, syntax))
        return R(501, "Supported commands: " + " ".join(verbs))
    return R(250, "Supported commands: " + " ".join(verbs))
