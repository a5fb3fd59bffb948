"""The accepting side of ``ferrosmtp relay``: the 250 with the queue id, the Received
header, who may relay, the hop limit, and Postfix relaying into it."""

from __future__ import annotations

import re
import smtplib
import ssl
from pathlib import Path

import pytest
import trustme

from ferrosmtp.relay.policy import HopCounter, RelayPolicy
from tests.peers import PostfixRelay, require_root, swaks
from tests.relay.support import RelayProcess, message, next_hop, send, wait_until

# Each test runs on both queue backends (tests/relay/conftest.py).
pytestmark = pytest.mark.usefixtures("relay_backend")


def test_queued_as_id_then_delivered_with_a_received_header(tmp_path: Path) -> None:
    with next_hop() as (hop, port):
        with RelayProcess(
            tmp_path / "spool", "--relayhost", f"127.0.0.1:{port}", "--hostname", "relay.test"
        ) as relay:
            code, reply, _ = send(relay.port, "a@x.test", ["b@y.test"], message("one"))
            assert code == 250
            match = re.fullmatch(r"2\.0\.0 Ok: queued as ([0-9A-F]+)", reply)
            assert match, reply
            queue_id = match.group(1)
            (got,) = hop.wait(1)
            assert got.mail_from == "a@x.test" and got.rcpt_tos == ["b@y.test"]
            received = got.message.get_all("Received")
            assert received and f"id {queue_id}" in received[0]
            assert "by relay.test" in received[0]
            assert got.message["Subject"] == "one"
            wait_until(lambda: "status=sent" in relay.log(), 10, "the delivery log line")
        line = next(x for x in relay.log().splitlines() if "status=sent" in x)
        assert re.search(
            rf"{queue_id}: to=<b@y\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:{port}, "
            r"delay=[0-9.e-]+, delays=[0-9.e-]+/[0-9.e-]+/[0-9.e-]+/[0-9.e-]+, dsn=2\.0\.0, "
            r"status=sent \(250 2\.0\.0 Ok: stored\)",
            line,
        ), line


def test_strangers_are_refused_at_rcpt_unless_to_a_relay_domain(tmp_path: Path) -> None:
    with next_hop() as (hop, port):
        with RelayProcess(
            tmp_path / "spool",
            "--relayhost",
            f"127.0.0.1:{port}",
            "--mynetworks",
            "127.0.0.1/32",
            "--relay-domains",
            "ours.test,.sub.test",
        ) as relay:
            code, reply, refused = send(
                relay.port, "a@x.test", ["b@elsewhere.test"], message(), source="127.0.0.9"
            )
            assert (code, reply) == (554, "5.7.1 Relay access denied")
            code, _, refused = send(
                relay.port,
                "a@x.test",
                ["b@ours.test", "c@deep.sub.test", "d@other.test"],
                message("domains"),
                source="127.0.0.9",
            )
            assert code == 250
            assert list(refused) == ["d@other.test"]
            (got,) = hop.wait(1)
            assert got.rcpt_tos == ["b@ours.test", "c@deep.sub.test"]
            code, _, _ = send(relay.port, "a@x.test", ["b@elsewhere.test"], message("mine"))
            assert code == 250  # 127.0.0.1 is in --mynetworks


def test_no_default_makes_an_open_relay() -> None:
    class Session:
        peer = ("192.0.2.1", 1234)
        authenticated = True
        ssl = None  # authenticated without TLS does not count
        proxy_data = None

    policy = RelayPolicy.parse(["127.0.0.0/8", "::1/128"], [])
    assert not policy.may_relay(Session(), "x@example.com")
    assert not RelayPolicy.parse([], []).may_relay(Session(), "x@example.com")


def test_clients_authenticated_over_tls_may_relay(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("relay.test", "127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(cert_path)
    cert.private_key_pem.write_to_path(key_path)
    auth = tmp_path / "users"
    auth.write_text("alice:wonderland\n")
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    with next_hop() as (hop, port):
        # Delivered to an address literal on --mx-port: --relayhost would take the
        # auth file's first entry as its own login.
        with RelayProcess(
            tmp_path / "spool",
            "--mx-port",
            str(port),
            "--mynetworks",
            "127.0.0.1/32",
            "--tls-cert",
            str(cert_path),
            "--tls-key",
            str(key_path),
            "--auth-file",
            str(auth),
        ) as relay:
            with smtplib.SMTP("127.0.0.1", relay.port, source_address=("127.0.0.9", 0)) as s:
                s.starttls(context=client_ctx)
                s.ehlo("client.test")
                s.mail("a@x.test")
                assert s.rcpt("b@[127.0.0.1]")[0] == 554  # TLS alone is not enough
                s.rset()
                s.login("alice", "wonderland")
                s.mail("a@x.test")
                assert s.rcpt("b@[127.0.0.1]")[0] == 250
                assert s.data(message("authenticated"))[0] == 250
            (got,) = hop.wait(1)
            assert "ESMTPSA" in got.message["Received"]


def test_hop_counter_reads_only_the_header_section() -> None:
    counter = HopCounter()
    for chunk in (b"Received: a\r\nRec", b"eived: b\r\nX: y\r\n\r\nReceived: body\r\n"):
        counter.feed(chunk)
    assert counter.count == 2


@pytest.mark.parametrize("hops", [50, 51])
def test_more_than_50_received_headers_is_too_many_hops(tmp_path: Path, hops: int) -> None:
    trace = "".join(f"Received: from h{i}.test by h{i + 1}.test; now\r\n" for i in range(hops))
    content = (trace + "Subject: loop\r\n\r\nbody\r\n").encode()
    with next_hop() as (hop, port):
        with RelayProcess(tmp_path / "spool", "--relayhost", f"127.0.0.1:{port}") as relay:
            code, reply, _ = send(relay.port, "a@x.test", ["b@y.test"], content)
            if hops > 50:
                assert (code, reply) == (554, "5.4.6 Too many hops")
                bodies = tmp_path / "spool" / "bodies"  # a spool's (no folder: PostgreSQL)
                assert not bodies.exists() or not list(bodies.iterdir())
            else:
                assert code == 250
                hop.wait(1)


@pytest.mark.interop
def test_postfix_relays_into_the_relay(tmp_path: Path) -> None:
    require_root("a Postfix relay")
    with next_hop() as (hop, port):
        with RelayProcess(tmp_path / "spool", "--relayhost", f"127.0.0.1:{port}") as relay:
            with PostfixRelay(relay.port) as postfix:
                result = swaks(
                    "--from",
                    "alice@x.test",
                    "--to",
                    "bob@y.test,carol@y.test",
                    "--header",
                    "Subject: via postfix",
                    port=postfix.address[1],
                )
                assert "queued as" in result.stdout
                (got,) = hop.wait(1, timeout=30)
                assert sorted(got.rcpt_tos) == ["bob@y.test", "carol@y.test"]
                received = got.message.get_all("Received")
                assert received is not None and "(Postfix)" in received[1]
                postfix.wait_log(r"status=sent \(250 2\.0\.0 Ok: queued as [0-9A-F]+\)")
