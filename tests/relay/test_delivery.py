"""Delivery, retries and notices through ``ferrosmtp relay`` with a smarthost that
scripts its replies: 451 then 250, per-recipient outcomes from one transaction, RFC 3464
bounces read back and parsed, NOTIFY honoured, the null sender never bounced."""

from __future__ import annotations

import email
import email.message
import email.policy
import json
from pathlib import Path

import pytest

from tests.relay.support import (
    Received,
    RelayProcess,
    message,
    next_hop,
    queue_cli,
    send,
    wait_until,
)

FAST = ("--min-backoff", "1", "--max-backoff", "2")

# Each test runs on both queue backends (tests/relay/conftest.py).
pytestmark = pytest.mark.usefixtures("relay_backend")


def report_parts(got: Received) -> tuple[email.message.Message, list[email.message.Message]]:
    """The DSN's delivery-status part: per-message fields, then per-recipient groups."""
    msg = email.message_from_bytes(got.content, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    parts = msg.get_payload()
    assert isinstance(parts, list)
    assert parts[0].get_content_type() == "text/plain"
    status = parts[1]
    assert status.get_content_type() == "message/delivery-status"
    groups = status.get_payload()
    assert isinstance(groups, list)
    return msg, groups


def listed(spool: Path) -> list[dict[str, object]]:
    result = queue_cli(spool, "list", "--json")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_451_is_retried_with_backoff_until_250(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with next_hop() as (hop, port):
        hop.data_replies = ["451 4.3.0 try again later"] * 2
        with RelayProcess(spool, "--relayhost", f"127.0.0.1:{port}", *FAST) as relay:
            code, reply, _ = send(relay.port, "a@x.test", ["b@y.test"], message("retried"))
            assert code == 250
            queue_id = reply.rsplit(" ", 1)[1]
            wait_until(lambda: hop.attempts >= 1, 10, "a first attempt")
            (entry,) = listed(spool)
            assert entry["id"] == queue_id and entry["recipients"] == ["b@y.test"]
            assert "451 4.3.0 try again later" in str(entry["last_error"])
            (got,) = hop.wait(1, timeout=30)
            assert got.message["Subject"] == "retried"
            assert hop.attempts == 3
            wait_until(lambda: listed(spool) == [], 10, "an empty queue")
            log = relay.log()
        assert log.count(f"{queue_id}: to=<b@y.test>") == 3
        assert log.count("status=deferred") == 2 and "dsn=4.3.0" in log


def test_per_recipient_outcomes_and_a_bounce_parsed_as_multipart_report(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with next_hop() as (hop, port):
        hop.rcpt_replies = {
            "bad@y.test": "550 5.1.1 <bad@y.test>: no such user",
            "later@y.test": "450 4.2.1 mailbox busy",
        }
        with RelayProcess(
            spool, "--relayhost", f"127.0.0.1:{port}", *FAST, "--hostname", "relay.test"
        ) as relay:
            code, reply, _ = send(
                relay.port,
                "sender@x.test",
                ["good@y.test", "bad@y.test", "later@y.test"],
                message("mixed"),
                mail_options=["RET=HDRS", "ENVID=env42"],
                rcpt_options=["NOTIFY=FAILURE"],
            )
            assert code == 250
            queue_id = reply.rsplit(" ", 1)[1]
            delivered, bounce = hop.wait(2)
            assert delivered.rcpt_tos == ["good@y.test"]
            assert bounce.mail_from == "<>" and bounce.rcpt_tos == ["sender@x.test"]
            msg, groups = report_parts(bounce)
            assert msg["Subject"] == "Undelivered Mail Returned to Sender"
            assert msg["Auto-Submitted"] == "auto-replied"
            assert groups[0]["Reporting-MTA"] == "dns; relay.test"
            assert groups[0]["Original-Envelope-Id"] == "env42"
            assert groups[0]["X-Ferrosmtp-Queue-ID"] == queue_id
            (failed,) = groups[1:]
            assert failed["Final-Recipient"] == "rfc822; bad@y.test"
            assert failed["Action"] == "failed"
            assert failed["Status"] == "5.1.1"
            assert failed["Remote-MTA"] == "dns; 127.0.0.1"
            assert "550 5.1.1 <bad@y.test>: no such user" in failed["Diagnostic-Code"]
            parts = msg.get_payload()
            assert isinstance(parts, list)
            assert parts[2].get_content_type() == "text/rfc822-headers"  # RET=HDRS
            assert "Subject: mixed" in str(parts[2].get_payload())
            # The deferred recipient stays queued, alone.
            (entry,) = listed(spool)
            assert entry["id"] == queue_id and entry["recipients"] == ["later@y.test"]
            hop.rcpt_replies.clear()
            hop.wait(3, timeout=30)
            assert hop.messages[2].rcpt_tos == ["later@y.test"]
            wait_until(lambda: listed(spool) == [], 10, "an empty queue")
        log = relay.log()
        assert "to=<bad@y.test>" in log and "status=bounced" in log
        assert f"{queue_id}: sender failed notification" in log


def test_notify_never_and_the_null_sender_get_no_bounce(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with next_hop() as (hop, port):
        hop.rcpt_replies = {"bad@y.test": "550 5.1.1 no such user"}
        with RelayProcess(spool, "--relayhost", f"127.0.0.1:{port}") as relay:
            send(
                relay.port,
                "a@x.test",
                ["bad@y.test", "ok@y.test"],
                message("never"),
                rcpt_options=["NOTIFY=NEVER"],
            )
            send(relay.port, "<>", ["bad@y.test", "ok@y.test"], message("null"))
            hop.wait(2)
            wait_until(lambda: listed(spool) == [], 10, "an empty queue")
            wait_until(lambda: "the sender is <>" in relay.log(), 10, "the dropped notice")
            assert len(hop.messages) == 2
            assert all(m.rcpt_tos == ["ok@y.test"] for m in hop.messages)


def test_success_and_delay_notices_when_asked_for(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with next_hop(dsn=False) as (hop, port):  # a next hop without DSN: "relayed" notices
        hop.data_replies = ["451 4.3.0 busy"]
        with RelayProcess(spool, "--relayhost", f"127.0.0.1:{port}", *FAST) as relay:
            send(
                relay.port,
                "a@x.test",
                ["b@y.test"],
                message("notify"),
                rcpt_options=["NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;b@original.test"],
            )
            hop.wait(3, timeout=30)
            notices = {m.message["Subject"]: m for m in hop.messages if m.mail_from == "<>"}
            assert set(notices) == {
                "Delayed Mail (still being retried)",
                "Successful Mail Delivery Report",
            }
            _, delayed = report_parts(notices["Delayed Mail (still being retried)"])
            assert delayed[1]["Action"] == "delayed" and delayed[1]["Status"] == "4.3.0"
            assert delayed[1]["Original-Recipient"] == "rfc822;b@original.test"
            _, relayed = report_parts(notices["Successful Mail Delivery Report"])
            assert relayed[1]["Action"] == "relayed"
            del relay


def test_expired_messages_bounce(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with next_hop() as (hop, port):
        hop.rcpt_replies = {"b@y.test": "451 4.3.0 never"}
        with RelayProcess(
            spool, "--relayhost", f"127.0.0.1:{port}", *FAST, "--max-lifetime", "2"
        ) as relay:
            send(relay.port, "a@x.test", ["b@y.test"], message("expires"))
            (bounce,) = hop.wait(1, timeout=20)
            wait_until(lambda: listed(spool) == [], 20, "an empty queue")
            _, groups = report_parts(bounce)
            assert groups[1]["Action"] == "failed"
            assert "expired" in groups[1]["Diagnostic-Code"]
            del relay
