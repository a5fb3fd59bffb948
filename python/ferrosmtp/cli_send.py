"""``ferrosmtp send``: send message files, mboxes and Maildirs to an SMTP server.

Two functions for ``ferrosmtp.cli``: ``add_parser(subparsers)`` and ``run(args)``.

Each SOURCE is a message file (RFC 5322, any line ends), an mbox (a file whose first line
starts with "From "), a Maildir (a directory with cur/, new/ and tmp/), or "-" for one
message on standard input. Messages go out as they are, byte for byte, except that Bcc
and Resent-Bcc headers are removed when the recipients come from the headers.

Exit codes: 0 every message sent to every recipient; 1 some messages or recipients were
refused or failed; 2 usage error (bad arguments, unreadable sources); 3 the server could
not be reached, TLS failed, or authentication failed (nothing more was attempted).
"""

from __future__ import annotations

import argparse
import asyncio
import email.parser
import email.policy
import importlib
import mailbox
import os
import re
import ssl
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from ferrosmtp.cli_args import count, port, readable_file, seconds
from ferrosmtp.client import Pool, SendResult, extract_recipients, extract_sender
from ferrosmtp.errors import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPException,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
)

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

MAX_DETAILS = 20  # failure lines printed in the summary (all of them with --verbose)


def add_parser(subparsers: Any) -> None:
    """Add the ``send`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "send",
        help="send message files, an mbox or a Maildir to an SMTP server",
        description="Send messages to an SMTP server. Each SOURCE is a message file, an mbox, "
        "a Maildir directory, or - for standard input. The sender and recipients default to "
        "the message headers (Sender/From; To, Cc, Bcc).",
        epilog="Exit codes: 0 all sent; 1 some refused or failed; 2 usage error; "
        "3 connection, TLS or authentication failure.",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="message file, mbox, Maildir or -")
    p.add_argument("--host", default="127.0.0.1", help="server to send to (default 127.0.0.1)")
    p.add_argument(
        "--port", type=port, help="server port (default 25; 465 with --tls; 587 with --starttls)"
    )
    p.add_argument("--from", dest="sender", metavar="ADDRESS", help="envelope sender (MAIL FROM)")
    p.add_argument(
        "--to",
        dest="recipients",
        action="append",
        metavar="ADDRESS",
        help="envelope recipient (RCPT TO); repeat for several",
    )
    tls = p.add_mutually_exclusive_group()
    tls.add_argument(
        "--starttls", action="store_true", help="require STARTTLS (default: use it if offered)"
    )
    tls.add_argument("--tls", action="store_true", help="implicit TLS from the first byte")
    tls.add_argument("--no-tls", action="store_true", help="never use TLS")
    p.add_argument("--cafile", type=readable_file, help="CA certificates to verify the server with")
    p.add_argument(
        "--no-verify", action="store_true", help="do not verify the server's certificate (unsafe)"
    )
    p.add_argument("--user", help="log in as this user (AUTH)")
    p.add_argument(
        "--password-file",
        type=readable_file,
        help="file whose first line is the password for --user",
    )
    p.add_argument(
        "--pool", type=count(1), default=1, metavar="N", help="send over N connections (default 1)"
    )
    p.add_argument(
        "--timeout", type=seconds, default=60.0, help="seconds to wait for each reply (default 60)"
    )
    p.add_argument("--local-hostname", help="the name to give in EHLO (default: this host)")
    p.add_argument("--lmtp", action="store_true", help="speak LMTP (LHLO, per-recipient results)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress, only the summary")
    p.add_argument("--verbose", "-v", action="store_true", help="list every failure")
    p.set_defaults(run=run)


# --- Reading messages ---------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One message to send: where it came from, and its bytes."""

    label: str
    data: bytes


class UsageError(Exception):
    """A problem with the command line or the sources: exit code 2."""


def source_kind(path: str) -> str:
    """ "stdin", "maildir", "mbox" or "file"."""
    if path == "-":
        return "stdin"
    p = Path(path)
    if p.is_dir():
        if all((p / sub).is_dir() for sub in ("cur", "new", "tmp")):
            return "maildir"
        raise UsageError(f"{path}: a directory that is not a Maildir (no cur/, new/, tmp/)")
    if not p.is_file():
        raise UsageError(f"{path}: no such file")
    with open(p, "rb") as f:
        return "mbox" if f.read(5) == b"From " else "file"


def read_sources(paths: list[str]) -> Iterator[Item]:
    """Every message of every source, in order; reads lazily."""
    for path in paths:
        kind = source_kind(path)
        if kind == "stdin":
            yield Item("<stdin>", sys.stdin.buffer.read())
        elif kind == "file":
            yield Item(path, Path(path).read_bytes())
        elif kind == "mbox":
            box = mailbox.mbox(path, create=False)
            try:
                for index, key in enumerate(box.keys(), 1):
                    yield Item(f"{path}#{index}", box.get_bytes(key))
            finally:
                box.close()
        else:
            maildir = mailbox.Maildir(path, factory=None, create=False)
            for key in sorted(maildir.keys()):
                yield Item(f"{path}/{key}", maildir.get_bytes(key))


def count_messages(path: str) -> int:
    """How many messages the source at ``path`` holds (for the progress bar)."""
    kind = source_kind(path)
    if kind == "mbox":
        box = mailbox.mbox(path, create=False)
        try:
            return len(box)
        finally:
            box.close()
    if kind == "maildir":
        return len(mailbox.Maildir(path, factory=None, create=False))
    return 1


def check_sources(paths: list[str]) -> None:
    """Fail early (exit 2) for a missing or unreadable source, before sending anything."""
    for path in paths:
        kind = source_kind(path)
        if kind in ("file", "mbox") and not os.access(path, os.R_OK):
            raise UsageError(f"{path}: not readable")


_HEADER_END = re.compile(rb"\r?\n\r?\n")


def strip_headers(data: bytes, names: tuple[str, ...]) -> bytes:
    """``data`` without the header fields ``names`` (and their folded lines)."""
    match = _HEADER_END.search(data)
    head, rest = (data[: match.start()], data[match.start() :]) if match else (data, b"")
    lowered = tuple(n.lower().encode() + b":" for n in names)
    kept: list[bytes] = []
    dropping = False
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):  # a folded continuation of the previous field
            if not dropping:
                kept.append(line)
            continue
        dropping = line.lower().startswith(lowered)
        if not dropping:
            kept.append(line)
    return b"".join(kept) + rest


@dataclass
class Outgoing:
    """A message ready to go: its envelope's sender and recipients, and its bytes."""

    sender: str
    recipients: list[str]
    data: bytes


def envelope_for(item: Item, sender: str | None, recipients: list[str] | None) -> Outgoing:
    """The envelope of a message: the command line's, else its headers'. Raises ValueError
    with a message a person can act on."""
    headers = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(item.data)
    data = item.data
    if sender is None:
        sender = extract_sender(headers)
        if sender is None:
            raise ValueError("no sender: give --from, or a From/Sender header")
    if not recipients:
        recipients = extract_recipients(headers)
        if not recipients:
            raise ValueError("no recipients: give --to, or To/Cc/Bcc headers")
        data = strip_headers(data, ("Bcc", "Resent-Bcc"))
    return Outgoing(sender, recipients, data)


# --- Progress and summary ---------------------------------------------------------------


class Progress(Protocol):
    """What shows progress: a counter or a tqdm bar on a terminal, nothing otherwise."""

    def update(self, sent: int, refused: int, failed: int) -> None:
        """Show the counts so far."""

    def close(self) -> None:
        """End the display."""


class _Counter:
    """A one-line counter on stderr, redrawn at most ten times a second."""

    def __init__(self, total: int | None, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.last = 0.0
        self.line = ""

    def update(self, sent: int, refused: int, failed: int) -> None:
        done = sent + refused + failed
        now = time.monotonic()
        if now - self.last < 0.1 and done != self.total:
            return
        self.last = now
        of = f"/{self.total}" if self.total else ""
        self.line = f"\r{done}{of} messages: {sent} sent, {refused} refused, {failed} failed"
        self.stream.write(self.line)
        self.stream.flush()

    def close(self) -> None:
        if self.line:
            self.stream.write("\n")
            self.stream.flush()


class _Silent:
    def update(self, sent: int, refused: int, failed: int) -> None:
        pass

    def close(self) -> None:
        pass


def make_progress(total: int | None, quiet: bool, stream: TextIO) -> Progress:
    """tqdm if installed, else a plain counter; nothing when quiet, for a single message,
    or when stderr is not a terminal."""
    if quiet or total == 1 or not stream.isatty():
        return _Silent()
    try:  # optional: used only if the user has it (no dependency, no stubs needed)
        tqdm: Any = importlib.import_module("tqdm")
    except ImportError:
        return _Counter(total, stream)
    bar = tqdm.tqdm(total=total, unit="msg", file=stream)

    class _Tqdm:
        def update(self, sent: int, refused: int, failed: int) -> None:
            bar.n = sent + refused + failed
            bar.set_postfix(sent=sent, refused=refused, failed=failed, refresh=False)
            bar.refresh()

        def close(self) -> None:
            bar.close()

    return _Tqdm()


@dataclass
class Outcome:
    """What happened to the messages: counts, failure lines, and why sending stopped."""

    sent: int = 0
    refused: int = 0  # messages with at least one refused recipient (or refused entirely)
    failed: int = 0  # messages that could not be sent (bad input, unsupported, errors)
    details: list[str] = field(default_factory=list)
    fatal: str | None = None  # why sending stopped (exit 3)

    @property
    def total(self) -> int:
        return self.sent + self.refused + self.failed


# --- Sending ----------------------------------------------------------------------------


def client_options(args: argparse.Namespace, password: str | None) -> dict[str, Any]:
    """The keyword arguments of ``Pool`` for the command line's options."""
    options: dict[str, Any] = {
        "timeout": args.timeout,
        "local_hostname": args.local_hostname,
        "use_tls": args.tls,
        "start_tls": True if args.starttls else (False if args.no_tls else None),
        "validate_certs": not args.no_verify,
        "cert_bundle": str(args.cafile) if args.cafile else None,
        "lmtp": args.lmtp,
    }
    if args.user:
        options["username"] = args.user
        options["password"] = password
    return options


def check_cafile(cafile: Path | None) -> None:
    """A --cafile that holds no PEM certificate is a usage error, found before sending."""
    if cafile is None:
        return
    try:
        ssl.create_default_context(cafile=str(cafile))
    except (ssl.SSLError, ValueError):
        raise UsageError(f"--cafile: {cafile} holds no PEM certificate") from None


def read_password(args: argparse.Namespace) -> str | None:
    """The password from ``--password-file`` (its first line); UsageError if misused."""
    if args.password_file is None:
        if args.user:
            raise UsageError("--user needs --password-file")
        return None
    if not args.user:
        raise UsageError("--password-file needs --user")
    try:
        with open(args.password_file, encoding="utf-8") as f:
            return f.readline().rstrip("\r\n")
    except OSError as exc:
        raise UsageError(f"--password-file: {exc.strerror}: {args.password_file}") from None


async def send_all(args: argparse.Namespace, password: str | None, progress: Progress) -> Outcome:
    """Send every message of the sources over a pool of ``--pool`` connections."""
    outcome = Outcome()
    pool = Pool(args.host, args.port, size=args.pool, **client_options(args, password))
    try:
        await pool.connect()  # an unreachable server or bad credentials: stop right away
    except (SMTPException, OSError) as exc:
        outcome.fatal = describe(exc)
        await pool.close()
        return outcome
    queue: asyncio.Queue[Item | None] = asyncio.Queue(maxsize=args.pool * 4)
    stop = asyncio.Event()

    async def worker() -> None:
        while (item := await queue.get()) is not None:
            if not stop.is_set():
                await send_one(pool, item, args, outcome, stop)
                progress.update(outcome.sent, outcome.refused, outcome.failed)

    workers = [asyncio.ensure_future(worker()) for _ in range(args.pool)]
    try:
        for item in read_sources(args.sources):
            if stop.is_set():
                break
            await queue.put(item)
    finally:
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
        await pool.close()
    return outcome


async def send_one(
    pool: Pool, item: Item, args: argparse.Namespace, outcome: Outcome, stop: asyncio.Event
) -> None:
    """Send one message, counting the result into ``outcome``; a fatal error sets ``stop``."""
    try:
        envelope = envelope_for(item, args.sender, args.recipients)
        result: SendResult = await pool.sendmail(
            envelope.sender, envelope.recipients, envelope.data
        )
    except (SMTPConnectError, SMTPAuthenticationError) as exc:
        outcome.failed += 1
        if outcome.fatal is None:
            outcome.fatal = describe(exc)
        stop.set()
    except SMTPRecipientsRefused as exc:
        outcome.refused += 1
        for refusal in exc.recipients:
            outcome.details.append(
                f"refused: {item.label}: {refusal.recipient}: {refusal.code} {refusal.message}"
            )
    except (SMTPSenderRefused, SMTPResponseException) as exc:
        outcome.refused += 1
        outcome.details.append(f"refused: {item.label}: {exc.code} {exc.message}")
    except (SMTPException, ValueError, OSError) as exc:
        outcome.failed += 1
        outcome.details.append(f"failed: {item.label}: {describe(exc)}")
    else:
        if result.refused:
            outcome.refused += 1
            for recipient, response in result.refused.items():
                outcome.details.append(
                    f"refused: {item.label}: {recipient}: {response.code} {response.message}"
                )
        else:
            outcome.sent += 1


def describe(exc: BaseException) -> str:
    """An exception as one line for the summary."""
    if isinstance(exc, SMTPResponseException):
        return f"{type(exc).__name__}: {exc.code} {exc.message}"
    if isinstance(exc, SMTPException):
        cause = (
            f" ({exc.__cause__})" if exc.__cause__ and str(exc.__cause__) not in exc.message else ""
        )
        return f"{type(exc).__name__}: {exc.message}{cause}"
    return f"{type(exc).__name__}: {exc}"


def run(args: argparse.Namespace) -> int:
    """Send every message of ``args.sources``; print a summary; return the exit code."""
    err = sys.stderr
    try:  # the options' types (cli_args) refused bad numbers and unreadable files already
        password = read_password(args)
        check_cafile(args.cafile)
        check_sources(args.sources)
        if args.sources.count("-") > 1:
            raise UsageError("- (standard input) can be given once")
    except UsageError as exc:
        print(f"ferrosmtp send: {exc}", file=err)
        return EXIT_USAGE
    total = sum(count_messages(s) for s in args.sources)
    progress = make_progress(total, args.quiet, err)
    started = time.monotonic()
    try:
        outcome = asyncio.run(send_all(args, password, progress))
    except UsageError as exc:
        progress.close()
        print(f"ferrosmtp send: {exc}", file=err)
        return EXIT_USAGE
    except KeyboardInterrupt:
        progress.close()
        print("ferrosmtp send: interrupted", file=err)
        return EXIT_SOME_FAILED
    progress.close()
    elapsed = time.monotonic() - started
    return report(outcome, elapsed, args.verbose, err)


def report(outcome: Outcome, elapsed: float, verbose: bool, err: TextIO) -> int:
    """Print the summary (and failures); returns the exit status."""
    details = outcome.details if verbose else outcome.details[:MAX_DETAILS]
    for line in details:
        print(f"  {line}", file=err)
    if len(outcome.details) > len(details):
        print(f"  ... and {len(outcome.details) - len(details)} more (use --verbose)", file=err)
    print(
        f"ferrosmtp send: {outcome.sent} sent, {outcome.refused} refused, "
        f"{outcome.failed} failed ({outcome.total} messages in {elapsed:.1f} s)",
        file=err,
    )
    if outcome.fatal is not None:
        print(f"ferrosmtp send: stopped: {outcome.fatal}", file=err)
        return EXIT_UNREACHABLE
    if outcome.refused or outcome.failed:
        return EXIT_SOME_FAILED
    return EXIT_OK
