"""Behind HAProxy (send-proxy-v2) the nodes see the real client, not the load balancer:
in the Received header and for --mynetworks. Clients
bind loopback source addresses (127.0.0.2, 127.0.0.9...) to come from elsewhere; HAProxy
itself connects from 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

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
