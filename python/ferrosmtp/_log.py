"""The CLI's log output: one line per connection and per message, cheap enough for that.

A log line through ``logging`` costs about 18 us here, a large share of a small message's
time. ``LineFormatter`` gives the usual ``asctime`` (``2026-11-28 15:46:01,123``) with the
date and time formatted once per second instead of per line. Lines are still written one
by one, at once: buffering them (measured: 6 us more saved per line) would lose the last
lines of a worker that is killed, which are the ones an operator needs.

``JsonFormatter`` gives one JSON object a line (``--log-format json``) for log collectors.
``reopen()`` reopens a ``--log-file`` after logrotate moved it (SIGHUP, as Postfix).

``LineLogger`` (the CLI's loggers once ``install`` ran) writes an INFO line, the one per
connection, message and delivery, straight through the installed handler: the same text
(its formatter's ``line``), without a LogRecord, filters and handler calls: about 3 us a
line instead of 10. Whenever anything else is configured (another handler, a filter, a
format it cannot make), it is a plain Logger.

The library itself never configures logging; this is only used by ``ferrosmtp`` commands.
"""

from __future__ import annotations

import json
import logging
import operator
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

__all__ = ["JsonFormatter", "LineFormatter", "LineLogger", "install", "reopen", "set_format"]

# The names a LineFormatter can fill without a LogRecord.
_LINE_FIELDS = {"asctime", "levelname", "name", "message"}
# asctime's milliseconds, ",000" to ",999" (and ",1000", which a float product could make
# where logging would print it too): an index instead of a "%03d" on every line.
_MILLIS = tuple(f",{ms:03d}" for ms in range(1001))


class LineFormatter(logging.Formatter):
    """``logging.Formatter`` whose ``asctime`` reuses the formatted second, and which
    formats a record without an exception in one ``%`` (what ``Formatter.format`` does
    through five calls)."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._second = -1
        self._second_text = ""
        self._fmt_text = fmt
        self._uses_time = self.usesTime()
        # ``line`` can make this format when it names nothing but _LINE_FIELDS. It
        # formats by position (``%(name)-8s`` -> ``%-8s``): a mapping format looks its
        # keys up on every line, which cost as much as the rest of a line (callgrind).
        fields: list[str] = []

        def by_position(match: re.Match[str]) -> str:
            if match.group(1) is None:
                return "%%"
            fields.append(match.group(1))
            return "%"

        self._positional = re.sub(r"%%|%\((\w+)\)", by_position, fmt)
        # The values in the format's order (one field: the value itself, a str, which
        # ``%`` takes as well; none: no values, and ``%`` still turns ``%%`` into ``%``).
        self._in_order: Callable[[dict[str, str]], Any] = (
            operator.itemgetter(*fields) if fields else lambda values: ()
        )
        self.direct = set(fields) <= _LINE_FIELDS

    def line(self, name: str, levelname: str, created: float, message: str) -> str:
        """What ``format`` makes of a record with these fields (``direct`` formats only)."""
        second = int(created)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
        values = {
            "asctime": self._second_text + _MILLIS[int((created - second) * 1000)],
            "levelname": levelname,
            "name": name,
            "message": message,
        }
        line: str = self._positional % self._in_order(values)
        return line

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        record.message = record.getMessage()
        if self._uses_time:
            record.asctime = self.formatTime(record)
        return self._fmt_text % record.__dict__

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
        return self._second_text + _MILLIS[int(record.msecs)]


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (ISO 8601, UTC, milliseconds), ``level``,
    ``logger``, ``pid``, ``message``, and ``exception`` when there is one."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""
        self._pid = os.getpid()

    direct = True

    def format(self, record: logging.LogRecord) -> str:
        entry = self._entry(record.name, record.levelname, record.created, record.getMessage())
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)

    def line(self, name: str, levelname: str, created: float, message: str) -> str:
        """What ``format`` makes of a record with these fields and no exception."""
        return json.dumps(self._entry(name, levelname, created, message), ensure_ascii=False)

    def _entry(self, name: str, levelname: str, created: float, message: str) -> dict[str, Any]:
        second = int(created)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._pid = os.getpid()  # a forked worker formats its own pid
        return {
            "time": f"{self._second_text}.{int((created - second) * 1000):03d}Z",
            "level": levelname,
            "logger": name,
            "pid": self._pid,
            "message": message,
        }


class LeanRecord(logging.LogRecord):
    """A ``LogRecord`` made with less work when the caller is not looked up (the CLI sets
    ``logging._srcfile = None``: every record's file is "(unknown file)", and deriving its
    file name and module from that path took a third of a record's time). Any other
    record is made as ``logging`` makes it."""

    def __init__(
        self,
        name: str,
        level: int,
        pathname: str,
        lineno: int,
        msg: object,
        args: Any,
        exc_info: Any,
        func: str | None = None,
        sinfo: str | None = None,
        **kwargs: Any,
    ) -> None:
        if pathname != _UNKNOWN_FILE or kwargs:
            super().__init__(name, level, pathname, lineno, msg, args, exc_info, func, sinfo)
            return
        super().__init__(name, level, "", lineno, msg, args, exc_info, func, sinfo)
        self.pathname = self.filename = self.module = _UNKNOWN_FILE


_UNKNOWN_FILE = "(unknown file)"


def lean_records() -> None:
    """Make every log record a :class:`LeanRecord` (for the CLI, which owns the process)."""
    logging.setLogRecordFactory(LeanRecord)


# The handler ``install`` made: LineLogger writes through it while it is the only one.
_installed: logging.StreamHandler[Any] | None = None
_info_name = "INFO"


class LineLogger(logging.Logger):
    """A Logger whose ``info`` writes straight through the handler ``install`` made, as
    long as that handler is the only one a record would reach and nothing filters: the
    same line, the same locking and error handling as ``StreamHandler.emit``, without a
    LogRecord and the calls around it. Otherwise, and for every other level, a Logger."""

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        handler = _installed
        if (
            handler is None
            or kwargs
            or not self.isEnabledFor(logging.INFO)
            or (len(args) == 1 and _mapping(args[0]))  # logging's %(name)s form
            or not _only(self, handler)
        ):
            super().info(msg, *args, **kwargs)
            return
        formatter = handler.formatter
        if not getattr(formatter, "direct", False):
            super().info(msg, *args)
            return
        try:
            text = str(msg) % args if args else str(msg)
            line = formatter.line(self.name, _info_name, time.time(), text)  # type: ignore[union-attr]
        except Exception:
            super().info(msg, *args)  # logging reports the bad format its way
            return
        with handler.lock:  # type: ignore[union-attr]
            stream = handler.stream
            if stream is None:  # a closed FileHandler: emit() knows what to do
                super().info(msg, *args)
                return
            try:
                stream.write(line + handler.terminator)
                stream.flush()
            except RecursionError:
                raise
            except Exception:
                record = self.makeRecord(self.name, logging.INFO, "", 0, msg, args, None)
                handler.handleError(record)


def _mapping(arg: object) -> bool:
    return not isinstance(arg, (str, int, float)) and isinstance(arg, Mapping)


def _only(logger: logging.Logger, handler: logging.Handler) -> bool:
    """Whether ``handler`` (the root's) is the one handler a record of ``logger`` would
    reach, with no filter on the way and a level that lets INFO through."""
    if handler.filters or handler.level > logging.INFO:
        return False
    node: logging.Logger | None = logger
    while node is not None:
        if node.filters:
            return False
        if node.handlers:
            return node.parent is None and len(node.handlers) == 1 and node.handlers[0] is handler
        if not node.propagate:
            return False
        node = node.parent
    return False


def _direct_lines(handler: logging.StreamHandler[Any]) -> None:
    """Make every plain Logger, and the ones made from now on, a LineLogger writing
    through ``handler``."""
    global _installed, _info_name
    _installed = handler
    _info_name = logging.getLevelName(logging.INFO)
    logging.setLoggerClass(LineLogger)
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if type(logger) is logging.Logger:
            logger.__class__ = LineLogger


def _formatter(fmt: str, json_lines: bool) -> logging.Formatter:
    return JsonFormatter() if json_lines else LineFormatter(fmt)


def install(
    level: int, fmt: str, stream: TextIO, *, json_lines: bool = False, path: str | None = None
) -> None:
    """Like ``logging.basicConfig(level=level, format=fmt, stream=stream)``, with a
    ``LineFormatter`` (or ``JsonFormatter``), appending to ``path`` instead of ``stream``
    when given; and like basicConfig, nothing happens when the root logger has handlers
    already (an application, or pytest, configured logging)."""
    if logging.getLogger().handlers:
        return
    handler: logging.StreamHandler[Any]
    if path is not None:
        handler = logging.FileHandler(path, encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream)
    handler.setFormatter(_formatter(fmt, json_lines))
    logging.basicConfig(level=level, handlers=[handler])
    _direct_lines(handler)


def set_format(fmt: str) -> None:
    """Give every text handler of the root logger a ``LineFormatter`` for ``fmt``."""
    for handler in logging.getLogger().handlers:
        if not isinstance(handler.formatter, JsonFormatter):
            handler.setFormatter(LineFormatter(fmt))


def reopen() -> list[str]:
    """Reopen every log file of the root logger (after logrotate moved it away); returns
    their paths. Lines logged meanwhile wait for the handler's lock."""
    reopened = []
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                handler.close()  # flushes and closes; the next emit() opens the path anew
                handler.stream = handler._open()
            finally:
                handler.release()
            reopened.append(handler.baseFilename)
    return reopened
