"""What a test pays for a real SMTP server fixture: get a server, send one message with
smtplib, check it arrived, and stop the server if the fixture does. ferrosmtp's
``smtp_server`` (one server per session and set of options, reset for each test) and
``smtp_server_factory`` (a server per test) against aiosmtpd's ``Controller`` and
smtpdfix's ``smtpd`` fixture (``SMTPDFix``, what the fixture runs), both a server per
test, plain and with STARTTLS, interleaved, median of ``--rounds``.

    python benches/fixture_startup.py --rounds 30

Needs the ``bench`` extra (aiosmtpd, smtpdfix) and trustme.
"""

from __future__ import annotations

import argparse
import os
import smtplib
import socket
import ssl
import statistics
import time
from collections.abc import Callable
from typing import Any

MESSAGE = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: t\r\n\r\nhi\r\n"


def _send(host: str, port: int, context: ssl.SSLContext | None) -> None:
    with smtplib.SMTP(host, port, timeout=10) as client:
        if context is not None:
            client.starttls(context=context)
        client.sendmail("a@example.org", ["b@example.org"], MESSAGE)


def ferrosmtp_cycle(tls: bool) -> Callable[[bool], None]:
    """The ``smtp_server`` fixture: the session's server for these options, reset."""
    from ferrosmtp.testing import _Pool

    pool = _Pool()

    def cycle(send: bool) -> None:
        server = pool.get({"tls": "starttls" if tls else None})
        if send:
            _send(server.host, server.port, server.client_context() if tls else None)
            server.assert_received(to="b@example.org")

    return cycle


def ferrosmtp_factory_cycle(tls: bool) -> Callable[[bool], None]:
    """``smtp_server_factory``: a server of the test's own, started and stopped."""
    from ferrosmtp.testing import SMTPTestServer

    def cycle(send: bool) -> None:
        with SMTPTestServer(tls="starttls" if tls else None) as server:
            if send:
                _send(server.host, server.port, server.client_context() if tls else None)
                server.assert_received(to="b@example.org")

    return cycle


def aiosmtpd_cycle(tls: bool) -> Callable[[bool], None]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    received: list[Any] = []
    certificate: list[Any] = []  # made once, as a test suite's conftest would

    class Recorder(Message):  # type: ignore[misc]
        def handle_message(self, message: Any) -> None:
            received.append(message)

    def cycle(send: bool) -> None:
        kwargs: dict[str, Any] = {}
        client: ssl.SSLContext | None = None
        if tls:
            import trustme

            if not certificate:
                ca = trustme.CA()
                certificate.extend([ca, ca.issue_cert("127.0.0.1")])
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            certificate[1].configure_cert(context)
            client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            certificate[0].configure_trust(client)
            kwargs["tls_context"] = context
        with socket.socket() as probe:  # aiosmtpd's Controller needs a port number
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        controller = Controller(Recorder(), hostname="127.0.0.1", port=port, **kwargs)
        controller.start()
        try:
            if send:
                _send("127.0.0.1", controller.port, client)
                assert received
        finally:
            controller.stop()
            received.clear()

    return cycle


def smtpdfix_cycle(tls: bool) -> Callable[[bool], None]:
    from smtpdfix import Config, SMTPDFix
    from smtpdfix.certs import _generate_certs

    if tls and os.getenv("SMTPD_SSL_CERTIFICATE_FILE") is None:
        # What the smtpd fixture does once per session (the variable then stays set).
        import tempfile

        cert, _ = _generate_certs(tempfile.mkdtemp(), separate_key=False)
        os.environ["SMTPD_SSL_CERTIFICATE_FILE"] = str(cert.resolve())

    def cycle(send: bool) -> None:
        config = Config()
        config.use_starttls = tls
        with SMTPDFix("127.0.0.1", config=config) as smtpd:
            if not send:
                return
            context = None
            if tls:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE  # smtpdfix's own self-signed certificate
            _send("127.0.0.1", smtpd.port, context)
            assert len(smtpd.messages) == 1

    return cycle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    cases = {
        f"{name}{' + STARTTLS' if tls else ''}": make(tls)
        for tls in (False, True)
        for name, make in (
            ("ferrosmtp smtp_server", ferrosmtp_cycle),
            ("ferrosmtp smtp_server_factory", ferrosmtp_factory_cycle),
            ("aiosmtpd Controller", aiosmtpd_cycle),
            ("smtpdfix smtpd", smtpdfix_cycle),
        )
    }
    times: dict[tuple[str, int], list[float]] = {(n, s): [] for n in cases for s in (0, 1)}
    for cycle in cases.values():  # warm-up: imports, first certificate
        cycle(True)
    for _ in range(args.rounds):
        for (name, send), samples in times.items():
            started = time.perf_counter()
            cases[name](bool(send))
            samples.append(time.perf_counter() - started)
    print(f"load average {os.getloadavg()[0]:.2f}; median of {args.rounds} rounds; ms per test")
    print("| fixture | server for a test | with one message sent | the latter vs first row |")
    print("|---|---:|---:|---:|")
    for tls in ("", " + STARTTLS"):
        names = [n for n in cases if n.endswith(tls) and (tls or "STARTTLS" not in n)]
        base = statistics.median(times[(names[0], 1)])
        for name in names:
            alone, sent = (statistics.median(times[(name, s)]) for s in (0, 1))
            print(f"| {name} | {alone * 1000:.2f} | {sent * 1000:.2f} | {sent / base:.1f}x |")


if __name__ == "__main__":
    main()
