"""The client's defaults and size constants, and the types of its options.

Shared by ``Client``, ``Pool`` and ``send()``; kept apart so that each of them (and the
asyncio and message helpers) can import them without importing one another.
"""

from __future__ import annotations

import enum
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Literal, TypedDict

__all__ = [
    "BDAT_THRESHOLD",
    "CHUNK_SIZE",
    "DEFAULT",
    "DEFAULT_DATA_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "LMTP_PORT",
    "SMTP_PORT",
    "SUBMISSIONS_PORT",
    "SUBMISSION_PORT",
    "WRITE_BUFFER_HIGH",
    "ClientOptions",
    "Default",
    "SMTPTokenGenerator",
    "SocketPathType",
    "Timeout",
]

DEFAULT_TIMEOUT = 60.0  # seconds: connecting, and each reply (aiosmtplib's default)
DEFAULT_DATA_TIMEOUT = 600.0  # seconds: message content up to its final reply (RFC 5321
# §4.5.3.2.6 asks clients to wait 10 minutes for the reply to the end of data)
BDAT_THRESHOLD = 4 << 20  # messages this big go by BDAT when the server offers CHUNKING
CHUNK_SIZE = 1 << 20  # message content is encoded and written in pieces of this size
WRITE_BUFFER_HIGH = 1 << 20  # transport buffer above which writing waits for the socket
SMTP_PORT, SUBMISSION_PORT, SUBMISSIONS_PORT, LMTP_PORT = 25, 587, 465, 24

SMTPTokenGenerator = Callable[[], Awaitable[str]]
SocketPathType = str | bytes | os.PathLike[str]


class Default(enum.Enum):
    """Marks "use the value given to the constructor" (aiosmtplib's ``Default.token``)."""

    token = 0


DEFAULT: Literal[Default.token] = Default.token
Timeout = float | None | Literal[Default.token]


class ClientOptions(TypedDict, total=False):
    """The keyword arguments of ``Client`` after hostname and port, as ``Pool`` takes them
    (a test holds the two lists equal)."""

    username: str | bytes | None
    password: str | bytes | None
    oauth_token_generator: SMTPTokenGenerator | None
    local_hostname: str | None
    source_address: tuple[str, int] | None
    timeout: float | None
    data_timeout: float | None
    use_tls: bool
    start_tls: bool | None
    validate_certs: bool
    client_cert: str | None
    client_key: str | None
    tls_context: ssl.SSLContext | None
    cert_bundle: str | None
    socket_path: SocketPathType | None
    sock: socket.socket | None
    lmtp: bool
    use_bdat: bool
    pipeline_bdat: bool
    bdat_threshold: int | None
    allow_insecure_auth: bool
