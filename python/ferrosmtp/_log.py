"""The CLI's log output: one line per connection and per message, cheap enough for that.

A log line through ``logging`` costs about 18 us here, a large share of a small message's
time. ``LineFormatter`` gives the usual ``asctime`` (``2026-11-28 15:46:01,123``) with the
date and time formatted once per second instead of per line. Lines are still written one
by one, at once: buffering them (measured: 6 us more saved per line) would lose the last
lines of a worker that is killed, which are the ones an operator needs.

``JsonFormatter`` gives one JSON object a line (``--log-format json``) for log collectors.
``reopen()`` reopens a ``--log-file`` after logrotate moved it (SIGHUP, as Postfix).

The library itself never configures logging; this is only used by ``ferrosmtp`` commands.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, TextIO

__all__ = ["JsonFormatter", "LineFormatter", "install", "reopen", "set_format"]


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
        return f"{self._second_text},{int(record.msecs):03d}"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (ISO 8601, UTC, milliseconds), ``level``,
    ``logger``, ``pid``, ``message``, and ``exception`` when there is one."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""
        self._pid = os.getpid()

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._pid = os.getpid()  # a forked worker formats its own pid
        entry = {
            "time": f"{self._second_text}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": self._pid,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


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
    handler: logging.Handler
    if path is not None:
        handler = logging.FileHandler(path, encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream)
    handler.setFormatter(_formatter(fmt, json_lines))
    logging.basicConfig(level=level, handlers=[handler])


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
