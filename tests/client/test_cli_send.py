"""``ferrosmtp send``: files, mboxes and Maildirs, exit codes and the summary."""

from __future__ import annotations

import argparse
import mailbox
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from ferrosmtp import cli_send
from tests.peers import RecordingHandler, SmtpSink, aiosmtpd_recorder, free_port


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ferrosmtp")
    cli_send.add_parser(parser.add_subparsers())
    return parser.parse_args(["send", *argv])


def message(n: int, *, bcc: bool = False, to: str | None = "rcpt@example.org") -> EmailMessage:
    m = EmailMessage()
    m["From"] = f"Sender {n} <sender{n}@example.org>"
    if to:
        m["To"] = to
    if bcc:
        m["Bcc"] = "hidden@example.org"
    m["Subject"] = f"message {n}"
    m.set_content(f"body {n}\n.leading dot\n")
    return m


@pytest.fixture
def recorder() -> Iterator[tuple[Any, RecordingHandler]]:
    with aiosmtpd_recorder() as pair:
        yield pair


def test_mbox_to_aiosmtpd(tmp_path: Path, recorder: tuple[Any, RecordingHandler]) -> None:
    controller, handler = recorder
    box = mailbox.mbox(tmp_path / "in.mbox")
    for n in range(3):
        box.add(message(n, bcc=(n == 1)))
    box.close()
    code = cli_send.run(parse(str(tmp_path / "in.mbox"), "--port", str(controller.port), "-q"))
    assert code == 0
    got = handler.wait(3)
    assert [m.mail_from for m in got] == [f"sender{n}@example.org" for n in range(3)]
    assert got[1].rcpt_tos == ("rcpt@example.org", "hidden@example.org")
    assert b"hidden@example.org" not in got[1].content  # Bcc never transmitted
    assert b"\r\n.leading dot\r\n" in got[0].content


def test_maildir_to_smtp_sink_over_a_pool(tmp_path: Path, smtp_sink: SmtpSink) -> None:
    box = mailbox.Maildir(tmp_path / "Maildir")
    for n in range(20):
        box.add(message(n))
    code = cli_send.run(
        parse(str(tmp_path / "Maildir"), "--port", str(smtp_sink.port), "--pool", "4", "-q")
    )
    assert code == 0
    assert len(smtp_sink.wait_messages(20)) == 20


def test_files_with_envelope_from_the_command_line(
    tmp_path: Path, recorder: tuple[Any, RecordingHandler], capsys: pytest.CaptureFixture[str]
) -> None:
    controller, handler = recorder
    paths = []
    for n in range(2):
        path = tmp_path / f"{n}.eml"
        path.write_bytes(message(n, to=None).as_bytes())
        paths.append(str(path))
    code = cli_send.run(
        parse(
            *paths,
            "--port",
            str(controller.port),
            "--from",
            "bounce@example.org",
            "--to",
            "x@example.org",
            "--to",
            "y@example.org",
        )
    )
    assert code == 0
    got = handler.wait(2)
    assert {m.mail_from for m in got} == {"bounce@example.org"}
    assert {m.rcpt_tos for m in got} == {("x@example.org", "y@example.org")}
    assert "2 sent, 0 refused, 0 failed" in capsys.readouterr().err


def test_refused_and_failed_messages_exit_1(
    tmp_path: Path, smtp_sink_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = smtp_sink_factory(reject=["RCPT"])
    good = tmp_path / "good.eml"
    good.write_bytes(message(1).as_bytes())
    no_rcpt = tmp_path / "none.eml"
    no_rcpt.write_bytes(message(2, to=None).as_bytes())
    code = cli_send.run(parse(str(good), str(no_rcpt), "--port", str(sink.port)))
    assert code == 1
    err = capsys.readouterr().err
    assert "0 sent, 1 refused, 1 failed" in err
    assert "refused: " in err and "rcpt@example.org: 500" in err
    assert "no recipients: give --to" in err


def test_unreachable_server_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(message(1).as_bytes())
    assert cli_send.run(parse(str(path), "--port", str(free_port()), "--timeout", "5")) == 3
    assert "stopped: SMTPConnectError" in capsys.readouterr().err


def test_authentication_failure_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from aiosmtpd.smtp import AuthResult

    def refuse(*args: Any) -> AuthResult:
        return AuthResult(success=False, handled=False)

    path = tmp_path / "m.eml"
    path.write_bytes(message(1).as_bytes())
    secret = tmp_path / "password"
    secret.write_text("wrong\n")
    with aiosmtpd_recorder(authenticator=refuse, auth_require_tls=False) as (controller, handler):
        code = cli_send.run(
            parse(
                str(path),
                "--port",
                str(controller.port),
                "--user",
                "u",
                "--timeout",
                "5",
                "--password-file",
                str(secret),
            )
        )
        assert code == 3 and not handler.messages
    assert "SMTPAuthenticationError: 535" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["/nonexistent/message.eml"],
        ["{tmp}", "--user", "u"],  # a directory that is not a Maildir; --user without password
        ["{file}", "--user", "u"],
        ["{file}", "--password-file", "{file}"],
    ],
)
def test_usage_errors_exit_2(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(message(1).as_bytes())
    args = [a.format(tmp=tmp_path, file=path) for a in argv]
    assert cli_send.run(parse(*args, "--port", str(free_port()))) == 2
    assert capsys.readouterr().err.startswith("ferrosmtp send: ")


def test_tls_options_are_exclusive() -> None:
    with pytest.raises(SystemExit) as info:
        parse("m.eml", "--tls", "--starttls")
    assert info.value.code == 2


def test_strip_headers_removes_folded_bcc_only() -> None:
    raw = (
        b"From: a@example.org\r\nBcc: x@example.org,\r\n y@example.org\r\n"
        b"To: b@example.org\r\nSubject: Bcc: not a header\r\n\r\nBcc: body line\r\n"
    )
    assert cli_send.strip_headers(raw, ("Bcc",)) == (
        b"From: a@example.org\r\nTo: b@example.org\r\nSubject: Bcc: not a header\r\n\r\n"
        b"Bcc: body line\r\n"
    )


def test_wired_into_the_ferrosmtp_command(
    tmp_path: Path, recorder: tuple[Any, RecordingHandler]
) -> None:
    from ferrosmtp import cli

    controller, handler = recorder
    path = tmp_path / "m.eml"
    path.write_bytes(message(7).as_bytes())
    assert cli.main(["send", str(path), "--port", str(controller.port), "-q"]) == 0
    assert handler.wait(1)[0].mail_from == "sender7@example.org"
