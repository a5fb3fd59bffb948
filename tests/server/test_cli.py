"""``ferrosmtp serve`` as a real process: stores into a Maildir, logs, stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ferrosmtp.cli import main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early: {proc.communicate()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("server did not start listening")


def test_serve_stores_into_the_default_maildir(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferrosmtp", "serve", "--port", str(port), "--hostname", "mx.test"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, proc)
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail("a@example.com", ["b@example.net"], b"Subject: cli\r\n\r\nhello\r\n")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    log = out.decode()
    assert "listening on 127.0.0.1" in log and "storing into maildir" in log
    assert "connected" in log and "message from=<a@example.com> rcpts=1" in log
    [stored] = list((tmp_path / "maildir" / "new").iterdir())
    data = stored.read_bytes()
    assert data.startswith(b"Received: from ") and data.endswith(b"Subject: cli\r\n\r\nhello\r\n")


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--implicit-tls"]) == 2
    assert "--implicit-tls needs --tls-cert" in capsys.readouterr().err
    assert main(["serve", "--auth-file", os.devnull]) == 2
    assert "passwords in clear" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["serve", "--max-size", "lots"])
    assert info.value.code == 2
    assert main([]) == 2


def test_port_in_use_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port), "--sink", "-q"]) == 3
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err


def test_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ferrosmtp", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for flag in [
        "--host",
        "--port",
        "--maildir",
        "--mbox",
        "--stdout",
        "--tls-cert",
        "--tls-key",
        "--implicit-tls",
        "--auth-file",
        "--max-size",
        "--hostname",
        "--lmtp",
    ]:
        assert flag in result.stdout
