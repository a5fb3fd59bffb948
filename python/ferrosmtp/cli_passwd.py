"""``ferrosmtp passwd``: write a user's entry of a ``serve --auth-file`` (``passwords.py``).

    ferrosmtp passwd alice                       # asks twice; prints alice:{SCRYPT}...
    ferrosmtp passwd --file users alice          # adds or replaces alice's line
    printf '%s\\n' "$PW" | ferrosmtp passwd --stdin --scheme argon2id --file users alice

The file is rewritten whole (a temporary file renamed over it, so a crash leaves the old
one), keeps its other lines and its mode, and is created readable by its owner only.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from ferrosmtp import passwords
from ferrosmtp.cli_args import fail

__all__ = ["add_parser", "run"]

EXIT_OK = 0
EXIT_FAILED = 1
PROG = "ferrosmtp passwd"
_SCHEMES = {"scrypt": "SCRYPT", "bcrypt": "BLF-CRYPT", "argon2id": "ARGON2ID"}


def add_parser(subparsers: Any) -> None:
    """Add the ``passwd`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "passwd",
        help="write a user's salted password hash for serve --auth-file",
        description="Hash a password (salted; scrypt by default) and print the user's "
        "--auth-file line, or add or replace it in --file. The password is asked for on "
        "the terminal, or read from standard input with --stdin.",
        epilog="Exit codes: 0 written; 1 the file could not be written; 2 usage error "
        "(passwords that differ, a scheme whose package is missing...).",
    )
    p.add_argument("user", metavar="USER", help="the login name")
    p.add_argument(
        "--scheme",
        choices=sorted(_SCHEMES),
        default="scrypt",
        help="scrypt (default, standard library), bcrypt (Dovecot's BLF-CRYPT; pip install "
        "bcrypt) or argon2id (Dovecot's ARGON2ID; pip install argon2-cffi)",
    )
    p.add_argument("--file", type=Path, help="the --auth-file to add the user to or update")
    p.add_argument(
        "--stdin", action="store_true", help="read the password from standard input's first line"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``ferrosmtp passwd``; its exit status."""
    user: str = args.user
    if not user or not user.isprintable() or any(c in user for c in ": \t"):
        return fail(PROG, f"{user!r}: a user name cannot be empty or hold ':', spaces or controls")
    try:
        password = _read_password(args.stdin)
    except (EOFError, KeyboardInterrupt):
        return fail(PROG, "no password given")
    except ValueError as error:
        return fail(PROG, str(error))
    try:
        entry = f"{user}:{passwords.hash_password(password, _SCHEMES[args.scheme])}"
    except ValueError as error:
        return fail(PROG, str(error))
    if args.file is None:
        print(entry)
        return EXIT_OK
    try:
        replaced = _write(args.file, user, entry)
    except OSError as error:
        where = error.filename or args.file
        print(f"{PROG}: {where}: {error.strerror or error}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{'updated' if replaced else 'added'} {user} in {args.file}", file=sys.stderr)
    return EXIT_OK


def _read_password(from_stdin: bool) -> str:
    if from_stdin or not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        password = line.rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise ValueError("the two passwords differ")
    if not password:
        raise ValueError("an empty password")
    return password


def _write(path: Path, user: str, entry: str) -> bool:
    """Add or replace ``user``'s line; whether it replaced one."""
    try:
        lines = path.read_text("utf-8").splitlines()
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        lines, mode = [], 0o600
    replaced = False
    out = []
    for line in lines:
        name = line.strip().partition(":")[0]
        if not line.strip().startswith("#") and name == user:
            if not replaced:
                out.append(entry)
            replaced = True
        else:
            out.append(line)
    if not replaced:
        out.append(entry)
    fd, temporary = tempfile.mkstemp(dir=path.parent or Path("."), prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(out) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return replaced
