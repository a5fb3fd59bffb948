"""The ``ferrosmtp`` command: ``serve`` (receive mail into a Maildir, an mbox or stdout)
and ``send`` (send message files, an mbox or a Maildir)."""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import hmac
import ipaddress
import logging
import os
import signal
import ssl
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from ferrosmtp import __version__, _log

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_STARTUP = 3
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

log = logging.getLogger("ferrosmtp")


def _size(text: str) -> int:
    """A size like 1000000, 512K, 25M or 1G."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("B")
    factor = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    if not number.isdigit():
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 1048576, 512K, 25M)")
    return int(number) * factor


def add_serve_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="receive mail and store it (default: into ./maildir on 127.0.0.1:8025)",
        description="Run an SMTP server. Every message is stored into a Maildir (the default, "
        "./maildir), appended to an mbox, printed, or dropped.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8025, help="port to listen on (default 8025)")
    store = p.add_mutually_exclusive_group()
    store.add_argument(
        "--maildir", type=Path, help="store messages into this Maildir (default ./maildir)"
    )
    store.add_argument("--mbox", type=Path, help="append messages to this mbox file")
    store.add_argument(
        "--stdout", action="store_true", help="print messages instead of storing them"
    )
    store.add_argument("--sink", action="store_true", help="accept and drop messages (benchmarks)")
    p.add_argument(
        "--hostname", help="the name the server gives itself (default: this host's FQDN)"
    )
    p.add_argument(
        "--tls-cert", type=Path, help="PEM certificate chain for STARTTLS / implicit TLS"
    )
    p.add_argument("--tls-key", type=Path, help="PEM private key for --tls-cert")
    p.add_argument(
        "--implicit-tls",
        action="store_true",
        help="TLS from the first byte (RFC 8314, port 465 style)",
    )
    p.add_argument("--require-starttls", action="store_true", help="refuse mail before STARTTLS")
    p.add_argument(
        "--auth-file",
        type=Path,
        help="enable AUTH PLAIN/LOGIN with users from this file: one 'user:password' or "
        "'user:{sha256}hexdigest' per line",
    )
    p.add_argument(
        "--auth-required", action="store_true", help="refuse mail from unauthenticated clients"
    )
    p.add_argument(
        "--allow-insecure-auth",
        action="store_true",
        help="offer AUTH without TLS (passwords in clear!)",
    )
    p.add_argument(
        "--max-size", type=_size, default=32 << 20, help="largest message accepted (default 32M)"
    )
    p.add_argument(
        "--max-recipients", type=int, default=1000, help="recipients per message (default 1000)"
    )
    p.add_argument(
        "--max-connections", type=int, default=2000, help="simultaneous connections (default 2000)"
    )
    p.add_argument(
        "--max-connections-per-ip",
        type=int,
        default=50,
        help="simultaneous connections per client address, IPv6 per /64; 0 for no limit "
        "(default 50, as Postfix)",
    )
    p.add_argument(
        "--connection-limit-exempt",
        action="append",
        metavar="NETWORK",
        help="clients in this network are not held to --max-connections-per-ip "
        "(repeatable; default: loopback, 127.0.0.0/8 and ::1)",
    )
    p.add_argument(
        "--timeout", type=float, default=300, help="idle timeout in seconds (default 300)"
    )
    p.add_argument(
        "--proxy-protocol",
        type=float,
        metavar="SECONDS",
        help="expect a PROXY protocol v1/v2 header (HAProxy) within SECONDS before the "
        "greeting; only for a port that nothing but the load balancer can reach",
    )
    p.add_argument("--lmtp", action="store_true", help="speak LMTP (RFC 2033) instead of SMTP")
    p.add_argument(
        "--bare-newline",
        choices=["reject", "normalize"],
        default="reject",
        help="bare CR/LF in messages: refuse them (default) or repair them like Postfix",
    )
    p.add_argument("--no-received", action="store_true", help="do not add a Received: header")
    p.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="event loop: uvloop when installed (auto, the default), or asyncio's own",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port (SO_REUSEPORT), supervised and restarted "
        "if they die; limits apply per worker (default 1)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")
    p.add_argument("-v", "--verbose", action="store_true", help="log debugging details")
    p.set_defaults(run=run_serve)


class FileAuthenticator:
    """Check AUTH PLAIN/LOGIN credentials against a ``user:password`` file."""

    def __init__(self, path: Path) -> None:
        self.users: dict[bytes, bytes] = {}
        for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, secret = line.partition(":")
            if not sep or not user:
                raise ValueError(f"{path}:{number}: expected 'user:password'")
            self.users[user.encode()] = secret.encode()

    def check(self, login: bytes, password: bytes) -> bool:
        # Same work whether or not the user exists: no timing oracle for user names.
        stored = self.users.get(login, b"{sha256}" + b"0" * 64)
        if stored.startswith(b"{sha256}"):
            given = b"{sha256}" + hashlib.sha256(password).hexdigest().encode()
        else:
            given = password
        return hmac.compare_digest(given, stored) and login in self.users

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> Any:
        from ferrosmtp.server import AuthResult

        ok = self.check(auth_data.login, auth_data.password)
        if ok:
            log.info(
                "%s authenticated as %r", session.peer, auth_data.login.decode("utf-8", "replace")
            )
        else:
            log.warning("%s failed AUTH %s", session.peer, mechanism)
        return AuthResult(success=ok, handled=False, auth_data=auth_data.login if ok else None)


def _tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def _handler(args: argparse.Namespace) -> Any:
    from ferrosmtp import handlers

    if args.sink:
        return handlers.Sink()
    if args.stdout:
        return handlers.Debugging(sys.stdout)
    if args.mbox:
        return handlers.Mailbox(args.mbox, received=not args.no_received)
    return handlers.Maildir(args.maildir or Path("maildir"), received=not args.no_received)


def run_serve(args: argparse.Namespace) -> int:
    from ferrosmtp.server import Server

    if (args.tls_cert is None) != (args.tls_key is None):
        print("ferrosmtp serve: --tls-cert and --tls-key go together", file=sys.stderr)
        return EXIT_USAGE
    if args.implicit_tls and args.tls_cert is None:
        print("ferrosmtp serve: --implicit-tls needs --tls-cert and --tls-key", file=sys.stderr)
        return EXIT_USAGE
    if args.proxy_protocol is not None and (args.proxy_protocol <= 0 or args.implicit_tls):
        print(
            "ferrosmtp serve: --proxy-protocol needs a positive timeout and no --implicit-tls",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.require_starttls and (args.tls_cert is None or args.implicit_tls):
        print(
            "ferrosmtp serve: --require-starttls needs --tls-cert/--tls-key, "
            "without --implicit-tls",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        context = _tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
        authenticator = FileAuthenticator(args.auth_file) if args.auth_file else None
        handler = _handler(args)
    except (OSError, ValueError, ssl.SSLError) as error:
        print(f"ferrosmtp serve: {error}", file=sys.stderr)
        return EXIT_STARTUP
    if authenticator is not None and context is None and not args.allow_insecure_auth:
        print(
            "ferrosmtp serve: --auth-file without TLS would send passwords in clear; add "
            "--tls-cert/--tls-key, or --allow-insecure-auth for a test setup",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        exempt = [
            str(ipaddress.ip_network(network, strict=False))
            for network in args.connection_limit_exempt or ["127.0.0.0/8", "::1/128"]
        ]
    except ValueError as error:
        print(f"ferrosmtp serve: --connection-limit-exempt: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.workers < 1 or (args.workers > 1 and args.port == 0):
        print(
            "ferrosmtp serve: --workers needs a count of 1 or more and a fixed --port",
            file=sys.stderr,
        )
        return EXIT_USAGE
    make_server = functools.partial(
        Server,
        handler,
        hostname=args.hostname,
        data_size_limit=args.max_size,
        tls_context=None if args.implicit_tls else context,
        ssl_context=context if args.implicit_tls else None,
        require_starttls=args.require_starttls,
        authenticator=authenticator,
        auth_required=args.auth_required,
        auth_require_tls=not args.allow_insecure_auth,
        timeout=args.timeout,
        lmtp=args.lmtp,
        max_recipients=args.max_recipients,
        max_connections=args.max_connections,
        max_connections_per_ip=args.max_connections_per_ip or None,
        connection_limit_exempt=exempt,
        proxy_protocol_timeout=args.proxy_protocol,
        bare_newline=args.bare_newline,
    )
    if args.workers == 1:
        return _run_loop(_serve(make_server(), args), args.loop)

    from ferrosmtp._workers import supervise

    def run_worker(index: int) -> int:
        # The pid in every line tells the workers' logs apart; fixed once per worker, it
        # costs nothing per record.
        _log.set_format(LOG_FORMAT.replace("%(name)s", f"%(name)s[{os.getpid()}]"))
        return _run_loop(_serve(make_server(), args, reuse_port=True), args.loop)

    return supervise(args.workers, run_worker, startup_failure=EXIT_STARTUP)


def _run_loop(main: Coroutine[Any, Any, int], choice: str) -> int:
    """Run ``main`` on uvloop when asked for or available, else on asyncio's loop."""
    if choice != "asyncio":
        try:
            import uvloop  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            if choice == "uvloop":
                main.close()
                print("ferrosmtp serve: --loop uvloop needs: pip install uvloop", file=sys.stderr)
                return EXIT_USAGE
        else:
            result: int = uvloop.run(main)
            return result
    return asyncio.run(main)


async def _serve(server: Any, args: argparse.Namespace, *, reuse_port: bool = False) -> int:
    try:
        if reuse_port:
            await server.start(args.host, args.port, reuse_port=True)
        else:
            await server.start(args.host, args.port)
    except OSError as error:
        print(
            f"ferrosmtp serve: cannot listen on {args.host}:{args.port}: {error.strerror or error}",
            file=sys.stderr,
        )
        return EXIT_STARTUP
    where = (
        "dropping messages"
        if args.sink
        else (
            "printing messages"
            if args.stdout
            else f"storing into {args.mbox or args.maildir or Path('maildir')}"
        )
    )
    proto = "LMTP" if args.lmtp else "SMTP"
    loop_name = type(asyncio.get_running_loop()).__module__.split(".")[0]
    log.info(
        "ferrosmtp %s %s listening on %s:%d (%s loop), %s",
        *(__version__, proto, args.host, server.port, loop_name, where),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    server.close()
    await server.wait_closed()
    return EXIT_OK


def version_line() -> str:
    """``ferrosmtp 0.1.0 (rust codec, CPython 3.12.1)``: what runs, for bug reports."""
    from ferrosmtp import codec

    python = f"{sys.implementation.name.replace('cpython', 'CPython')} {sys.version.split()[0]}"
    return f"ferrosmtp {__version__} ({codec.BACKEND} codec, {python})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ferrosmtp", description="Fast, strict SMTP for Python.")
    parser.add_argument("--version", action="version", version=version_line())
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    add_serve_parser(subparsers)
    try:
        from ferrosmtp import cli_send
    except ImportError:
        pass
    else:
        cli_send.add_parser(subparsers)
    return parser


def _lighten_log_records() -> None:
    """Skip what our log format never prints: the caller's file and line (a stack walk
    per record), thread, process and multiprocessing names. These are the optimizations
    of the logging HOWTO; with a line per message they halve the cost of logging. The
    CLI owns the process, so it may set them; the library never does."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def main(argv: list[str] | None = None) -> int:
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
    _log.install(level, LOG_FORMAT, sys.stderr)
    _lighten_log_records()
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
