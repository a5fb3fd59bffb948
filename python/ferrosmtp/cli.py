"""The ``ferrosmtp`` command: its parser and ``main()``, and what every subcommand that
runs a server shares (``serve`` in ``cli_serve``, ``relay`` in the relay package): TLS
certificates and users loaded with errors that name the file and reloaded on SIGHUP,
signals, logging options, the event loop.

The subcommands: ``serve`` (``cli_serve``), ``send`` (``cli_send``), ``relay`` and
``queue`` (``relay.command``), ``passwd`` (``cli_passwd``); argument types and one-line
errors come from ``cli_args``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import ssl
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from ferrosmtp import __version__, _log
from ferrosmtp.cli_args import (
    ArgumentParser,
    UsageError,
    fail,
    readable_file,
)
from ferrosmtp.passwords import FileAuthenticator as FileAuthenticator  # relay uses it

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_STARTUP = 3
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


log: logging.Logger = logging.getLogger("ferrosmtp")


def add_log_arguments(p: argparse.ArgumentParser) -> None:
    """-q, -v, --log-format and --log-file, for the commands that run a server."""
    p.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")
    p.add_argument("-v", "--verbose", action="store_true", help="log debugging details")
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="text lines (default), or one JSON object a line for a log collector",
    )
    p.add_argument(
        "--log-file",
        metavar="PATH",
        help="append the log to this file instead of stderr; SIGHUP reopens it (logrotate)",
    )


def _tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context for ``cert`` and ``key``; UsageError naming the file at fault."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    load_certificate(context, cert, key)
    return context


def load_certificate(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    """Load ``cert`` and ``key`` into ``context`` (new for a start, the live one for a
    reload: connections made afterwards get the new certificate). Both files are checked
    on a scratch context first, so a bad pair leaves ``context`` as it was."""
    for option, path in (("--tls-cert", cert), ("--tls-key", key)):
        try:
            readable_file(str(path))
        except argparse.ArgumentTypeError as error:
            raise UsageError(f"{option}: {error}") from None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert)
    except (ssl.SSLError, ValueError):
        raise UsageError(f"--tls-cert: {cert} holds no PEM certificate") from None

    def no_passphrase() -> bytes:  # instead of OpenSSL asking on the terminal
        raise UsageError(f"--tls-key: {key} is encrypted; give an unencrypted key")

    for target in (ssl.create_default_context(ssl.Purpose.CLIENT_AUTH), context):
        try:
            target.load_cert_chain(cert, key, password=no_passphrase)
        except ssl.SSLError as error:
            reason = error.reason or error.strerror or str(error)
            raise UsageError(
                f"--tls-key: {key} is not the PEM private key of the certificate in {cert} "
                f"({reason})"
            ) from None


def _run_loop(main: Coroutine[Any, Any, int], choice: str) -> int:
    """Run ``main`` on uvloop when asked for or available, else on asyncio's loop."""
    from ferrosmtp._loops import uvloop_module

    try:
        uvloop = uvloop_module(choice)
    except ImportError:
        main.close()
        print("ferrosmtp serve: --loop uvloop needs: pip install uvloop", file=sys.stderr)
        return EXIT_USAGE
    if uvloop is not None:
        result: int = uvloop.run(main)
        return result
    return asyncio.run(main)


def install_signals(stop: asyncio.Event, reload: Any) -> None:
    """SIGINT and SIGTERM set ``stop``; SIGHUP calls ``reload()``. Windows has neither
    loop signal handlers nor SIGHUP: there Ctrl-C stops, through signal.signal."""
    loop = asyncio.get_running_loop()
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload)
    except (NotImplementedError, AttributeError):  # Windows
        signal.signal(signal.SIGINT, lambda *_: loop.call_soon_threadsafe(stop.set))


def reload_server(server: Any, args: argparse.Namespace) -> None:
    """SIGHUP, as Postfix's reload: reopen the log file, reload the TLS certificate and
    the users. A file that no longer loads is logged, and the old one stays in use."""
    reopened = _log.reopen()
    log.info("SIGHUP: reloading%s", f" (log reopened: {', '.join(reopened)})" if reopened else "")
    context = server.ssl_context or server.tls_context
    if context is not None and args.tls_cert is not None:
        try:
            load_certificate(context, args.tls_cert, args.tls_key)
        except UsageError as error:
            log.error("TLS not reloaded, the previous certificate stays: %s", error)
        else:
            log.info("TLS certificate reloaded from %s", args.tls_cert)
    authenticator = server.authenticator
    if isinstance(authenticator, FileAuthenticator):
        try:
            users = authenticator.reload()
        except (OSError, ValueError) as error:
            log.error("users not reloaded, the previous ones stay: %s", _describe(error))
        else:
            log.info("%d users reloaded from %s", users, authenticator.path)


def _describe(error: BaseException) -> str:
    """An OSError as "path: reason" (not "[Errno 2] No such file or directory: 'path'")."""
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    return str(error)


def version_line() -> str:
    """``ferrosmtp 0.1.0 (rust codec, CPython 3.12.1)``: what runs, for bug reports."""
    from ferrosmtp import codec

    python = f"{sys.implementation.name.replace('cpython', 'CPython')} {sys.version.split()[0]}"
    return f"ferrosmtp {__version__} ({codec.BACKEND} codec, {python})"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``ferrosmtp`` command and its subcommands."""
    parser = ArgumentParser(prog="ferrosmtp", description="Fast, strict SMTP for Python.")
    parser.add_argument("--version", action="version", version=version_line())
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")
    from ferrosmtp import cli_serve

    cli_serve.add_serve_parser(subparsers)
    try:
        from ferrosmtp import cli_send
    except ImportError:
        pass
    else:
        cli_send.add_parser(subparsers)
    from ferrosmtp.relay import command as relay_command

    relay_command.add_parsers(subparsers)  # ferrosmtp relay, ferrosmtp queue
    from ferrosmtp import cli_passwd

    cli_passwd.add_parser(subparsers)  # ferrosmtp passwd
    return parser


def _lighten_log_records() -> None:
    """Skip what our log format never prints: the caller's file and line (a stack walk
    per record), thread, process and multiprocessing names. These are the optimizations
    of the logging HOWTO; with a line per message they halve the cost of logging. The
    CLI owns the process, so it may set them; the library never does."""
    logging._srcfile = None
    _log.lean_records()  # and so no file name or module derived from "(unknown file)"
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def main(argv: list[str] | None = None) -> int:
    """The ``ferrosmtp`` command; returns its exit status."""
    try:  # an unknown FERROSMTP_BACKEND, or "rust" without the extension built
        importlib.import_module("ferrosmtp.codec")
    except ImportError as error:
        return fail("ferrosmtp", str(error))
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_USAGE
    level = logging.INFO
    if getattr(args, "quiet", False):
        level = logging.WARNING
    if getattr(args, "verbose", False):
        level = logging.DEBUG
    try:
        _log.install(
            level,
            LOG_FORMAT,
            sys.stderr,
            json_lines=getattr(args, "log_format", "text") == "json",
            path=getattr(args, "log_file", None),
        )
    except OSError as error:
        return fail(
            f"ferrosmtp {getattr(args, 'command', '')}".strip(), f"--log-file: {_describe(error)}"
        )
    _lighten_log_records()
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
