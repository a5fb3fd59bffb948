"""``ferrosmtp relay`` and ``ferrosmtp queue list|show|retry|delete``.

The option names are a contract (scripts depend on them); ``--workers``,
``--proxy-protocol``, ``--tls-cert/--tls-key`` and ``--auth-file`` mean what they mean
for ``ferrosmtp serve``, and use the same code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import fcntl
import functools
import json
import logging
import math
import os
import socket
import sys
from pathlib import Path
from typing import Any

from ferrosmtp import __version__, cli, cli_args

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STARTUP = 3

log: logging.Logger = logging.getLogger("ferrosmtp.relay")


def _host_port(text: str, *, listen: bool = False) -> tuple[str, int]:
    host, sep, number = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    parse = cli_args.listen_port if listen else cli_args.port
    return host, parse(number)


def _listen(text: str) -> tuple[str, int]:
    """HOST:PORT to listen on (port 0: any free port)."""
    return _host_port(text, listen=True)


def _peer(text: str) -> tuple[str, int]:
    """HOST:PORT to connect to (port 1 to 65535)."""
    return _host_port(text)


def _seconds(text: str) -> float:
    """A finite number of seconds, zero allowed (a backoff, a lifetime)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds of 0 or more")
    return value


def _queue_url(text: str) -> str:
    if not text.startswith(("postgresql://", "postgres://")):
        raise argparse.ArgumentTypeError(
            f"expected postgresql://USER@HOST:PORT/DB, got {text.split('@')[-1]!r}"
        )
    return text


QUEUE_URL_HELP = (
    "keep the queue in this PostgreSQL database (postgresql://USER@HOST:PORT/DB), shared "
    "by every relay node given the same URL, instead of --spool"
)
QUEUE_URL_ADMIN_HELP = (
    "the relays' queue in this PostgreSQL database (postgresql://USER@HOST:PORT/DB) "
    "instead of --spool"
)


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.replace(" ", ",").split(",") if item.strip()]


def _networks(text: str) -> list[str]:
    """Comma-separated IP networks; the error names the first bad one."""
    return [cli_args.network(item) for item in _csv(text)]


RELAY_EPILOG = """\
Every option can also be set in the environment, as a container does: FERROSMTP_ and the
option's name in capitals (FERROSMTP_LISTEN=0.0.0.0:25, FERROSMTP_SPOOL=/var/spool/relay,
FERROSMTP_RELAYHOST=smtp.example:587, FERROSMTP_MYNETWORKS="10.0.0.0/8,::1/128"); the
command line wins over the environment.

Signals: SIGTERM or SIGINT stops (clients get 421; deliveries in flight finish or are
released, to be delivered at the next start). SIGHUP reopens --log-file and reloads the
TLS certificate and key and the --auth-file, keeping the old ones if the new ones are bad.

Exit status:
  0  stopped by SIGTERM or SIGINT
  2  bad arguments or unusable files (the message names the option or the file)
  3  could not start: the address is in use, the spool is in use by another relay or
     cannot be created, the queue database cannot be reached
"""


def add_parsers(subparsers: Any) -> None:
    """Add the ``relay`` and ``queue`` subcommands to an argparse subparsers object."""
    p = subparsers.add_parser(
        "relay",
        help="relay mail: accept, spool with fsync, deliver by MX or smarthost, retry, bounce",
        description="Run a durable mail relay. Mail from --mynetworks, from clients "
        "authenticated over TLS, or to --relay-domains is accepted into the spool (250 only "
        "once it is on disk) and delivered by MX (or to --relayhost), retried with "
        "exponential backoff and bounced with RFC 3464 notices.",
        epilog=RELAY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        env_prefix="FERROSMTP_",
    )
    p.add_argument(
        "--listen",
        type=_listen,
        default=("127.0.0.1", 8025),
        metavar="HOST:PORT",
        help="address to accept mail on (default 127.0.0.1:8025)",
    )
    p.add_argument(
        "--spool",
        type=Path,
        default=Path("spool"),
        metavar="DIR",
        help="the queue's folder (default ./spool)",
    )
    p.add_argument("--queue-url", type=_queue_url, metavar="URL", help=QUEUE_URL_HELP)
    p.add_argument(
        "--lease",
        type=cli_args.seconds,
        default=60.0,
        metavar="S",
        help="a message in delivery is held this long, renewed while it lasts; after a "
        "crash, other nodes of a shared queue take it over when it expires (default 60)",
    )
    p.add_argument("--hostname", help="this relay's name (default: this host's FQDN)")
    p.add_argument(
        "--relayhost",
        type=_peer,
        metavar="HOST:PORT",
        help="send everything to this smarthost instead of by MX",
    )
    p.add_argument(
        "--dns",
        type=_peer,
        metavar="HOST:PORT",
        help="the one nameserver to ask for MX records (default: the system's)",
    )
    p.add_argument(
        "--mx-port",
        type=cli_args.port,
        default=25,
        metavar="PORT",
        help="the port every MX host is reached on (default 25)",
    )
    p.add_argument(
        "--mynetworks",
        type=_networks,
        default=["127.0.0.0/8", "::1/128"],
        metavar="CIDR,...",
        help="clients that may relay (default 127.0.0.0/8,::1/128)",
    )
    p.add_argument(
        "--relay-domains",
        type=_csv,
        default=[],
        metavar="DOMAIN,...",
        help="recipient domains accepted from anyone (.example.com: subdomains; default: none)",
    )
    p.add_argument(
        "--tls-cert", type=cli_args.readable_file, help="PEM certificate chain for STARTTLS"
    )
    p.add_argument("--tls-key", type=cli_args.readable_file, help="PEM private key for --tls-cert")
    p.add_argument(
        "--auth-file",
        type=cli_args.readable_file,
        help="users written by 'ferrosmtp passwd': clients authenticated with them over TLS "
        "may relay; toward --relayhost, its first entry ('user:password' in clear) is the "
        "login (over STARTTLS)",
    )
    p.add_argument(
        "--proxy-protocol",
        type=cli_args.seconds,
        metavar="SECONDS",
        help="expect a PROXY protocol v1/v2 header within SECONDS (behind HAProxy)",
    )
    p.add_argument(
        "--min-backoff",
        type=_seconds,
        default=300.0,
        metavar="S",
        help="least time between attempts (default 300)",
    )
    p.add_argument(
        "--max-backoff",
        type=_seconds,
        default=4000.0,
        metavar="S",
        help="most time between attempts (default 4000)",
    )
    p.add_argument(
        "--max-lifetime",
        type=_seconds,
        default=5 * 86400.0,
        metavar="S",
        help="then a message bounces (default 432000: 5 days)",
    )
    p.add_argument(
        "--metrics",
        type=_listen,
        metavar="HOST:PORT",
        help="serve Prometheus metrics here, for the relay and all its workers (needs "
        "prometheus_client)",
    )
    p.add_argument(
        "--workers",
        type=cli_args.count(1),
        default=1,
        help="relay processes sharing the port and the spool (default 1)",
    )
    cli.add_log_arguments(p)
    p.set_defaults(run=run_relay)

    q = subparsers.add_parser(
        "queue",
        help="list, show, retry or delete queued mail (also while the relay runs)",
        description="Inspect and manage the relay's queue.",
    )
    qs = q.add_subparsers(title="actions", metavar="ACTION")
    spool_help = "the relay's spool folder (default ./spool)"
    lst = qs.add_parser("list", help="every queued message")
    lst.add_argument("--spool", type=Path, default=Path("spool"), metavar="DIR", help=spool_help)
    lst.add_argument("--queue-url", type=_queue_url, metavar="URL", help=QUEUE_URL_ADMIN_HELP)
    lst.add_argument("--json", action="store_true", help="one JSON object a line")
    lst.set_defaults(run=run_queue, action="list")
    show = qs.add_parser("show", help="one message: envelope, recipients, headers")
    show.add_argument("id")
    show.add_argument("--spool", type=Path, default=Path("spool"), metavar="DIR", help=spool_help)
    show.add_argument("--queue-url", type=_queue_url, metavar="URL", help=QUEUE_URL_ADMIN_HELP)
    show.set_defaults(run=run_queue, action="show")
    for name, text in (("retry", "try again now"), ("delete", "remove from the queue")):
        sub = qs.add_parser(name, help=f"{text}: one message, or --all")
        which = sub.add_mutually_exclusive_group(required=True)
        which.add_argument("id", nargs="?")
        which.add_argument("--all", action="store_true", help="every queued message")
        sub.add_argument(
            "--spool", type=Path, default=Path("spool"), metavar="DIR", help=spool_help
        )
        sub.add_argument("--queue-url", type=_queue_url, metavar="URL", help=QUEUE_URL_ADMIN_HELP)
        sub.set_defaults(run=run_queue, action=name)
    q.set_defaults(run=lambda args: (q.print_help(), EXIT_USAGE)[1])


# --- ferrosmtp relay ------------------------------------------------------------------------


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"ferrosmtp relay: {message}", file=sys.stderr)
    return code


def _first_login(path: Path) -> tuple[str, str] | None:
    for line in path.read_text("utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, _, secret = line.partition(":")
        if secret.startswith("{") and "}" in secret:  # {SCRYPT}..., {sha256}...: a hash
            raise cli_args.UsageError(
                f"--auth-file: {path}: the first entry is hashed; toward --relayhost it "
                "must be 'user:password' in clear"
            )
        return user, secret
    return None


def _config(args: argparse.Namespace) -> Any:
    """The RelayConfig from the arguments, or an exit code with the reason printed."""
    from ferrosmtp.relay.policy import RelayPolicy
    from ferrosmtp.relay.scheduler import RetryPolicy
    from ferrosmtp.relay.service import RelayConfig

    if (args.tls_cert is None) != (args.tls_key is None):
        return _fail("--tls-cert and --tls-key go together")
    if args.workers > 1 and args.listen[1] == 0:
        return _fail("--workers needs a fixed --listen port")
    if args.min_backoff > args.max_backoff:
        return _fail("--min-backoff is above --max-backoff")
    if args.lease < 1:
        return _fail("--lease needs at least 1 second")
    try:
        RelayPolicy.parse(args.mynetworks, args.relay_domains)
    except ValueError as error:
        return _fail(f"--mynetworks: {error}")
    try:
        context = cli._tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
        authenticator = cli.FileAuthenticator(args.auth_file) if args.auth_file else None
        login = _first_login(args.auth_file) if args.auth_file and args.relayhost else None
    except cli_args.UsageError as error:
        return _fail(str(error))
    except (OSError, ValueError) as error:  # a bad line of the auth file
        return _fail(f"--auth-file: {cli._describe(error)}")
    options: dict[str, Any] = {
        "tls_context": context,
        "proxy_protocol_timeout": args.proxy_protocol,
    }
    if authenticator is not None and context is not None:
        options["authenticator"] = authenticator
    return RelayConfig(
        listen=args.listen,
        spool=args.spool,
        queue_url=args.queue_url,
        lease=args.lease,
        hostname=args.hostname,
        relayhost=args.relayhost,
        relayhost_auth=login,
        dns=args.dns,
        mx_port=args.mx_port,
        mynetworks=args.mynetworks,
        relay_domains=args.relay_domains,
        retry=RetryPolicy(args.min_backoff, args.max_backoff, args.max_lifetime),
        server_options=options,
    )


def _lock_spool(spool: Path) -> int | None:
    """Hold the spool's lock for the life of this relay (its workers inherit it)."""
    spool.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(spool / "relay.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def run_relay(args: argparse.Namespace) -> int:
    """Run ``ferrosmtp relay`` with parsed arguments; returns the exit status."""
    config = _config(args)
    if isinstance(config, int):
        return config
    if args.metrics is not None:
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            return _fail("--metrics needs prometheus_client: pip install 'ferrosmtp[relay]'")
    try:
        import dns.asyncresolver  # noqa: F401
    except ImportError:
        return _fail("the relay needs dnspython: pip install dnspython", EXIT_STARTUP)
    if args.queue_url is not None:
        problem = _postgres_missing()
        if problem is not None:
            return _fail(problem, EXIT_STARTUP)
    else:
        try:
            lock = _lock_spool(Path(args.spool))
        except OSError as error:
            return _fail(f"cannot use the spool {args.spool}: {error.strerror}", EXIT_STARTUP)
        if lock is None:
            return _fail(f"the spool {args.spool} is in use by another relay", EXIT_STARTUP)
    recovered = asyncio.run(_recover(config))
    if isinstance(recovered, str):
        return _fail(recovered, EXIT_STARTUP)
    if args.workers == 1:
        return cli._run_loop(_relay(config, args, 0), "auto")

    from ferrosmtp import _log
    from ferrosmtp._workers import supervise

    def run_worker(index: int) -> int:
        _log.set_format(cli.LOG_FORMAT.replace("%(name)s", f"%(name)s[{os.getpid()}]"))
        return cli._run_loop(_relay(config, args, index, reuse_port=True), "auto")

    return supervise(args.workers, run_worker, startup_failure=EXIT_STARTUP)


def _postgres_missing() -> str | None:
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        return "--queue-url needs psycopg: pip install 'ferrosmtp[postgres]'"
    # The queue logs a lost database once, and its return; psycopg's pool would add two
    # lines for every connection attempt in between.
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    return None


async def _recover(config: Any) -> int | str:
    """End the leases a crashed relay left (once, before any worker delivers; in a
    shared queue, only those of this node)."""
    from ferrosmtp.relay.queue import QueueError
    from ferrosmtp.relay.service import make_queue

    queue = make_queue(config)
    try:
        await queue.open()
        return await queue.recover()
    except QueueError as error:
        return str(error)
    finally:
        await queue.close()


async def _relay(
    config: Any, args: argparse.Namespace, index: int, *, reuse_port: bool = False
) -> int:
    from ferrosmtp.relay.metrics import NoMetrics, start_metrics
    from ferrosmtp.relay.queue import QueueError
    from ferrosmtp.relay.service import Relay

    metrics: NoMetrics | None = None
    if args.metrics is not None:
        host, port = args.metrics
        try:
            metrics = start_metrics(host, port + index if port else 0)
        except OSError as error:
            return _fail(f"cannot serve metrics on {host}:{port}: {error.strerror}", EXIT_STARTUP)
    relay = Relay(config, metrics=metrics)
    try:
        await relay.start(recover=False, reuse_port=reuse_port)
    except QueueError as error:
        return _fail(str(error), EXIT_STARTUP)
    except OSError as error:
        host, port = config.listen
        return _fail(f"cannot listen on {host}:{port}: {error.strerror or error}", EXIT_STARTUP)
    route = (
        "relayhost [{}]:{}".format(*config.relayhost)
        if config.relayhost
        else "by MX" + (" via nameserver {}:{}".format(*config.dns) if config.dns else "")
    )
    log.info(
        "ferrosmtp %s relay listening on %s:%d, %s, delivering %s",
        __version__,
        config.listen[0],
        relay.port,
        f"spool {config.spool}" if config.queue_url is None else repr(relay.queue),
        route,
    )
    stop = asyncio.Event()
    cli.install_signals(stop, functools.partial(cli.reload_server, relay.server, args))
    await stop.wait()
    log.info("shutting down")
    await relay.stop()
    return EXIT_OK


# --- ferrosmtp queue ------------------------------------------------------------------------


def _when(stamp: float) -> str:
    if not stamp:
        return "-"
    return datetime.datetime.fromtimestamp(stamp).strftime("%a %b %d %H:%M:%S")


def run_queue(args: argparse.Namespace) -> int:
    """Run ``ferrosmtp queue`` with parsed arguments; returns the exit status."""
    spool = Path(args.spool)
    if args.queue_url is not None:
        problem = _postgres_missing()
        if problem is not None:
            print(f"ferrosmtp queue: {problem}", file=sys.stderr)
            return EXIT_USAGE
    elif not (spool / "queue.db").exists():
        print(f"ferrosmtp queue: no spool at {spool} (no queue.db)", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(_queue(args))
    except BrokenPipeError:  # `ferrosmtp queue list | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


async def _queue(args: argparse.Namespace) -> int:
    from ferrosmtp.relay.queue import QueueError
    from ferrosmtp.relay.service import RelayConfig, make_queue

    node = f"{socket.gethostname()}:queue"
    queue = make_queue(RelayConfig(spool=args.spool, queue_url=args.queue_url, node=node))
    try:
        await queue.open()
        if args.action == "list":
            return await _print_list(queue, args.json)
        if args.action == "show":
            return await _show(queue, args.id)
        target = None if args.all else args.id
        count = await (queue.retry(target) if args.action == "retry" else queue.delete(target))
        verb = "due now" if args.action == "retry" else "deleted"
        if target is not None and count == 0:
            print(f"ferrosmtp queue: no message {target}", file=sys.stderr)
            return EXIT_FAILED
        print(f"{count} message(s) {verb}")
        return EXIT_OK
    except QueueError as error:
        print(f"ferrosmtp queue: {error}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        await queue.close()


async def _print_list(queue: Any, as_json: bool) -> int:
    out = sys.stdout
    if as_json:
        lines = getattr(queue, "list_json", None)  # a backend's fast path, if it has one
        if lines is not None:
            out.writelines(line + "\n" for line in lines())
        else:
            entries = await queue.list()
            out.writelines(json.dumps(e.to_json(), ensure_ascii=False) + "\n" for e in entries)
        return EXIT_OK
    entries = await queue.list()
    if not entries:
        print("Mail queue is empty")
        return EXIT_OK
    lines = ["-Queue ID-         --Size-- ----Arrival Time---- -Sender/Recipient-------"]
    for entry in entries:
        mark = "!" if entry.corrupt else ("*" if entry.to_json()["leased"] else " ")
        lines.append(
            f"{entry.id}{mark} {entry.size:>8} {_when(entry.arrival):>20} "
            f"{entry.envelope.sender or 'MAILER-DAEMON'}"
        )
        if entry.corrupt:
            lines.append(f"   (corrupt: {entry.corrupt})")
        elif entry.last_error:
            lines.append(f"   ({entry.last_error})")
        lines.extend(f"   {r.address}" for r in entry.pending)
        lines.append("")
    size = sum(e.size for e in entries)
    lines.append(f"-- {size // 1024} Kbytes in {len(entries)} Requests.")
    out.write("\n".join(lines) + "\n")
    return EXIT_OK


async def _show(queue: Any, queue_id: str) -> int:
    entry = await queue.get(queue_id)
    if entry is None:
        print(f"ferrosmtp queue: no message {queue_id}", file=sys.stderr)
        return EXIT_FAILED
    data = entry.to_json()
    data["recipients"] = [r.to_json() for r in entry.envelope.recipients]
    for name in ("smtputf8", "body_8bit", "ret", "envid", "client"):
        data[name] = getattr(entry.envelope, name)
    history = getattr(queue, "attempts", None)  # a backend that keeps every attempt
    if history is not None:
        data["history"] = await history(queue_id)
    print(json.dumps(data, indent=2, ensure_ascii=False))
    if entry.corrupt is None:
        with contextlib.suppress(Exception):
            body = await queue.read_body(entry)
            end = body.find(b"\r\n\r\n")
            print()
            print(body[: end if end >= 0 else len(body)].decode("utf-8", "replace"))
    return EXIT_OK
