"""Helpers for live-server tests: a Controller on a free port, raw socket dialogs, and
test-time TLS certificates."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import trustme

from ferrosmtp.server import Controller

HOST = "127.0.0.1"


@contextlib.contextmanager
def running(handler: Any, **kwargs: Any) -> Iterator[Controller]:
    """A threaded ferrosmtp server on 127.0.0.1:<free port>, stopped on exit."""
    kwargs.setdefault("server_hostname", "mx.test")
    controller = Controller(handler, hostname=HOST, port=0, **kwargs)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


class Raw:
    """A blocking raw socket client that reads whole replies: for byte-level checks."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_until(self, marker: bytes, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.buf:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before {marker!r}; got {self.buf!r}")
            self.buf += chunk
        end = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:end], self.buf[end:]
        return out

    def reply(self, timeout: float = 5.0) -> bytes:
        """One complete reply (its last line has a space after the code)."""
        out = b""
        while True:
            line = self.read_until(b"\r\n", timeout)
            out += line
            if len(line) < 4 or line[3:4] != b"-":
                return out

    def greet(self, name: str = "c.example") -> bytes:
        """Read the banner, send EHLO, return the EHLO reply."""
        self.reply()
        self.send(f"EHLO {name}\r\n".encode())
        return self.reply()

    def replies(self, n: int) -> list[bytes]:
        return [self.reply() for _ in range(n)]

    def read_to_eof(self, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        out, self.buf = self.buf, b""
        while True:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return out
            if not chunk:
                return out
            out += chunk

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Certs:
    """A CA and a server certificate for 'mx.test' and 127.0.0.1, made at test time."""

    def __init__(self) -> None:
        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert("mx.test", "127.0.0.1", "localhost")

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context
