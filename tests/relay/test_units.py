"""The relay's pure parts: 8-bit downgrade, backoff, NOTIFY rules, the DSN's shape."""

from __future__ import annotations

import email
import email.policy
import time

import pytest

from ferrosmtp.relay.bounce import Notice, build_dsn, wants_notice
from ferrosmtp.relay.downgrade import Unconvertible, to_7bit
from ferrosmtp.relay.queue import Envelope, QueueEntry, Recipient
from ferrosmtp.relay.scheduler import RetryPolicy

MIXED = (
    b'Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    + "Grüße aus Köln\r\n".encode()
    + b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary"
    b"\r\n\r\n\xff\xfe\x00\x01\r\n--b--\r\n"
)


def test_downgrade_reencodes_each_8bit_part_and_keeps_the_content() -> None:
    out = to_7bit(MIXED)
    assert out.isascii()
    msg = email.message_from_bytes(out, policy=email.policy.default)
    text, blob = msg.iter_parts()  # type: ignore[attr-defined]
    assert text["Content-Transfer-Encoding"] == "quoted-printable"
    assert text.get_content().rstrip("\n") == "Grüße aus Köln"
    assert blob["Content-Transfer-Encoding"] == "base64"
    assert blob.get_content() == b"\xff\xfe\x00\x01"


def test_downgrade_refuses_8bit_headers_and_message_parts() -> None:
    with pytest.raises(Unconvertible):
        to_7bit("Subject: café\r\n\r\nx\r\n".encode())
    inner = (
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + "Subject: é\r\n\r\nbody é\r\n".encode()
    )
    with pytest.raises(Unconvertible) as error:
        to_7bit(inner)
    assert error.value.status == "5.6.3"


def test_backoff_doubles_between_the_limits() -> None:
    retry = RetryPolicy(300, 4000, 5 * 86400)
    delays = [retry.next_attempt(n, 0.0) for n in range(1, 7)]
    assert delays == [300, 600, 1200, 2400, 4000, 4000]


def test_notify_rules() -> None:
    default = Recipient("a@x.test")
    assert wants_notice(default, "failed") and not wants_notice(default, "delayed")
    never = Recipient("a@x.test", notify=("NEVER",))
    assert not any(wants_notice(never, a) for a in ("failed", "delayed", "relayed"))
    both = Recipient("a@x.test", notify=("SUCCESS", "DELAY"))
    assert wants_notice(both, "relayed") and wants_notice(both, "delayed")
    assert not wants_notice(both, "failed")


def test_dsn_has_the_three_parts_and_returns_headers_only_when_asked() -> None:
    entry = QueueEntry(
        "QID",
        Envelope(
            "s@x.test", [Recipient("r@y.test", orcpt="rfc822;o@y.test")], ret="HDRS", envid="E1"
        ),
        20,
        time.time(),
    )
    notice = Notice(
        entry.envelope.recipients[0], "failed", "5.1.1", "550 5.1.1 unknown", "mx.y.test"
    )
    raw = build_dsn(
        entry,
        b"Subject: s\r\n\r\nsecret body\r\n",
        [notice],
        hostname="relay.test",
        now=time.time(),
    )
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report"
    text, status, original = msg.get_payload()  # type: ignore[misc]
    assert text.get_content_type() == "text/plain"
    fields = status.get_payload()
    assert fields[0]["Original-Envelope-Id"] == "E1"
    assert fields[1]["Original-Recipient"] == "rfc822;o@y.test"
    assert fields[1]["Remote-MTA"] == "dns; mx.y.test"
    assert original.get_content_type() == "text/rfc822-headers"
    assert b"secret body" not in raw
