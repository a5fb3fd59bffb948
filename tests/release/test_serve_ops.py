"""``ferrosmtp serve`` as an operator runs it: settings from the environment, the first log
line, JSON logs, and SIGHUP (reopen the log file, reload the TLS certificate and the
users, as Postfix's reload), each against a real server process."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from ferrosmtp import codec
from ferrosmtp.cli import build_parser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """A ``ferrosmtp serve`` process whose log goes to a file the test reads."""

    def __init__(self, tmp: Path, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.log = tmp / "serve.log"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("FERROSMTP_")}
        environ.update(env or {})
        if "FERROSMTP_PORT" not in environ:
            argv = ["--port", str(self.port), *argv]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ferrosmtp", "serve", "--log-file", str(self.log), *argv],
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.wait_for(lambda: "listening on" in self.text())

    def text(self) -> str:
        try:
            return self.log.read_text()
        except FileNotFoundError:
            return ""

    def wait_for(self, condition: Callable[[], bool], timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited: {self.proc.communicate()[1]!r}")
            time.sleep(0.05)
        raise AssertionError(f"not reached in time; log:\n{self.text()}")

    def hup(self, expect: str) -> None:
        """SIGHUP, then wait for the line that says it was handled."""
        before = self.text().count(expect)
        self.proc.send_signal(signal.SIGHUP)
        self.wait_for(lambda: self.text().count(expect) > before)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stderr is not None
        self.proc.stderr.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def start(*argv: str, env: dict[str, str] | None = None) -> Serve:
        started.append(Serve(tmp_path, list(argv), env))
        return started[-1]

    yield start
    for server in started:
        server.stop()
        assert server.proc.returncode == 0, server.text()


def test_environment_sets_options_and_the_command_line_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FERROSMTP_PORT", "2525")
    monkeypatch.setenv("FERROSMTP_MAX_SIZE", "10M")
    monkeypatch.setenv("FERROSMTP_AUTH_REQUIRED", "yes")
    monkeypatch.setenv("FERROSMTP_CONNECTION_LIMIT_EXEMPT", "10.0.0.0/8, 2001:db8::1")
    monkeypatch.setenv("FERROSMTP_MBOX", "/var/mail/all")
    args = build_parser().parse_args(["serve", "--max-size", "1K"])
    assert args.port == 2525 and args.max_size == 1024 and args.auth_required is True
    assert args.connection_limit_exempt == ["10.0.0.0/8", "2001:db8::1/128"]
    assert str(args.mbox) == "/var/mail/all" and args.maildir is None
    # An option of the same exclusive group on the command line silences the variable.
    args = build_parser().parse_args(["serve", "--maildir", "md"])
    assert args.mbox is None and str(args.maildir) == "md"
    monkeypatch.delenv("FERROSMTP_PORT")
    assert build_parser().parse_args(["serve"]).port == 8025


def test_server_runs_from_the_environment_alone(
    serve: Callable[..., Serve], tmp_path: Path
) -> None:
    port = free_port()
    server = serve(env={"FERROSMTP_PORT": str(port), "FERROSMTP_MAILDIR": str(tmp_path / "md")})
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("a@example.org", ["b@example.org"], b"Subject: env\r\n\r\nhi\r\n")
    assert len(list((tmp_path / "md" / "new").iterdir())) == 1
    assert f"listening on 127.0.0.1:{port}" in server.text()


def test_first_log_line_names_version_loop_and_codec_backend(
    serve: Callable[..., Serve],
) -> None:
    server = serve("--sink", "--loop", "asyncio")
    first = server.text().splitlines()[0]
    assert f"SMTP listening on 127.0.0.1:{server.port} (asyncio loop, {codec.BACKEND} codec)" in (
        first
    )


def test_json_log_is_one_object_a_line(serve: Callable[..., Serve]) -> None:
    server = serve("--sink", "--log-format", "json")
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        client.sendmail("a@example.org", ["b@example.org"], b"Subject: j\r\n\r\nhi\r\n")
    server.wait_for(lambda: "disconnected" in server.text())
    entries = [json.loads(line) for line in server.text().splitlines()]
    assert {"time", "level", "logger", "pid", "message"} <= set(entries[0])
    assert entries[0]["level"] == "INFO" and entries[0]["pid"] == server.proc.pid
    assert entries[0]["time"].endswith("Z") and "listening on" in entries[0]["message"]
    assert any("message from=<a@example.org> rcpts=1" in e["message"] for e in entries)


def test_sighup_reopens_the_log_file(serve: Callable[..., Serve], tmp_path: Path) -> None:
    server = serve("--sink")
    rotated = tmp_path / "serve.log.1"
    server.log.rename(rotated)  # what logrotate does
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for(lambda: "SIGHUP: reloading (log reopened" in server.text())
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        client.noop()
    server.wait_for(lambda: "connected" in server.text())
    assert "listening on" in rotated.read_text() and "listening on" not in server.text()


def _peer_certificate(port: int, ca: trustme.CA) -> bytes:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.starttls(context=context)
        assert client.sock is not None
        der = client.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
    assert isinstance(der, bytes)
    return der


def test_sighup_reloads_the_tls_certificate_and_keeps_it_if_the_new_one_is_bad(
    serve: Callable[..., Serve], tmp_path: Path
) -> None:
    ca = trustme.CA()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    first = ca.issue_cert("127.0.0.1")
    first.cert_chain_pems[0].write_to_path(str(cert))
    first.private_key_pem.write_to_path(str(key))
    server = serve("--sink", "--tls-cert", str(cert), "--tls-key", str(key))
    before = _peer_certificate(server.port, ca)
    assert before == ssl.PEM_cert_to_DER_cert(first.cert_chain_pems[0].bytes().decode())

    second = ca.issue_cert("127.0.0.1")
    second.cert_chain_pems[0].write_to_path(str(cert))
    second.private_key_pem.write_to_path(str(key))
    server.hup("TLS certificate reloaded from")
    after = _peer_certificate(server.port, ca)
    assert after == ssl.PEM_cert_to_DER_cert(second.cert_chain_pems[0].bytes().decode())

    key.write_text("not a key\n")  # a botched renewal: the server keeps the second pair
    server.hup("TLS not reloaded, the previous certificate stays")
    assert f"--tls-key: {key} is not the PEM private key" in server.text()
    assert _peer_certificate(server.port, ca) == after


def _login(port: int, password: str) -> bool:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo()
        try:
            client.login("alice", password)
        except smtplib.SMTPAuthenticationError:
            return False
        return True


def test_sighup_reloads_the_auth_file(serve: Callable[..., Serve], tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("alice:first\n")
    server = serve("--sink", "--auth-file", str(users), "--allow-insecure-auth")
    assert _login(server.port, "first")
    users.write_text("alice:second\nbob:other\n")
    server.hup("2 users reloaded from")
    assert _login(server.port, "second")
    users.write_text("alice:third\nbroken line\n")
    server.hup("users not reloaded, the previous ones stay")
    assert f"{users}:2: expected 'user:password'" in server.text()
    assert _login(server.port, "second")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="--workers forks")
def test_sighup_reaches_every_worker(serve: Callable[..., Serve]) -> None:
    server = serve("--sink", "--workers", "2")
    server.wait_for(lambda: server.text().count("listening on") == 2)
    server.hup("supervisor passing SIGHUP to 2 workers")
    server.wait_for(lambda: server.text().count("SIGHUP: reloading") == 2)
