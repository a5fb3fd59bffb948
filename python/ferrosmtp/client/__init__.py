"""An asyncio SMTP/LMTP client with aiosmtplib's API, and a connection pool.

``Client`` drives the sans-IO ``protocol.client.ClientConnection`` from an
``asyncio.Protocol``: the connection decides what may be sent and pairs every reply with
its command; the client does the I/O, the timeouts, TLS and the policy (which
extensions to use for a message). ``send()`` is the one-call helper and ``Pool`` keeps a
fixed number of connections to one server for bulk sending.

What it adds to aiosmtplib's behaviour: MAIL, RCPT and DATA pipelined in one write when
the server offers PIPELINING; BDAT when it offers CHUNKING (opt-in, and automatic for
big messages); SIZE checked before sending; SMTPUTF8 and BODY=8BITMIME declared when the
message needs them; DSN options; LMTP with one result per recipient; a strict STARTTLS
(bytes after the 220 abort the connection); AUTH (any mechanism) only over TLS or to a
loopback peer unless ``allow_insecure_auth=True``.

This package's ``__init__`` is the import path of the client's public names; the code
lives in modules with one job each:

- ``session``: ``Client``, built in layers, one a module: ``core`` (options, state, the
  command exchange), ``commands`` (EHLO, NOOP, VRFY...), ``tls`` (the TLS context and
  STARTTLS), ``auth`` (SASL), ``transaction`` (the pipelined transaction engine),
  ``messages`` (``mail()``... ``sendmail()``, ``send_message()``), ``session`` itself
  (connecting);
- ``pool``: ``Pool``;
- ``oneshot``: ``send()``;
- ``io``: the ``asyncio.Protocol`` between the socket and ``ClientConnection``;
- ``lock``: the FIFO lock that hands a session from one transaction to the next;
- ``request``: ``SendRequest``, sender, recipients and ESMTP options turned into
  commands;
- ``message``: a message's bytes, wire size and header addresses;
- ``results``: ``SMTPResponse`` and ``SendResult``;
- ``options``: defaults, size constants and option types.
"""

from __future__ import annotations

from ferrosmtp.client.message import extract_recipients as extract_recipients
from ferrosmtp.client.message import extract_sender as extract_sender
from ferrosmtp.client.message import flatten_message as flatten_message
from ferrosmtp.client.message import wire_size as wire_size
from ferrosmtp.client.oneshot import send
from ferrosmtp.client.options import BDAT_THRESHOLD as BDAT_THRESHOLD
from ferrosmtp.client.options import CHUNK_SIZE as CHUNK_SIZE
from ferrosmtp.client.options import DEFAULT_DATA_TIMEOUT, DEFAULT_TIMEOUT
from ferrosmtp.client.options import LMTP_PORT as LMTP_PORT
from ferrosmtp.client.options import SMTP_PORT as SMTP_PORT
from ferrosmtp.client.options import SUBMISSION_PORT as SUBMISSION_PORT
from ferrosmtp.client.options import SUBMISSIONS_PORT as SUBMISSIONS_PORT
from ferrosmtp.client.options import WRITE_BUFFER_HIGH as WRITE_BUFFER_HIGH
from ferrosmtp.client.options import SMTPTokenGenerator as SMTPTokenGenerator
from ferrosmtp.client.options import SocketPathType as SocketPathType
from ferrosmtp.client.options import Timeout as Timeout
from ferrosmtp.client.pool import Pool
from ferrosmtp.client.results import SendResult, SMTPResponse, SMTPStatus
from ferrosmtp.client.session import Client

__all__ = [
    "DEFAULT_DATA_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "Client",
    "Pool",
    "SMTPResponse",
    "SMTPStatus",
    "SendResult",
    "send",
]
