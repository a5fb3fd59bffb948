"""Issue 10, fault 13: salted slow hashes in ``serve --auth-file`` (scrypt from the standard
library; bcrypt and argon2id in Dovecot's formats), and ``ferrosmtp passwd`` to write
them. The entries are checked end to end: written by the command, read by ``ferrosmtp
serve``, used by smtplib over a real socket."""

from __future__ import annotations

import hashlib
import logging
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest

from ferrosmtp import passwords
from ferrosmtp.passwords import FileAuthenticator, hash_password, verify
from tests.security.support import ROOT, cli_server
from tests.server.support import HOST

PASSWD = [sys.executable, "-m", "ferrosmtp", "passwd"]
SERVE = [sys.executable, "-m", "ferrosmtp", "serve", "--port", "0"]


def passwd(*args: str, password: str = "s3cret passw0rd") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PASSWD, "--stdin", *args],
        input=password + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def login(port: int, user: str, password: str) -> int:
    with smtplib.SMTP(HOST, port, timeout=30) as client:
        client.ehlo("client.example")
        try:
            return client.login(user, password)[0]
        except smtplib.SMTPAuthenticationError as refused:
            return refused.smtp_code


@pytest.mark.parametrize("scheme", ["scrypt", "bcrypt", "argon2id"])
def test_fault13_passwd_writes_an_entry_serve_accepts(tmp_path: Path, scheme: str) -> None:
    users = tmp_path / "users"
    users.write_text("# the mail users\nbob:{SCRYPT}" + hash_password("bobs")[8:] + "\n")
    written = passwd("--scheme", scheme, "--file", str(users), "alice")
    assert written.returncode == 0, written.stderr
    assert "added alice" in written.stderr
    text = users.read_text()
    prefix = {"scrypt": "{SCRYPT}$scrypt$", "bcrypt": "{BLF-CRYPT}$2y$", "argon2id": "{ARGON2ID}"}
    assert f"alice:{prefix[scheme]}" in text and "s3cret" not in text
    assert text.startswith("# the mail users\nbob:")  # the other lines kept
    assert users.stat().st_mode & 0o777 == 0o644 or users.stat().st_mode & 0o077 == 0
    with cli_server("--auth-file", str(users), "--allow-insecure-auth") as server:
        assert login(server.port, "alice", "s3cret passw0rd") == 235
        assert login(server.port, "alice", "s3cret password") == 535
        assert login(server.port, "bob", "bobs") == 235
        assert login(server.port, "mallory", "s3cret passw0rd") == 535


def test_passwd_replaces_a_user_and_creates_files_private(tmp_path: Path) -> None:
    users = tmp_path / "users"
    assert passwd("--file", str(users), "alice", password="one").returncode == 0
    assert users.stat().st_mode & 0o777 == 0o600
    replaced = passwd("--file", str(users), "alice", password="two")
    assert replaced.returncode == 0 and "updated alice" in replaced.stderr
    [line] = users.read_text().splitlines()
    assert verify(line.partition(":")[2], b"two") and not verify(line.partition(":")[2], b"one")


def test_passwd_prints_the_entry_and_refuses_bad_input(tmp_path: Path) -> None:
    printed = passwd("alice")
    assert printed.returncode == 0 and printed.stdout.startswith("alice:{SCRYPT}$scrypt$ln=15,")
    salts = {passwd("alice").stdout.split("$")[3] for _ in range(2)}
    assert len(salts) == 2  # salted: two hashes of one password differ
    for bad in ["a:b", "a b", ""]:
        refused = passwd(bad)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    empty = passwd("alice", password="")
    assert empty.returncode == 2 and "empty password" in empty.stderr
    long = passwd("--scheme", "bcrypt", "alice", password="x" * 73)
    assert long.returncode == 2 and "72 octets" in long.stderr


def test_old_entries_still_work_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    users = tmp_path / "users"
    digest = hashlib.sha256(b"hashed").hexdigest()
    users.write_text(f"plain:clear\nold:{{sha256}}{digest}\n")
    caplog.set_level(logging.WARNING, logger="ferrosmtp")
    authenticator = FileAuthenticator(users)
    assert authenticator.check(b"plain", b"clear") and authenticator.check(b"old", b"hashed")
    assert not authenticator.check(b"old", b"clear")
    assert any("plaintext or unsalted" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("{MD5}abc", "unknown password scheme {MD5}"),
        ("{SCRYPT}$scrypt$ln=15,r=8$x$y", "not a $scrypt$"),
        ("{SCRYPT}$scrypt$ln=40,r=8,p=1$QUJD$QUJD", "out of range"),
        ("{BLF-CRYPT}$2y$05$short", "not a $2y$ bcrypt string"),
        ("{ARGON2ID}$argon2i$v=19$m=65536,t=3,p=4$x$y", "not an $argon2id$ string"),
        ("{sha256}1234", "64 hex digits"),
    ],
)
def test_a_bad_entry_stops_serve_with_one_line(tmp_path: Path, secret: str, problem: str) -> None:
    users = tmp_path / "users"
    users.write_text(f"alice:{secret}\n")
    result = subprocess.run(
        [*SERVE, "--auth-file", str(users), "--allow-insecure-auth"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert result.returncode != 0
    assert problem in result.stderr and f"{users}:1" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_package_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(passwords, "_bcrypt", None)
    users = tmp_path / "users"
    users.write_text("alice:{BLF-CRYPT}$2y$05$" + "a" * 53 + "\n")
    with pytest.raises(ValueError, match="pip install bcrypt"):
        FileAuthenticator(users)
    with pytest.raises(ValueError, match="pip install bcrypt"):
        hash_password("x", "bcrypt")


def test_utf8_passwords() -> None:
    entry = hash_password("pässwörd")
    assert verify(entry, "pässwörd".encode()) and not verify(entry, b"passwort")


def test_dovecot_forms_verify() -> None:
    """Dovecot writes BLF-CRYPT as $2y$ (bcrypt's $2b$ is the same algorithm) and cuts
    passwords at 72 octets, as bcrypt always did."""
    import bcrypt

    made = bcrypt.hashpw(b"p" * 72, bcrypt.gensalt(4)).decode()
    assert verify("{BLF-CRYPT}$2y$" + made[4:], b"p" * 72)
    assert verify("{BLF-CRYPT}" + made, b"p" * 80)  # cut at 72, as Dovecot does
    assert not verify("{BLF-CRYPT}" + made, b"p" * 71)
