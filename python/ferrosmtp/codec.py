"""The active codec backend: the Rust core, or its pure-Python twin.

``FERROSMTP_BACKEND=rust`` (the default) or ``pure`` chooses. When the Rust extension
is not built (a source checkout used through PYTHONPATH), the default falls back to the
pure twin; asking for ``rust`` explicitly then raises ImportError.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

_choice = os.environ.get("FERROSMTP_BACKEND", "").strip().lower() or "default"
if _choice not in ("default", "rust", "pure"):
    raise ImportError(f"FERROSMTP_BACKEND must be 'rust' or 'pure', not {_choice!r}")


def _load() -> ModuleType:
    if _choice == "pure":
        from ferrosmtp import _pure

        return _pure
    try:
        from ferrosmtp import _core
    except ImportError as error:
        if _choice == "rust":
            raise ImportError(
                f"FERROSMTP_BACKEND=rust, but the Rust extension cannot be imported ({error})"
            ) from error
        from ferrosmtp import _pure

        return _pure
    return _core


def _load_pure_syncer() -> Any:
    from ferrosmtp._pure.syncer import Syncer

    return Syncer


backend: ModuleType = _load()
"""The active backend module, ``ferrosmtp._core`` or ``ferrosmtp._pure``."""

BACKEND: Literal["rust", "pure"] = "rust" if backend.__name__.endswith("_core") else "pure"
"""Which backend is active: ``"rust"`` (``ferrosmtp._core``) or ``"pure"``."""

if TYPE_CHECKING:
    # Type checkers see the classes and functions that _core.pyi declares, whichever
    # backend runs: the pure twin implements the same interface (the codec tests hold
    # both to the same signatures, docstrings and behaviour), so code written against
    # ``codec.Command`` is right under both, and a wrong argument type is an error.
    from ferrosmtp._core import (
        CodecError,
        Command,
        Data,
        DataEnd,
        DotStuffer,
        EhloReply,
        Line,
        Path,
        Reply,
        ReplyError,
        ReplyReader,
        ServerFastPath,
        ServerReader,
        Syncer,
        Violation,
        dot_stuff,
        format_envelope,
        format_reply,
        parse_command,
        parse_ehlo,
        parse_params,
        parse_path,
        xtext_decode,
        xtext_encode,
    )
else:
    CodecError = backend.CodecError
    ReplyError = backend.ReplyError
    Command = backend.Command
    Data = backend.Data
    DataEnd = backend.DataEnd
    DotStuffer = backend.DotStuffer
    EhloReply = backend.EhloReply
    Line = backend.Line
    Path = backend.Path
    Reply = backend.Reply
    ReplyReader = backend.ReplyReader
    ServerFastPath = backend.ServerFastPath
    ServerReader = backend.ServerReader
    # The Rust syncer is built for POSIX only (the relay, its one user, needs POSIX);
    # elsewhere the pure one stands in, so that the codec imports on every platform.
    Syncer = getattr(backend, "Syncer", None) or _load_pure_syncer()
    Violation = backend.Violation
    dot_stuff = backend.dot_stuff
    format_envelope = backend.format_envelope
    format_reply = backend.format_reply
    parse_command = backend.parse_command
    parse_ehlo = backend.parse_ehlo
    parse_params = backend.parse_params
    parse_path = backend.parse_path
    xtext_decode = backend.xtext_decode
    xtext_encode = backend.xtext_encode

__all__ = [
    "BACKEND",
    "CodecError",
    "Command",
    "Data",
    "DataEnd",
    "DotStuffer",
    "EhloReply",
    "Line",
    "Path",
    "Reply",
    "ReplyError",
    "ReplyReader",
    "ServerFastPath",
    "ServerReader",
    "Syncer",
    "Violation",
    "backend",
    "dot_stuff",
    "format_envelope",
    "format_reply",
    "parse_command",
    "parse_ehlo",
    "parse_params",
    "parse_path",
    "xtext_decode",
    "xtext_encode",
]
