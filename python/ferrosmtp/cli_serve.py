"""``ferrosmtp serve``: receive mail and store it into a Maildir, an mbox or stdout.

Two functions for ``ferrosmtp.cli``: ``add_serve_parser(subparsers)`` and ``run_serve(args)``.
What a server process needs beyond its options (TLS and users loaded with errors that name
the file and reloaded on SIGHUP, signals, logging, the event loop) is in ``ferrosmtp.cli``,
shared with ``ferrosmtp relay``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
from pathlib import Path
from typing import Any

from ferrosmtp import __version__, _log
from ferrosmtp.cli import (
    EXIT_OK,
    EXIT_STARTUP,
    LOG_FORMAT,
    _describe,
    _run_loop,
    _tls_context,
    add_log_arguments,
    install_signals,
    log,
    reload_server,
)
from ferrosmtp.cli_args import (
    UsageError,
    count,
    fail,
    listen_port,
    network,
    readable_file,
    seconds,
    size,
)
from ferrosmtp.passwords import FileAuthenticator

__all__ = ["SERVE_EPILOG", "add_serve_parser", "run_serve"]


SERVE_EPILOG = """\
Every option can also be set in the environment, as a container does: FERROSMTP_ and the
option's name in capitals (FERROSMTP_PORT=2525, FERROSMTP_TLS_CERT=/etc/tls/cert.pem,
FERROSMTP_AUTH_REQUIRED=1, FERROSMTP_CONNECTION_LIMIT_EXEMPT="10.0.0.0/8 ::1"); the
command line wins over the environment.

Signals: SIGTERM or SIGINT stops (connected clients get 421; a message not yet answered
is not kept, its client retries). SIGHUP reopens --log-file and reloads the TLS
certificate and key and the --auth-file, keeping the old ones if the new ones are bad.

Exit status:
  0  stopped by SIGTERM or SIGINT
  2  bad arguments or unusable files (the message names the option or the file)
  3  could not start: the address is in use, the storage cannot be created
"""


def add_serve_parser(subparsers: Any) -> None:
    """Add the ``serve`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "serve",
        help="receive mail and store it (default: into ./maildir on 127.0.0.1:8025)",
        description="Run an SMTP server. Every message is stored into a Maildir (the default,\n"
        "./maildir), appended to an mbox, printed, or dropped.",
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        env_prefix="FERROSMTP_",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port", type=listen_port, default=8025, help="port to listen on (default 8025)"
    )
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
        "--tls-cert", type=readable_file, help="PEM certificate chain for STARTTLS / implicit TLS"
    )
    p.add_argument("--tls-key", type=readable_file, help="PEM private key for --tls-cert")
    p.add_argument(
        "--implicit-tls",
        action="store_true",
        help="TLS from the first byte (RFC 8314, port 465 style)",
    )
    p.add_argument("--require-starttls", action="store_true", help="refuse mail before STARTTLS")
    p.add_argument(
        "--auth-file",
        type=readable_file,
        help="enable AUTH PLAIN/LOGIN with users from this file: one 'user:hash' per line, "
        "written by 'ferrosmtp passwd' (salted scrypt; bcrypt and argon2id in Dovecot's "
        "formats also read)",
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
        "--max-size", type=size, default=32 << 20, help="largest message accepted (default 32M)"
    )
    p.add_argument(
        "--max-recipients",
        type=count(1),
        default=1000,
        help="recipients per message (default 1000)",
    )
    p.add_argument(
        "--max-connections",
        type=count(1),
        default=2000,
        help="simultaneous connections (default 2000)",
    )
    p.add_argument(
        "--max-connections-per-ip",
        type=count(0),
        default=50,
        help="simultaneous connections per client address, IPv6 per /64; 0 for no limit "
        "(default 50, as Postfix)",
    )
    p.add_argument(
        "--connection-limit-exempt",
        action="append",
        type=network,
        metavar="NETWORK",
        help="clients in this network are not held to --max-connections-per-ip "
        "(repeatable; default: loopback, 127.0.0.0/8 and ::1)",
    )
    p.add_argument(
        "--timeout", type=seconds, default=300.0, help="idle timeout in seconds (default 300)"
    )
    p.add_argument(
        "--proxy-protocol",
        type=seconds,
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
        type=count(1),
        default=1,
        help="server processes sharing the port (SO_REUSEPORT), supervised and restarted "
        "if they die; limits apply per worker (default 1)",
    )
    add_log_arguments(p)
    p.set_defaults(run=run_serve)


def _handler(args: argparse.Namespace) -> Any:
    from ferrosmtp import handlers

    if args.sink:
        return handlers.Sink()
    if args.stdout:
        return handlers.Debugging(sys.stdout)
    if args.mbox:
        return handlers.Mailbox(args.mbox, received=not args.no_received)
    return handlers.Maildir(args.maildir or Path("maildir"), received=not args.no_received)


def _loop_choice(args: argparse.Namespace) -> str:
    """``--loop``; ``auto`` is asyncio's loop with ``--implicit-tls``: uvloop starts reading
    a new connection after connection_made whatever it paused, so a ClientHello can reach
    the SMTP protocol before start_tls takes the socket (as ferrosmtp.Controller)."""
    choice: str = args.loop
    return "asyncio" if args.implicit_tls and choice == "auto" else choice


def run_serve(args: argparse.Namespace) -> int:
    """Run ``ferrosmtp serve`` with parsed arguments; returns the exit status."""
    from ferrosmtp.server import Server

    prog = "ferrosmtp serve"
    if (args.tls_cert is None) != (args.tls_key is None):
        return fail(prog, "--tls-cert and --tls-key go together")
    if args.implicit_tls and args.tls_cert is None:
        return fail(prog, "--implicit-tls needs --tls-cert and --tls-key")
    if args.proxy_protocol is not None and args.implicit_tls:
        return fail(prog, "--proxy-protocol cannot be used with --implicit-tls")
    if args.require_starttls and (args.tls_cert is None or args.implicit_tls):
        return fail(prog, "--require-starttls needs --tls-cert/--tls-key, without --implicit-tls")
    if args.auth_file and args.tls_cert is None and not args.allow_insecure_auth:
        return fail(
            prog,
            "--auth-file without TLS would send passwords in clear; add --tls-cert/--tls-key, "
            "or --allow-insecure-auth for a test setup",
        )
    if args.workers > 1 and args.port == 0:
        return fail(prog, "--workers needs a fixed --port")
    try:
        context = _tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
        authenticator = FileAuthenticator(args.auth_file) if args.auth_file else None
    except UsageError as error:
        return fail(prog, str(error))
    except (OSError, ValueError) as error:
        return fail(prog, f"--auth-file: {_describe(error)}")
    try:
        handler = _handler(args)
    except OSError as error:
        print(f"{prog}: cannot use the storage: {_describe(error)}", file=sys.stderr)
        return EXIT_STARTUP
    exempt = args.connection_limit_exempt or ["127.0.0.0/8", "::1/128"]
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
        return _run_loop(_serve(make_server(), args), _loop_choice(args))

    from ferrosmtp._workers import supervise

    def run_worker(index: int) -> int:
        # The pid in every line tells the workers' logs apart; fixed once per worker, it
        # costs nothing per record.
        _log.set_format(LOG_FORMAT.replace("%(name)s", f"%(name)s[{os.getpid()}]"))
        return _run_loop(_serve(make_server(), args, reuse_port=True), _loop_choice(args))

    return supervise(args.workers, run_worker, startup_failure=EXIT_STARTUP)


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
    from ferrosmtp import codec

    proto = "LMTP" if args.lmtp else "SMTP"
    loop_name = type(asyncio.get_running_loop()).__module__.split(".")[0]
    log.info(
        "ferrosmtp %s %s listening on %s:%d (%s loop, %s codec), %s",
        *(__version__, proto, args.host, server.port, loop_name, codec.BACKEND, where),
    )
    stop = asyncio.Event()
    install_signals(stop, functools.partial(reload_server, server, args))
    await stop.wait()
    log.info("shutting down")
    server.close()
    await server.wait_closed()
    return EXIT_OK
