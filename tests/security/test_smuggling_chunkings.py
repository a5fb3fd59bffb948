"""Checklist B1 under hostile chunkings: every row of the smuggling table, both policies,
split at random points (fixed seeds) and split exactly around every CR, LF and dot.

tests/server/test_smuggling.py sends each payload whole and byte by byte; here the splits
fall where a careless reader would keep state wrong (a CR at the end of one read, the dot
alone in the next). Live: one message or none, never a second transaction, and no reply
the client did not ask for. Sans-IO (both codec backends): the exact split is guaranteed
there (TCP may merge segments), so every single split point is checked as well.
Also hannob/smtpsmug's sequences, including its "pipelining" case.
"""

from __future__ import annotations

import itertools
import random
import socket
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from ferrosmtp.protocol import events as ev
from ferrosmtp.protocol.events import CLOSED, NEED_DATA
from ferrosmtp.protocol.server import ServerConfig, ServerConnection
from tests.conftest import load_backend
from tests.server.support import Raw, running
from tests.server.test_smuggling import SMUGGLED, TABLE

SMUGGLER = "s@x.example"
SPECIAL = frozenset(b"\r\n.")
POLICIES = ["reject", "normalize"]
ENDING_IDS = [repr(e)[2:-1] for e in TABLE]


class Store:
    """Messages by sender; each live test uses a sender of its own on a shared server."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, envelope.content))
        return "250 OK"

    def of(self, sender: str) -> list[bytes]:
        return [content for who, content in self.messages if who == sender]


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, tuple[int, Store]]]:
    stores = {policy: Store() for policy in POLICIES}
    with (
        running(stores["reject"], bare_newline="reject") as reject,
        running(stores["normalize"], bare_newline="normalize") as normalize,
    ):
        yield {
            "reject": (reject.port, stores["reject"]),
            "normalize": (normalize.port, stores["normalize"]),
        }


def isolate_specials(payload: bytes) -> list[bytes]:
    """Every CR, LF and dot in a segment of its own."""
    out: list[bytes] = []
    run = b""
    for byte in payload:
        if byte in SPECIAL:
            if run:
                out.append(run)
                run = b""
            out.append(bytes([byte]))
        else:
            run += bytes([byte])
    if run:
        out.append(run)
    return out


def random_split(payload: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(payload)), rng.randint(1, 12)))
    return [payload[a:b] for a, b in itertools.pairwise([0, *cuts, len(payload)])]


def chunkings(payload: bytes) -> dict[str, list[bytes]]:
    out = {"isolated": isolate_specials(payload)}
    for seed in range(3):
        out[f"random{seed}"] = random_split(payload, seed)
    return out


# -- live -----------------------------------------------------------------------------------


def send_chunks(raw: Raw, chunks: list[bytes]) -> None:
    raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for chunk in chunks:
        raw.send(chunk)
        time.sleep(0.003)  # usually one read per segment; merged ones are fine too


@pytest.mark.parametrize("chunking", ["isolated", "random0", "random1", "random2"])
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("ending", list(TABLE), ids=ENDING_IDS)
def test_smuggling_table_live_chunkings(
    servers: dict[str, tuple[int, Store]], ending: bytes, policy: str, chunking: str
) -> None:
    code, content = TABLE[ending][policy == "normalize"]
    port, store = servers[policy]
    sender = f"a-{policy}-{chunking}-{ENDING_IDS.index(repr(ending)[2:-1])}@trusted.example"
    payload = b"A" + ending + SMUGGLED
    with Raw(port) as raw:
        raw.reply()
        raw.send(b"EHLO client.example\r\n")
        raw.reply()
        raw.send(f"MAIL FROM:<{sender}>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n".encode())
        assert [r[:3] for r in raw.replies(3)] == [b"250", b"250", b"354"]
        send_chunks(raw, chunkings(payload)[chunking])
        reply = raw.reply()
        assert int(reply[:3]) == code, reply
        raw.send(b"QUIT\r\n")
        assert raw.read_to_eof() == b"221 2.0.0 Bye\r\n"  # nothing for a smuggled command
    assert store.of(sender) == ([] if content is None else [content])
    assert store.of(SMUGGLER) == []


# -- sans-IO: every split point, both codec backends -----------------------------------------


def drive(codec: ModuleType, policy: str, chunks: list[bytes]) -> tuple[bytes, list[Any]]:
    """Run a session through ServerConnection: EHLO, MAIL, RCPT, DATA, then ``chunks``.
    Returns every byte the server would send and the messages it would deliver."""
    conn = ServerConnection(ServerConfig(hostname="mx.test", bare_newline=policy), codec=codec)
    conn.start()
    delivered: list[tuple[str, bytes]] = []
    body: list[bytes] = []
    sender = ""
    feeds = [b"EHLO c.example\r\n", b"MAIL FROM:<a@t.example>\r\nRCPT TO:<b@n.example>\r\nDATA\r\n"]
    for data in feeds + chunks:
        conn.receive_data(data)
        for _ in range(10_000):  # bounded: a session of this size has far fewer events
            event = conn.next_event()
            if event is NEED_DATA or event is CLOSED:
                break
            if isinstance(event, ev.MailFrom):
                sender = event.address
            elif isinstance(event, ev.Content):
                body.append(event.data)
            elif isinstance(event, ev.MessageEnd):
                delivered.append((sender, b"".join(body)))
                body = []
            elif isinstance(event, ev.MessageAborted):
                body = []
            if conn.awaiting is not None:
                conn.respond_default()
    return conn.data_to_send(), delivered


def split_points(payload: bytes) -> Iterator[list[bytes]]:
    for i in range(1, len(payload)):
        yield [payload[:i], payload[i:]]
    for i, byte in enumerate(payload):
        if byte in SPECIAL:
            yield [part for part in (payload[:i], payload[i : i + 1], payload[i + 1 :]) if part]


@pytest.mark.parametrize("backend", ["rust", "pure"])
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("ending", list(TABLE), ids=ENDING_IDS)
def test_smuggling_table_every_split_sans_io(ending: bytes, policy: str, backend: str) -> None:
    codec = load_backend(backend)
    code, content = TABLE[ending][policy == "normalize"]
    payload = b"A" + ending + SMUGGLED
    whole_out, whole_delivered = drive(codec, policy, [payload])
    replies = whole_out.split(b"\r\n")
    assert replies[-2].startswith(str(code).encode()), whole_out  # the last reply: DATA's
    assert whole_delivered == ([] if content is None else [("a@t.example", content)])
    chunkings_ = [
        *split_points(payload),
        *chunkings(payload).values(),
        [bytes([b]) for b in payload],
    ]
    for chunks in chunkings_:
        assert drive(codec, policy, chunks) == (whole_out, whole_delivered), chunks


# -- hannob/smtpsmug sequences ---------------------------------------------------------------

SMTPSMUG = {
    "lflf": b"\n.\n",
    "crcr": b"\r.\r",
    "crlf": b"\r.\n",
    "lfcr": b"\n.\r",
    "lfcrlf": b"\n.\r\n",
    "crlflf": b"\r\n.\n",
    "crcrlf": b"\r.\r\n",
    "crlfcr": b"\r\n.\r",
    "nullbefore": b"\r\n\x00.\r\n",
    "nullafter": b"\r\n.\x00\r\n",  # smtpsmug's own two null tests are the same string
}


def smtpsmug_header(raw: Raw, sender: str) -> None:
    """What smtpsmug's send_mail_header() sends: one line per segment."""
    raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    raw.reply()
    raw.send(b"EHLO example.org\r\n")
    raw.reply()
    raw.send(f"MAIL FROM:<{sender}>\r\n".encode())
    assert raw.reply().startswith(b"250")
    raw.send(b"RCPT TO:<bob@example.org>\r\n")
    assert raw.reply().startswith(b"250")
    raw.send(b"DATA\r\n")
    assert raw.reply().startswith(b"354")
    for line in (f"From: {sender}", "To: bob@example.org", "Subject: Hello World", ""):
        raw.send(line.encode() + b"\r\n")


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("test", list(SMTPSMUG))
def test_smtpsmug_bad_endings(
    servers: dict[str, tuple[int, Store]], test: str, policy: str
) -> None:
    """smtpsmug sends a bad ending and waits: no reply may come (the message is not over),
    then the real end decides: 550 under reject (250 for the NUL rows, which have no bare
    CR/LF), 250 under normalize, and the smuggled sender is never seen."""
    port, store = servers[policy]
    sender = f"smug-{test}-{policy}@example.org"
    with Raw(port) as raw:
        smtpsmug_header(raw, sender)
        raw.send(f"This is a test mail with an {test} ending.\r\n".encode())
        raw.send(SMTPSMUG[test] + SMUGGLED.replace(b"\r\n.\r\n", b"\r\n"))
        with pytest.raises(TimeoutError):
            raw.reply(timeout=0.5)  # still in DATA: the bad ending ended nothing
        raw.send(b"This is after a bad mail ending.\r\n.\r\n")
        reply = raw.reply()
        expected = 550 if policy == "reject" and not test.startswith("null") else 250
        assert int(reply[:3]) == expected, reply
        raw.send(b"QUIT\r\n")
        assert raw.read_to_eof() == b"221 2.0.0 Bye\r\n"
    assert len(store.of(sender)) == (1 if expected == 250 else 0)
    assert store.of(SMUGGLER) == []


def test_smtpsmug_pipelining_in_one_segment(servers: dict[str, tuple[int, Store]]) -> None:
    """smtpsmug -c pipelining, its bytes in one write: the end of mail 1, then MAIL, RCPT,
    DATA and mail 2's body before any 354. DATA with bytes behind it breaks RFC 2920 §3.1
    (message data before the 354, RFC 5321 §3.3): 554 and close; mail 2 never exists."""
    port, store = servers["reject"]
    with Raw(port) as raw:
        smtpsmug_header(raw, "pipe1@example.org")
        raw.send(
            b"This is mail 1/2 to test pipelining\r\n.\r\n"
            b"MAIL FROM:<s@x.example>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"
            b"From: s@x.example\r\nTo: bob@example.org\r\nSubject: Hello World 2\r\n\r\n"
            b"This is mail 2/2 to test pipelining\r\n.\r\n"
        )
        rest = raw.read_to_eof()
    assert rest == (
        b"250 2.0.0 OK\r\n250 2.1.0 OK\r\n250 2.1.5 OK\r\n"
        b"554 5.5.0 Error: SMTP protocol synchronization\r\n"
    )
    assert len(store.of("pipe1@example.org")) == 1
    assert store.of(SMUGGLER) == []
