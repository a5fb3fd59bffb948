"""The next hop's abilities decide what the relay sends, against a real Postfix as the
smarthost: 8-bit downgraded to 7 bits without 8BITMIME, UTF-8 addresses bounced without
SMTPUTF8 (5.6.7), a body over SIZE bounced (5.3.4), DSN parameters passed on, and
STARTTLS + AUTH toward a smarthost from --auth-file's first entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.peers import PostfixServer, require_root
from tests.relay.support import RelayProcess, next_hop, send, wait_until
from tests.relay.test_delivery import listed, report_parts

# Each test runs on both queue backends (tests/relay/conftest.py).
pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("relay_backend")]

EIGHT_BIT = (
    b"Subject: 8-bit body\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    + "Grüße aus Köln, ça va ?\r\n".encode()
)


@pytest.fixture
def postfix_factory() -> object:
    require_root("a Postfix next hop")
    started: list[PostfixServer] = []

    def make(**options: object) -> PostfixServer:
        server = PostfixServer(**options).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def test_8bit_is_downgraded_for_a_next_hop_without_8bitmime(
    tmp_path: Path, postfix_factory: object
) -> None:
    postfix = postfix_factory(discard_ehlo_keywords=["8bitmime"])  # type: ignore[operator]
    with RelayProcess(tmp_path / "spool", "--relayhost", f"127.0.0.1:{postfix.address[1]}") as r:
        assert (
            send(r.port, "a@x.test", ["b@y.test"], EIGHT_BIT, mail_options=["BODY=8BITMIME"])[0]
            == 250
        )
        (got,) = postfix.wait_messages(1, recipient="b@y.test")
        assert got.body.isascii()
        msg = got.message()
        assert msg["Content-Transfer-Encoding"] == "quoted-printable"
        assert msg.get_content() == "Grüße aus Köln, ça va ?\n"


def test_next_hop_abilities_smtputf8_and_size(tmp_path: Path, postfix_factory: object) -> None:
    """UTF-8 addresses without SMTPUTF8 bounce 5.6.7; over SIZE bounces 5.3.4. The
    bounces go through the same queue to the sender's own mailbox at that Postfix, and
    are read back from there."""
    postfix = postfix_factory(  # type: ignore[operator]
        discard_ehlo_keywords=["smtputf8"], message_size_limit=20000
    )
    spool = tmp_path / "spool"
    with RelayProcess(spool, "--relayhost", f"127.0.0.1:{postfix.address[1]}") as relay:
        code, _, _ = send(
            relay.port,
            "sender@x.test",
            ["δοκιμή@y.test"],
            b"Subject: utf8\r\n\r\nx\r\n",
            mail_options=["SMTPUTF8"],
        )
        assert code == 250
        code, _, _ = send(
            relay.port,
            "sender@x.test",
            ["big@y.test"],
            b"Subject: big\r\n\r\n" + (b"x" * 78 + b"\r\n") * 400,
        )
        assert code == 250
        bounces = postfix.wait_messages(2, recipient="sender@x.test", timeout=30)
        statuses = set()
        for bounce in bounces:
            msg = bounce.message()
            assert msg.get_content_type() == "multipart/report"
            status = msg.get_payload()[1].get_payload()[1]  # type: ignore[index,union-attr]
            statuses.add(status["Status"])
        assert statuses == {"5.6.7", "5.3.4"}
        wait_until(lambda: listed(spool) == [], 20, "an empty queue")
        log = relay.log()
    assert "SMTPUTF8 is required" in log and "exceeds size limit 20000" in log


def test_dsn_parameters_are_passed_on_to_a_next_hop_with_dsn(
    tmp_path: Path, postfix_factory: object
) -> None:
    postfix = postfix_factory(tls=True)  # type: ignore[operator]
    with RelayProcess(tmp_path / "spool", "--relayhost", f"127.0.0.1:{postfix.address[1]}") as r:
        code, _, _ = send(
            r.port,
            "sender@x.test",
            ["b@y.test"],
            b"Subject: dsn\r\n\r\nbody\r\n",
            mail_options=["RET=HDRS", "ENVID=env-77"],
            rcpt_options=["NOTIFY=SUCCESS", "ORCPT=rfc822;orig@y.test"],
        )
        assert code == 250
        (got,) = postfix.wait_messages(1, recipient="b@y.test")
        assert "with ESMTPS" in got.message()["Received"]  # STARTTLS, since it was offered
        # Postfix, given NOTIFY=SUCCESS, reports the delivery to the sender itself (we pass
        # no "relayed" notice of our own): it lands in the same virtual mailbox.
        (notice,) = postfix.wait_messages(1, recipient="sender@x.test", timeout=30)
        text = notice.content.decode("utf-8", "replace")
        assert "Action: delivered" in text
        assert "Original-Envelope-Id: env-77" in text
        assert "Original-Recipient: rfc822;orig@y.test" in text
    assert "sender relayed notification" not in r.log()


def test_starttls_and_auth_toward_the_smarthost(tmp_path: Path, postfix_factory: object) -> None:
    postfix = postfix_factory(  # type: ignore[operator]
        tls=True, sasl_users={"relayuser": "s3cret"}, auth_required=True
    )
    auth = tmp_path / "auth"
    auth.write_text("relayuser:s3cret\nother:x\n")
    with RelayProcess(
        tmp_path / "spool",
        "--relayhost",
        f"127.0.0.1:{postfix.address[1]}",
        "--auth-file",
        str(auth),
    ) as r:
        assert send(r.port, "a@x.test", ["b@y.test"], b"Subject: tls\r\n\r\nx\r\n")[0] == 250
        (got,) = postfix.wait_messages(1, recipient="b@y.test")
        assert "with ESMTPSA" in got.message()["Received"]


def test_multipart_report_bounce_is_well_formed(tmp_path: Path) -> None:
    """A bounce for an 8-bit message keeps the original as message/rfc822."""
    with next_hop() as (hop, port):
        hop.rcpt_replies = {"bad@y.test": "550 5.1.1 unknown"}
        with RelayProcess(tmp_path / "spool", "--relayhost", f"127.0.0.1:{port}") as relay:
            send(relay.port, "a@x.test", ["bad@y.test"], EIGHT_BIT)
            (bounce,) = hop.wait(1)
            msg, _ = report_parts(bounce)
            parts = msg.get_payload()
            assert isinstance(parts, list) and parts[2].get_content_type() == "message/rfc822"
            assert "Grüße".encode() in bounce.content
            del relay
