"""The pure-Python twin of the Rust codec (``ferrosmtp._core``).

Same names, same behaviour: this package is the executable specification that the Rust
core is differentially tested against, and the "pure Python" side of every benchmark.
"""

from ferrosmtp._errors import CodecError, ReplyError
from ferrosmtp._pure.address import Path, parse_path
from ferrosmtp._pure.command import Command, parse_command
from ferrosmtp._pure.dotstuff import DotStuffer, dot_stuff
from ferrosmtp._pure.envelope import format_envelope
from ferrosmtp._pure.fastpath import ServerFastPath
from ferrosmtp._pure.framing import Data, DataEnd, Line, ServerReader, Violation
from ferrosmtp._pure.params import parse_params, xtext_decode, xtext_encode
from ferrosmtp._pure.reply import EhloReply, Reply, ReplyReader, format_reply, parse_ehlo
from ferrosmtp._pure.syncer import Syncer

__all__ = [
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
