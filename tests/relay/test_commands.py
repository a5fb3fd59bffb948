"""``ferrosmtp queue list|show|retry|delete`` while the relay runs, a corrupt body file
reported and survived, a full spool answered with 452 4.3.1, the metrics endpoint, and
the command line's errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.peers import free_port
from tests.relay.support import RelayProcess, message, next_hop, queue_cli, send, wait_until
from tests.relay.test_delivery import listed
from tests.relay.test_queue import small_disk  # noqa: F401 (fixture)


def test_queue_commands_while_the_relay_runs(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with next_hop() as (hop, port):
        hop.rcpt_replies = {f"u{i}@y.test": "451 4.2.0 not yet" for i in range(3)}
        with RelayProcess(
            spool,
            "--relayhost",
            f"127.0.0.1:{port}",
            "--min-backoff",
            "3600",
            "--max-backoff",
            "3600",
        ) as relay:
            for i in range(3):
                assert send(relay.port, "a@x.test", [f"u{i}@y.test"], message(f"m{i}"))[0] == 250
            wait_until(
                lambda: len(listed(spool)) == 3 and all(e["attempts"] == 1 for e in listed(spool)),
                10,
                "3 deferrals",
            )
            entries = listed(spool)
            first = entries[0]
            assert set(first) >= {
                "id",
                "sender",
                "recipients",
                "size",
                "arrival",
                "attempts",
                "next_attempt",
                "last_error",
            }
            assert first["sender"] == "a@x.test" and first["recipients"] == ["u0@y.test"]
            assert first["next_attempt"] > time.time() + 3000  # type: ignore[operator]
            assert "451 4.2.0 not yet" in str(first["last_error"])
            text = queue_cli(spool, "list").stdout
            assert str(first["id"]) in text and "-- 0 Kbytes in 3 Requests." in text
            shown = queue_cli(spool, "show", str(first["id"]))
            assert shown.returncode == 0 and '"attempts": 1' in shown.stdout
            assert "Subject: m0" in shown.stdout
            # delete one, retry one: the running relay delivers it at once.
            assert queue_cli(spool, "delete", str(entries[1]["id"])).stdout.strip() == (
                "1 message(s) deleted"
            )
            hop.rcpt_replies.clear()
            assert queue_cli(spool, "retry", str(first["id"])).returncode == 0
            (got,) = hop.wait(1)
            assert got.rcpt_tos == ["u0@y.test"]
            wait_until(
                lambda: [e["id"] for e in listed(spool)] == [entries[2]["id"]],
                10,
                "one message left",
            )
            assert queue_cli(spool, "retry", "--all").stdout.strip() == "1 message(s) due now"
            hop.wait(2)
            wait_until(lambda: listed(spool) == [], 10, "an empty queue")
            missing = queue_cli(spool, "show", "NOSUCHID")
            assert missing.returncode == 1 and "no message NOSUCHID" in missing.stderr
            del relay


def test_a_missing_body_file_is_listed_and_never_crashes_the_relay(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with next_hop() as (hop, port):
        hop.data_replies = ["451 4.3.0 later"]
        with RelayProcess(
            spool, "--relayhost", f"127.0.0.1:{port}", "--min-backoff", "1", "--max-backoff", "1"
        ) as relay:
            big = message("big", body="x" * 200_000 + "\r\n")  # over the inline limit: a file
            code, reply, _ = send(relay.port, "a@x.test", ["b@y.test"], big)
            assert code == 250
            queue_id = reply.rsplit(" ", 1)[1]
            (spool / "bodies" / queue_id).unlink()  # deferred once; now the file is gone
            wait_until(lambda: listed(spool) and listed(spool)[0]["corrupt"], 10, "corrupt")
            (entry,) = listed(spool)
            assert entry["corrupt"] == "body file missing" or "unreadable" in str(entry["corrupt"])
            assert "corrupt" in queue_cli(spool, "list").stdout
            # The relay carries on with other mail.
            assert send(relay.port, "a@x.test", ["c@y.test"], message("after"))[0] == 250
            wait_until(
                lambda: any(m.rcpt_tos == ["c@y.test"] for m in hop.messages),
                10,
                "the next message",
            )
            assert relay.proc is not None and relay.proc.poll() is None
            assert queue_cli(spool, "delete", queue_id).returncode == 0


def test_a_full_spool_answers_452_and_keeps_nothing(tmp_path: Path, small_disk: Path) -> None:  # noqa: F811
    spool = small_disk / "spool"
    with next_hop() as (hop, port):
        hop.data_replies = ["451 4.3.0 keep it queued"] * 100
        with RelayProcess(
            spool, "--relayhost", f"127.0.0.1:{port}", "--min-backoff", "3600"
        ) as relay:
            assert send(relay.port, "a@x.test", ["b@y.test"], message("small"))[0] == 250
            huge = message("huge", body=("y" * 998 + "\r\n") * 6000)  # 6 MB on a 4 MiB disk
            code, reply, _ = send(relay.port, "a@x.test", ["b@y.test"], huge)
            assert (code, reply.split(" ")[0]) == (452, "4.3.1")
            assert [p.name for p in (spool / "bodies").iterdir()] == []
            assert len(listed(spool)) == 1
            # Space again: mail flows again.
            assert send(relay.port, "a@x.test", ["b@y.test"], message("again"))[0] == 250
            del relay


def test_metrics_endpoint(tmp_path: Path) -> None:
    metrics_port = free_port()
    with next_hop() as (hop, port):
        hop.rcpt_replies = {"bad@y.test": "550 5.1.1 unknown"}
        with RelayProcess(
            tmp_path / "spool",
            "--relayhost",
            f"127.0.0.1:{port}",
            "--metrics",
            f"127.0.0.1:{metrics_port}",
        ) as relay:
            send(relay.port, "a@x.test", ["ok@y.test", "bad@y.test"], message("metrics"))
            hop.wait(2)  # the message and the bounce

            def scrape() -> str:
                url = f"http://127.0.0.1:{metrics_port}/metrics"
                with urllib.request.urlopen(url, timeout=5) as response:
                    return str(response.read().decode())

            wait_until(lambda: "ferrosmtp_relay_delivered_total 2.0" in scrape(), 10, "counts")
            text = scrape()
            assert "ferrosmtp_relay_bounced_total 1.0" in text
            assert "ferrosmtp_relay_delivery_seconds_bucket" in text
            wait_until(
                lambda: 'ferrosmtp_relay_queue_messages{state="deferred"}' in scrape(),
                15,
                "the queue depth gauge",
            )


@pytest.mark.usefixtures("relay_backend")
def test_queue_delete_of_a_message_in_delivery_takes_effect_when_it_ends(
    tmp_path: Path,
) -> None:
    """As Postfix's postsuper -d of an active message: the delivery in flight ends as it
    ends (here the next hop defers it), then the message is gone: not listed, not tried
    again, no notice to its sender, and the relay carries on."""
    spool = tmp_path / "spool"
    with next_hop() as (hop, port):
        hop.hang = 3.0
        hop.data_replies = ["451 4.3.0 come back later"]
        with RelayProcess(
            spool, "--relayhost", f"127.0.0.1:{port}", "--min-backoff", "1", "--max-backoff", "1"
        ) as relay:
            code, reply, _ = send(
                relay.port,
                "a@x.test",
                ["b@y.test"],
                message("held"),
                mail_options=["RET=HDRS"],
                rcpt_options=["NOTIFY=FAILURE,DELAY"],
            )
            assert code == 250, reply
            queue_id = reply.rsplit(" ", 1)[1]
            wait_until(lambda: hop.busy == 1, 10, "the delivery under way")
            deleted = queue_cli(spool, "delete", queue_id)
            assert deleted.stdout.strip() == "1 message(s) deleted", deleted.stderr
            wait_until(
                lambda: "deleted (queue delete) during its delivery" in relay.log(),
                15,
                "the end of the delivery",
            )
            assert listed(spool) == []
            time.sleep(2.5)  # past --min-backoff: it would have been tried again by now
            assert hop.attempts == 1 and hop.messages == []  # no retry, no delay notice
            assert listed(spool) == []
            hop.hang = 0.0  # and the relay carries on
            assert send(relay.port, "a@x.test", ["c@y.test"], message("after"))[0] == 250
            (got,) = hop.wait(1)
            assert got.rcpt_tos == ["c@y.test"]
            assert "Traceback" not in relay.log()


def _relay_cli(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferrosmtp", "relay", "--spool", str(tmp_path / "s"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tls-cert", "x.pem"], "cannot read x.pem"),
        (
            ["--tls-cert", "/missing", "--tls-key", "/missing"],
            "--tls-cert: cannot read /missing: No such file or directory",
        ),
        (["--tls-cert", "{here}/cert.pem"], "--tls-cert and --tls-key go together"),
        (
            ["--tls-cert", "{here}/cert.pem", "--tls-key", "{here}/cert.pem"],
            "--tls-cert: {here}/cert.pem holds no PEM certificate",
        ),
        (["--auth-file", "/missing"], "--auth-file: cannot read /missing"),
        (["--auth-file", "{here}/cert.pem", "--relayhost", "127.0.0.1:9"], "--auth-file"),
        (
            ["--mynetworks", "127.0.0.0/8,not-a-network"],
            "--mynetworks: 'not-a-network' is not an IP network",
        ),
        (["--min-backoff", "10", "--max-backoff", "5"], "--min-backoff is above --max-backoff"),
        (["--min-backoff", "-1"], "--min-backoff: -1 is not a number of seconds"),
        (["--workers", "0"], "--workers: 0 is less than 1"),
        (["--listen", "127.0.0.1:99999"], "--listen: 99999 is not a port number"),
        (["--relayhost", "smarthost"], "--relayhost: expected HOST:PORT"),
        (["--relayhost", "smarthost:0"], "--relayhost: 0 is not a port number"),
        (["--mx-port", "x"], "--mx-port: 'x' is not a port number"),
        (["--proxy-protocol", "0"], "--proxy-protocol: 0 is not a positive number"),
        (["--lease", "0.5"], "--lease needs at least 1 second"),
        (["--queue-url", "mysql://x"], "--queue-url: expected postgresql://"),
        (["--log-format", "xml"], "--log-format: invalid choice"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    args = [a.replace("{here}", str(tmp_path)) for a in args]
    result = _relay_cli(tmp_path, *args)
    assert result.returncode == 2, result.stderr
    assert message.replace("{here}", str(tmp_path)) in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FERROSMTP_MYNETWORKS": "10.0.0.0/8 bad"}, "FERROSMTP_MYNETWORKS: 'bad' is not an IP"),
        (
            {"FERROSMTP_TLS_CERT": "/missing", "FERROSMTP_TLS_KEY": "/missing"},
            "FERROSMTP_TLS_CERT: cannot read /missing",
        ),
        ({"FERROSMTP_WORKERS": "many"}, "FERROSMTP_WORKERS: 'many' is not a whole number"),
        ({"FERROSMTP_RELAYHOST": "host"}, "FERROSMTP_RELAYHOST: expected HOST:PORT"),
        ({"FERROSMTP_QUIET": "maybe"}, "FERROSMTP_QUIET='maybe': use 1/true/yes"),
    ],
)
def test_bad_environment_names_the_variable_and_exits_2(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    result = _relay_cli(tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_every_relay_option_reads_its_environment_variable(tmp_path: Path) -> None:
    """FERROSMTP_LISTEN, _SPOOL, _RELAYHOST, _MIN_BACKOFF... as a container sets them; the
    command line wins over them."""
    spool = tmp_path / "env-spool"
    port = free_port()
    with next_hop() as (hop, hop_port):
        env = {
            **os.environ,
            "FERROSMTP_LISTEN": f"127.0.0.1:{port}",
            "FERROSMTP_SPOOL": str(spool),
            "FERROSMTP_RELAYHOST": f"127.0.0.1:{hop_port}",
            "FERROSMTP_HOSTNAME": "relay.from-env.test",
            "FERROSMTP_MYNETWORKS": "127.0.0.0/8",
            "FERROSMTP_MIN_BACKOFF": "7",
            "FERROSMTP_MAX_BACKOFF": "3",  # the command line's --max-backoff wins
            "FERROSMTP_QUIET": "0",
        }
        with open(tmp_path / "relay.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ferrosmtp", "relay", "--max-backoff", "60"],
                env=env,
                stdout=log,
                stderr=log,
            )
        try:
            wait_until(lambda: _listening(port), 20, "the relay on FERROSMTP_LISTEN")
            code, reply, _ = send(port, "a@x.test", ["b@y.test"], message("env"))
            assert code == 250, reply
            hop.wait(1)
            assert "by relay.from-env.test" in hop.messages[0].message["Received"]
        finally:
            proc.terminate()
            proc.wait(30)
    assert (spool / "queue.db").exists()
    assert f"relay listening on 127.0.0.1:{port}" in (tmp_path / "relay.log").read_text()


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_a_second_relay_on_the_same_spool_is_refused(tmp_path: Path) -> None:
    with RelayProcess(tmp_path / "spool", "--relayhost", "127.0.0.1:9") as relay:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "ferrosmtp",
                "relay",
                "--spool",
                str(tmp_path / "spool"),
                "--listen",
                f"127.0.0.1:{free_port()}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 3 and "in use by another relay" in result.stderr
        del relay


def test_queue_list_json_is_one_object_a_line(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with RelayProcess(
        spool, "--relayhost", f"127.0.0.1:{free_port()}", "--min-backoff", "3600"
    ) as relay:
        for i in range(3):
            send(relay.port, "a@x.test", ["b@y.test", "c@y.test"], message(f"j{i}"))
        wait_until(lambda: len(listed(spool)) == 3, 10, "3 messages")
        del relay
    out = queue_cli(spool, "list", "--json").stdout.splitlines()
    assert len(out) == 3
    for line in out:
        data = json.loads(line)
        assert data["recipients"] == ["b@y.test", "c@y.test"] and data["size"] > 0
    assert os.path.exists(spool / "queue.db")


def test_workers_share_the_port_and_the_spool(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with next_hop() as (hop, port):
        with RelayProcess(spool, "--relayhost", f"127.0.0.1:{port}", "--workers", "2") as relay:
            for i in range(30):
                assert send(relay.port, "a@x.test", ["b@y.test"], message(f"w{i}"))[0] == 250
            hop.wait(30)
            wait_until(lambda: listed(spool) == [], 10, "an empty queue")
            assert len({m.message["Subject"] for m in hop.messages}) == 30


def test_workers_relay_bodies_of_every_size_intact(tmp_path: Path) -> None:
    """Two workers, 12 clients at once, bodies kept in their row (1 KiB), in a file
    written once they have arrived (100 KiB) and in a file written as they arrive
    (300 KiB): every one reaches the next hop intact, and the spool is left empty (no
    row, no body file)."""
    from concurrent.futures import ThreadPoolExecutor

    spool = tmp_path / "spool"
    sizes = [1 << 10, 100 << 10, 300 << 10] * 4
    sent = {
        f"s{i}": message(f"s{i}", (f"{i:04d}" + "x" * 74 + "\r\n") * (size // 80 + 1))
        for i, size in enumerate(sizes)
    }
    with next_hop() as (hop, port):
        with RelayProcess(spool, "--relayhost", f"127.0.0.1:{port}", "--workers", "2") as relay:
            with ThreadPoolExecutor(len(sent)) as pool:
                replies = list(
                    pool.map(
                        lambda m: send(relay.port, "a@x.test", ["b@y.test"], m)[0], sent.values()
                    )
                )
            assert replies == [250] * len(sent)
            got = hop.wait(len(sent), 60)
            wait_until(lambda: listed(spool) == [], 10, "an empty queue")
            assert list((spool / "bodies").iterdir()) == []
    delivered = {m.message["Subject"]: m.content for m in got}
    assert sorted(delivered) == sorted(sent)
    for subject, content in sent.items():
        assert delivered[subject].endswith(content), subject  # after the Received header


def test_proxy_protocol_clients_are_judged_by_their_real_address(tmp_path: Path) -> None:
    from tests.peers import swaks

    with next_hop() as (hop, port):
        with RelayProcess(
            tmp_path / "spool",
            "--relayhost",
            f"127.0.0.1:{port}",
            "--proxy-protocol",
            "5",
            "--mynetworks",
            "198.51.100.0/24",
        ) as relay:

            def through(source: str) -> str:
                result = swaks(
                    "--from",
                    "a@x.test",
                    "--to",
                    "b@y.test",
                    "--proxy-version",
                    "2",
                    "--proxy-family",
                    "AF_INET",
                    "--proxy-source",
                    source,
                    "--proxy-source-port",
                    "5555",
                    "--proxy-dest",
                    "192.0.2.25",
                    "--proxy-dest-port",
                    "25",
                    port=relay.port,
                )
                return result.stdout

            assert "554 5.7.1 Relay access denied" in through("203.0.113.7")
            assert "queued as" in through("198.51.100.9")
            (got,) = hop.wait(1)
            assert "[198.51.100.9]" in got.message["Received"]
