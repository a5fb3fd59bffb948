"""Behind HAProxy (send-proxy-v2) the nodes see the real client, not the load balancer:
in the Received header, for --mynetworks, and for the per-address AUTH lockout. Clients
bind loopback source addresses (127.0.0.2, 127.0.0.9...) to come from elsewhere; HAProxy
itself connects from 127.0.0.1."""

from __future__ import annotations

import base64
import smtplib
import ssl
from pathlib import Path

import pytest
import trustme

from tests.relay.support import message, send
from tests.scaleout.nodes import Nodes, counting_hop, message_id

pytestmark = pytest.mark.interop


def test_received_and_mynetworks_see_the_real_client(tmp_path: Path, queue_url: str) -> None:
    with counting_hop() as (hop, hop_port):
        nodes = Nodes(tmp_path, queue_url, 2, hop_port, extra=["--mynetworks", "127.0.0.2/32"])
        try:
            nodes.start()
            code, reply, _ = send(
                nodes.port, "a@x.test", ["b@y.test"], message("mine"), source="127.0.0.2"
            )
            assert code == 250, reply
            for source in ("127.0.0.9", "127.0.0.1"):  # a stranger; HAProxy's own address
                code, reply, _ = send(
                    nodes.port, "a@x.test", ["b@y.test"], message("theirs"), source=source
                )
                assert (code, reply) == (554, "5.7.1 Relay access denied"), source
            hop.wait_ids(1)
        finally:
            nodes.stop()
    assert list(hop.ids) == ["<mine@test>"]
    logs = "".join(n.log() for n in nodes.nodes)
    for source in ("127.0.0.9", "127.0.0.1"):
        assert f"client.test[{source}] reject RCPT <b@y.test>" in logs


def test_received_header_names_the_real_client(tmp_path: Path, queue_url: str) -> None:
    from tests.relay.support import next_hop

    with next_hop() as (hop, hop_port):
        nodes = Nodes(tmp_path, queue_url, 1, hop_port)
        try:
            nodes.start()
            code, _, _ = send(
                nodes.port, "a@x.test", ["b@y.test"], message("traced"), source="127.0.0.7"
            )
            assert code == 250
            (got,) = hop.wait(1)
        finally:
            nodes.stop()
    assert message_id(got.content) == "<traced@test>"
    received = got.message.get_all("Received")
    assert received and "([127.0.0.7])" in received[0], received[0]


def _plain(user: str, password: str) -> str:
    return "PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def test_the_auth_lockout_counts_the_real_client(tmp_path: Path, queue_url: str) -> None:
    """Failed logins from 127.0.0.9 lock 127.0.0.9 out (454), not everyone behind the
    load balancer: 127.0.0.10 still logs in."""
    ca = trustme.CA()
    cert = ca.issue_cert("node.test", "127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(cert_path)
    cert.private_key_pem.write_to_path(key_path)
    users = tmp_path / "users"
    users.write_text("alice:wonderland\n")
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.check_hostname = False
    extra = ["--tls-cert", str(cert_path), "--tls-key", str(key_path), "--auth-file", str(users)]

    def session(source: str, password: str, tries: int) -> list[int]:
        """AUTH ``tries`` times in one session (fewer if the server ends it)."""
        codes: list[int] = []
        s = smtplib.SMTP("127.0.0.1", nodes.port, timeout=30, source_address=(source, 0))
        try:
            s.starttls(context=context)
            s.ehlo("client.test")
            for _ in range(tries):
                codes.append(s.docmd("AUTH", _plain("alice", password))[0])
                if codes[-1] != 535:
                    break
        except smtplib.SMTPServerDisconnected:
            pass  # the server ends a session after a few failures (421)
        finally:
            s.close()
        return codes

    with counting_hop() as (_, hop_port):
        nodes = Nodes(tmp_path, queue_url, 1, hop_port, extra=extra)
        try:
            nodes.start()
            codes: list[int] = []
            for _ in range(10):  # sessions of a few guesses each, until locked out
                codes += session("127.0.0.9", "guess", 3)
                if 454 in codes:
                    break
            assert 454 in codes and codes.count(535) >= 3, codes
            assert session("127.0.0.9", "wonderland", 1) == [454]  # locked out
            assert session("127.0.0.10", "wonderland", 1) == [235]  # others are not
        finally:
            nodes.stop()
