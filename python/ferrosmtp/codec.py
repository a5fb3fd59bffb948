"""The active codec backend: the Rust core, or its pure-Python twin.

``FERROSMTP_BACKEND=rust`` (the default) or ``pure`` chooses. When the Rust extension
is not built (a source checkout used through PYTHONPATH), the default falls back to the
pure twin; asking for ``rust`` explicitly then raises ImportError.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import TYPE_CHECKING

_choice = os.environ.get("FERROSMTP_BACKEND", "").strip().lower() or "default"
if _choice not in ("default", "rust", "pure"):
    raise ImportError(f"FERROSMTP_BACKEND must be 'rust' or 'pure', not {_choice!r}")


backend: ModuleType
if _choice == "pure":
    from ferrosmtp import _pure as backend
else:
    try:
        from ferrosmtp import _core as backend
    except ImportError as error:
        if _choice == "rust":
            raise ImportError(
                f"FERROSMTP_BACKEND=rust, but the Rust extension cannot be imported ({error})"
            ) from error
        from ferrosmtp import _pure as backend

BACKEND: str = "rust" if backend.__name__.endswith("_core") else "pure"

CodecError = backend.CodecError
ReplyError = backend.ReplyError
Command = backend.Command
Data = backend.Data
DataEnd = backend.DataEnd
DotStuffer = backend.DotStuffer
EhloReply = backend.EhloReply
Line = backend.Line
if TYPE_CHECKING:
    # ``backend`` is only known at run time, so every name here is typed Any, and a
    # variable cannot annotate anything. Path is used in annotations (events.MailFrom,
    # events.RcptTo): the type checker sees the class the stub declares, whose interface
    # the pure twin's Path shares. At run time it is the chosen backend's class, as before.
    from ferrosmtp._core import Path as Path
else:
    Path = backend.Path
Reply = backend.Reply
ReplyReader = backend.ReplyReader
ServerReader = backend.ServerReader
Violation = backend.Violation
dot_stuff = backend.dot_stuff
format_reply = backend.format_reply
parse_command = backend.parse_command
parse_ehlo = backend.parse_ehlo
parse_params = backend.parse_params
parse_path = backend.parse_path
xtext_decode = backend.xtext_decode
xtext_encode = backend.xtext_encode
