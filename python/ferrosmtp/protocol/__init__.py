"""Sans-IO SMTP state machines (h11 style): bytes in, events and bytes out, no sockets.

``ServerConnection`` (the receiving side) and ``ClientConnection`` (the sending side) hold
every sequencing rule of their side in one place.
"""

from ferrosmtp.protocol.client import (
    Answer,
    ClientConnection,
    ExtensionNotSupported,
    LocalProtocolError,
    MessageTooLarge,
    Phase,
    RemoteProtocolError,
    ServerClosing,
)
from ferrosmtp.protocol.client import Command as ClientCommand
from ferrosmtp.protocol.events import CLOSED, NEED_DATA, Event, Response
from ferrosmtp.protocol.server import ServerConfig, ServerConnection

__all__ = [
    "CLOSED",
    "NEED_DATA",
    "Answer",
    "ClientCommand",
    "ClientConnection",
    "Event",
    "ExtensionNotSupported",
    "LocalProtocolError",
    "MessageTooLarge",
    "Phase",
    "RemoteProtocolError",
    "Response",
    "ServerClosing",
    "ServerConfig",
    "ServerConnection",
]
