"""Argument types and parsing shared by every ``ferrosmtp`` subcommand.

A bad argument is one line on stderr naming the option and what is wrong, and exit
status 2: never a usage dump, never a traceback. Every subcommand builds its options with
these types (``port``, ``seconds``, ``size``, ``readable_file``...) so that ``serve``,
``send``, ``relay`` and ``passwd`` refuse the same mistakes with the same words.

``ArgumentParser(env_prefix="FERROSMTP_")`` also reads each option from the environment,
as a container sets it: ``--max-size`` from ``FERROSMTP_MAX_SIZE``, ``--tls-cert`` from
``FERROSMTP_TLS_CERT``. The command line wins over the environment, which wins over the
built-in default; a bad value names the variable.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = [
    "EXIT_USAGE",
    "ArgumentParser",
    "UsageError",
    "count",
    "fail",
    "listen_port",
    "network",
    "port",
    "readable_file",
    "seconds",
    "size",
]

EXIT_USAGE = 2

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class UsageError(ValueError):
    """A problem with the command line that a person can fix: one line, exit status 2.

    A ValueError, so that code which caught ValueError for a bad file keeps working."""


def _integer(text: str, what: str) -> int:
    stripped = text.strip()
    if not stripped.isascii() or not stripped.lstrip("-").isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return int(stripped)


def port(text: str) -> int:
    """A TCP port to connect to: 1 to 65535."""
    number = _integer(text, "a port number")
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port number (1-65535)")
    return number


def listen_port(text: str) -> int:
    """A TCP port to listen on: 0 (any free port) to 65535."""
    number = _integer(text, "a port number")
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port number (0-65535)")
    return number


def count(minimum: int = 0) -> Any:
    """An integer of at least ``minimum`` (a limit, a number of workers)."""

    def parse(text: str) -> int:
        number = _integer(text, "a whole number")
        if number < minimum:
            raise argparse.ArgumentTypeError(f"{text} is less than {minimum}")
        return number

    parse.__name__ = f"count({minimum})"
    return parse


def seconds(text: str) -> float:
    """A positive, finite number of seconds (a timeout)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def size(text: str) -> int:
    """A positive size in octets: 1048576, 512K, 25M or 1G."""
    stripped = text.strip().upper().removesuffix("B")
    factor = _UNITS.get(stripped[-1:], 1)
    number = stripped[:-1] if stripped[-1:] in _UNITS else stripped
    if not number.isascii() or not number.isdigit() or int(number) == 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a positive size (use e.g. 1048576, 512K, 25M)"
        )
    return int(number) * factor


def readable_file(text: str) -> Path:
    """A file that exists and can be read now; the error names it and says why not."""
    path = Path(text)
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {error.strerror or error}") from None
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"cannot read {text}: it is a directory")
    return path


def network(text: str) -> str:
    """An IP network (``192.0.2.0/24``, ``2001:db8::/32``) or address, normalized."""
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP network or address") from None


class _Unset:
    """The default of an option while it is parsed: "not on the command line"."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with one-line errors (exit 2) and, given
    ``env_prefix``, options read from the environment."""

    def __init__(
        self,
        *args: Any,
        env_prefix: str | None = None,
        environ: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.env_prefix = env_prefix
        self.environ = environ

    def error(self, message: str) -> NoReturn:
        """Print ``prog: message`` on one line and exit with status 2."""
        message = message.removeprefix("argument ")  # "argument --port: ..." -> "--port: ..."
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")

    def env_name(self, action: argparse.Action) -> str | None:
        """The environment variable of an option (``--max-size`` -> FERROSMTP_MAX_SIZE)."""
        if self.env_prefix is None or not action.option_strings or _skipped(action):
            return None
        return self.env_prefix + action.dest.upper()

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Parse the command line, then fill options not given from the environment."""
        if self.env_prefix is None:
            return super().parse_known_args(args, namespace)
        # Every option that has a variable parses with the default "unset", so that what
        # the command line gave can be told from what it did not (then the environment's
        # value, or the real default, is filled in). Real defaults must be values of the
        # option's type, not strings for argparse to convert.
        defaults: dict[str, Any] = {}
        for action in self._actions:
            if self.env_name(action) is not None:
                defaults[action.dest] = action.default
                action.default = None if _is_append(action) else _UNSET
        try:
            parsed, rest = super().parse_known_args(args, namespace)
        finally:
            for action in self._actions:
                if action.dest in defaults:
                    action.default = defaults[action.dest]
        self._apply_environment(parsed, defaults)
        return parsed, rest

    def _apply_environment(self, parsed: argparse.Namespace, defaults: dict[str, Any]) -> None:
        environ = os.environ if self.environ is None else self.environ
        given = {
            action.dest
            for action in self._actions
            if action.dest in defaults and not _unset(action, getattr(parsed, action.dest))
        }
        from_env: dict[str, str] = {}
        for action in self._actions:
            if action.dest not in defaults or action.dest in given:
                continue
            name = self.env_name(action)
            value = environ.get(name) if name else None
            rivals = _rivals(self, action)
            if value is None or rivals & given:
                setattr(parsed, action.dest, defaults[action.dest])
                continue
            clash = sorted(from_env[d] for d in rivals if d in from_env)
            if clash:
                self.error(f"{name} and {clash[0]} cannot be used together")
            assert name is not None
            from_env[action.dest] = name
            setattr(parsed, action.dest, self._convert(action, name, value))

    def _convert(self, action: argparse.Action, name: str, value: str) -> Any:
        if _is_flag(action):
            if value.strip().lower() in _TRUE:
                return action.const
            if value.strip().lower() in _FALSE:
                return action.default if action.default is not _UNSET else False
            self.error(f"{name}={value!r}: use 1/true/yes or 0/false/no")
        items = value.replace(",", " ").split() if _is_append(action) else [value]
        converted = []
        for item in items:
            try:
                result = action.type(item) if callable(action.type) else item
            except (argparse.ArgumentTypeError, ValueError, TypeError) as error:
                self.error(f"{name}: {error}")
            if action.choices is not None and result not in action.choices:
                choices = ", ".join(map(str, action.choices))
                self.error(f"{name}={item!r}: choose from {choices}")
            converted.append(result)
        return converted if _is_append(action) else converted[0]


def _skipped(action: argparse.Action) -> bool:
    return isinstance(action, (argparse._HelpAction, argparse._VersionAction)) or (
        action.dest == argparse.SUPPRESS
    )


def _is_flag(action: argparse.Action) -> bool:
    return isinstance(action, (argparse._StoreTrueAction, argparse._StoreConstAction))


def _is_append(action: argparse.Action) -> bool:
    return isinstance(action, argparse._AppendAction)


def _unset(action: argparse.Action, value: object) -> bool:
    return value is _UNSET or (_is_append(action) and value is None)


def _rivals(parser: argparse.ArgumentParser, action: argparse.Action) -> set[str]:
    """The other options of ``action``'s mutually exclusive groups."""
    return {
        other.dest
        for group in parser._mutually_exclusive_groups
        if action in group._group_actions
        for other in group._group_actions
        if other is not action
    }


def fail(prog: str, message: str) -> int:
    """Print ``prog: message`` on stderr and return the usage exit status, for the
    checks that look at several options together (after parsing)."""
    print(f"{prog}: {message}", file=sys.stderr)
    return EXIT_USAGE
