"""What a caller asks to send a message to: sender, recipients and ESMTP options
(aiosmtplib's ``mail_options``, DSN's ``notify``/``ret``/``envid``/``orcpt``), checked
before any I/O and turned into the envelope's MAIL and RCPT commands once the server's
extensions are known.

Named ``SendRequest``, not ``Envelope``: ``ferrosmtp.Envelope`` is the server's record of
a received transaction (aiosmtpd's), a different thing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ferrosmtp import codec as _codec
from ferrosmtp.client.message import wire_size
from ferrosmtp.client.options import CHUNK_SIZE
from ferrosmtp.errors import SMTPNotSupported
from ferrosmtp.protocol import params as rules
from ferrosmtp.protocol.client import ClientConnection, Command, parse_option

__all__ = ["SendRequest", "dsn_notify", "params_from_options"]


def params_from_options(options: Iterable[str] | None) -> dict[str, str | None]:
    """aiosmtplib-style ``["SIZE=1000", "BODY=8BITMIME"]`` as parameters."""
    params: dict[str, str | None] = {}
    if options is None:
        return params
    if isinstance(options, str):
        raise ValueError("options must be a list of strings, not a single string")
    for option in options:
        key, value = parse_option(option)
        if key.upper() in (k.upper() for k in params):
            raise ValueError(f"ESMTP option {key} given twice")
        params[key] = value
    return params


def dsn_notify(notify: Iterable[str] | None) -> str | None:
    """The NOTIFY parameter (RFC 3461) for ``notify``; ValueError for a bad combination."""
    if notify is None:
        return None
    return rules.notify_value([notify] if isinstance(notify, str) else notify)


class SendRequest:
    """A message's sender, recipients and ESMTP parameters, turned into commands once
    the server's extensions are known."""

    def __init__(
        self,
        sender: str,
        recipients: list[str],
        mail_params: dict[str, str | None],
        rcpt_params: dict[str, str | None],
        notify: str | None,
        ret: str | None,
        envid: str | None,
        orcpt: bool | Mapping[str, str],
    ) -> None:
        self.sender = sender
        self.recipients = recipients
        self.mail_params = mail_params
        self.rcpt_params = rcpt_params
        self.notify = notify
        self.ret = ret
        self.envid = envid
        self.orcpt = orcpt
        explicit = bool(mail_params) and any(k.upper() == "SMTPUTF8" for k in mail_params)
        self.needs_smtputf8: bool = explicit or not (
            sender.isascii() and all(map(str.isascii, recipients))
        )

    def check_syntax(self) -> None:
        """Raise ValueError for anything that could not be sent whatever the server."""
        if self.ret is not None and not rules.ret_ok(self.ret):
            raise ValueError("ret must be 'FULL' or 'HDRS'")
        if self.envid is not None:
            if not isinstance(self.envid, str):
                raise ValueError("envid must be a str")
            if not rules.envid_ok(_codec.xtext_encode(self.envid), _codec.xtext_decode):
                raise ValueError(f"envid is over {rules.MAX_ENVID} characters once xtext-encoded")
        if isinstance(self.orcpt, Mapping):
            unknown = set(self.orcpt) - set(self.recipients)
            if unknown:
                raise ValueError(f"orcpt names addresses that are not recipients: {unknown}")

    def commands(self, conn: ClientConnection, body: bytes) -> list[Command]:
        """MAIL and RCPT commands for this server and message, with SIZE, SMTPUTF8 and
        BODY=8BITMIME added as needed. Whether the server offers what the parameters
        need is checked when they are sent (``ClientConnection.send_all``)."""
        offered = conn.extension_names
        if self.needs_smtputf8 and "SMTPUTF8" not in offered:
            raise SMTPNotSupported(
                "An address containing non-ASCII characters was provided, but "
                "SMTPUTF8 is not supported by this server"
            )
        automatic: dict[str, str | None] = {}
        keys = {k.upper() for k in self.mail_params} if self.mail_params else ()
        if "SIZE" not in keys and "SIZE" in offered:
            size = len(_codec.dot_stuff(body, dots=False)) if len(body) <= CHUNK_SIZE else None
            automatic["SIZE"] = str(size if size is not None else wire_size(body))
        if "BODY" not in keys and "8BITMIME" in offered and not body.isascii():
            automatic["BODY"] = "8BITMIME"
        return self._build(automatic)

    def _build(self, automatic: dict[str, str | None]) -> list[Command]:
        utf8 = self.needs_smtputf8
        mail_params = {**automatic, **self.mail_params}
        if utf8 and not any(k.upper() == "SMTPUTF8" for k in mail_params):
            mail_params["SMTPUTF8"] = None
        if self.ret is not None:
            mail_params["RET"] = self.ret.upper()
        if self.envid is not None:
            mail_params["ENVID"] = _codec.xtext_encode(self.envid)
        per_recipient = self.notify is not None or bool(self.orcpt)
        if not per_recipient:  # the same parameters on every RCPT: one codec call
            return Command.envelope(
                self.sender, self.recipients, mail_params, self.rcpt_params, smtputf8=utf8
            )
        commands = [Command.mail(self.sender, mail_params, smtputf8=utf8)]
        for recipient in self.recipients:
            params = self.rcpt_params
            if per_recipient:
                params = dict(params)
                if self.notify is not None:
                    params["NOTIFY"] = self.notify
                if self.orcpt:
                    orcpt = self.orcpt
                    original = orcpt.get(recipient) if isinstance(orcpt, Mapping) else None
                    address = original or recipient
                    kind = "utf-8" if not address.isascii() else "rfc822"
                    params["ORCPT"] = f"{kind};{_codec.xtext_encode(address)}"
            commands.append(Command.rcpt(recipient, params, smtputf8=utf8))
        return commands
