"""The pytest plugin (``ferrosmtp.testing``), used the way an application's test suite
uses it: through its entry point, in a pytest run of its own (pytester)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


def run_suite(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_app=source)
    # A subprocess: the plugin must come from the installed entry point, nothing else.
    return pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", *args)


def test_plugin_is_registered_by_its_entry_point(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*fixtures defined from ferrosmtp.testing*", "smtp_server*"])
    assert "smtp_server_factory" in result.stdout.str()
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.smtp_server(tls=None*"])


def test_records_envelopes_and_parsed_messages(pytester: pytest.Pytester) -> None:
    result = run_suite(
        pytester,
        """
        import smtplib
        from email.message import EmailMessage

        def test_sent(smtp_server):
            message = EmailMessage()
            message["From"], message["To"] = "app@example.org", "Ann <ann@example.org>"
            message["Subject"] = "Welcome, Zoë"
            message.set_content("Hello Ann.")
            with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
                client.send_message(message, to_addrs=["ann@example.org", "cc@example.org"])
                client.sendmail("<>", ["bounce@example.org"], b"Subject: bounce\\r\\n\\r\\nx\\r\\n")
            mail = smtp_server.assert_received(to="ANN@example.org", subject="Welcome, Zoë")
            assert mail.mail_from == "app@example.org"
            assert mail.rcpt_tos == ("ann@example.org", "cc@example.org")
            assert mail.message.get_content().rstrip() == "Hello Ann."
            assert mail.message["To"].addresses[0].display_name == "Ann"
            assert not mail.tls and mail.login is None
            assert smtp_server.received(sender="") [0].subject == "bounce"
            assert len(smtp_server.messages) == 2
            smtp_server.clear()
            smtp_server.assert_nothing_received()

        def test_each_test_gets_a_fresh_server(smtp_server):
            smtp_server.assert_nothing_received()
        """,
    )
    result.assert_outcomes(passed=2)


def test_failed_assertion_lists_what_arrived(pytester: pytest.Pytester) -> None:
    result = run_suite(
        pytester,
        """
        import smtplib

        def test_wrong_recipient(smtp_server):
            with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
                client.sendmail("a@example.org", ["b@example.org"], b"Subject: hi\\r\\n\\r\\n")
            smtp_server.assert_received(to="c@example.org")
        """,
    )
    result.assert_outcomes(failed=1)
    assert (
        "AssertionError: expected 1 message(s) matching to='c@example.org', found 0; "
        "received: from 'a@example.org' to ['b@example.org'] subject 'hi'"
    ) in result.stdout.str()


def test_starttls_and_auth_switched_on_by_the_marker(pytester: pytest.Pytester) -> None:
    result = run_suite(
        pytester,
        """
        import smtplib
        import pytest

        @pytest.mark.smtp_server(tls="starttls", users={"alice": "s3cret"}, auth_required=True)
        def test_tls_and_auth(smtp_server):
            with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
                client.ehlo()
                assert "starttls" in client.esmtp_features
                assert "auth" not in client.esmtp_features  # not before TLS
                with pytest.raises(smtplib.SMTPSenderRefused):  # AUTH required
                    client.sendmail("a@example.org", ["b@example.org"], b"x\\r\\n")
            with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
                client.starttls(context=smtp_server.client_context())
                with pytest.raises(smtplib.SMTPAuthenticationError):
                    client.login("alice", "wrong")
                client.login("alice", "s3cret")
                client.sendmail("a@example.org", ["b@example.org"], b"Subject: s\\r\\n\\r\\n")
            mail = smtp_server.assert_received(subject="s")
            assert mail.tls and mail.login == "alice"
            assert open(smtp_server.cafile).read().startswith("-----BEGIN CERTIFICATE-----")
        """,
    )
    result.assert_outcomes(passed=1)


def test_implicit_tls_and_async_clients(pytester: pytest.Pytester) -> None:
    result = run_suite(
        pytester,
        """
        import asyncio
        import pytest
        import ferrosmtp

        @pytest.mark.smtp_server(tls="implicit")
        def test_implicit(smtp_server):
            async def main():
                client = ferrosmtp.Client(
                    smtp_server.host, smtp_server.port, use_tls=True,
                    tls_context=smtp_server.client_context(),
                )
                async with client:
                    await client.sendmail("a@example.org", ["b@x.org"], b"Subject: i\\r\\n\\r\\n")
            asyncio.run(main())
            assert smtp_server.assert_received(subject="i").tls
        """,
    )
    result.assert_outcomes(passed=1)


def test_refusals_and_waiting_for_background_senders(pytester: pytest.Pytester) -> None:
    result = run_suite(
        pytester,
        """
        import smtplib
        import threading
        import pytest

        def test_refused(smtp_server):
            smtp_server.refuse_recipients["gone@example.org"] = "550 5.1.1 No such user"
            with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
                refused = client.sendmail(
                    "a@example.org", ["gone@example.org", "ok@example.org"], b"x\\r\\n"
                )
                assert refused == {"gone@example.org": (550, b"5.1.1 No such user")}
                smtp_server.refuse_data = "452 4.3.1 Try again later"
                with pytest.raises(smtplib.SMTPDataError):
                    client.sendmail("a@example.org", ["ok@example.org"], b"y\\r\\n")
            assert smtp_server.assert_received().rcpt_tos == ("ok@example.org",)

        def test_background(smtp_server):
            def send():
                with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
                    for n in range(3):
                        client.sendmail("a@example.org", ["b@example.org"], b"x\\r\\n")
            threading.Thread(target=send).start()
            assert len(smtp_server.wait_for(3, timeout=10)) == 3
            with pytest.raises(AssertionError, match="expected 4 message"):
                smtp_server.wait_for(4, timeout=0.2)

        def test_factory_and_server_options(smtp_server_factory):
            small = smtp_server_factory(data_size_limit=100)
            other = smtp_server_factory()
            assert small.port != other.port
            with smtplib.SMTP(small.host, small.port) as client:
                client.ehlo()
                assert client.esmtp_features["size"] == "100"
        """,
    )
    result.assert_outcomes(passed=3)


def test_tests_with_the_same_options_share_one_server_reset_for_each(
    pytester: pytest.Pytester,
) -> None:
    result = run_suite(
        pytester,
        """
        import smtplib
        import pytest

        PORTS = []
        LEFT_OPEN = []

        def test_first(smtp_server):
            PORTS.append(smtp_server.port)
            smtp_server.refuse_data = "554 5.7.1 No"
            smtp_server.users["eve"] = "x"
            client = smtplib.SMTP(smtp_server.host, smtp_server.port)
            client.ehlo()
            client.mail("late@example.org")
            client.rcpt("b@example.org")
            LEFT_OPEN.append(client)  # its DATA comes during the next test

        def test_second(smtp_server):
            assert smtp_server.port == PORTS[0]
            assert smtp_server.refuse_data is None and smtp_server.users == {}
            client = LEFT_OPEN.pop()
            assert client.data(b"Subject: late\\r\\n\\r\\nx\\r\\n")[0] == 250
            client.quit()
            smtp_server.assert_nothing_received()  # begun in test_first: not recorded
            with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
                client.sendmail("a@example.org", ["b@example.org"], b"Subject: now\\r\\n\\r\\n")
            assert [m.subject for m in smtp_server.messages] == ["now"]

        @pytest.mark.smtp_server(data_size_limit=1000)
        def test_other_options_other_server(smtp_server):
            assert smtp_server.port != PORTS[0]
        """,
    )
    result.assert_outcomes(passed=3)


def test_bad_options_are_clear_errors(pytester: pytest.Pytester) -> None:
    result = run_suite(
        pytester,
        """
        import pytest

        @pytest.mark.smtp_server(tls="yes")
        def test_bad_tls(smtp_server):
            pass

        @pytest.mark.smtp_server(auth_required=True)
        def test_auth_without_users(smtp_server):
            pass
        """,
    )
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ValueError: tls must be None, 'starttls' or 'implicit', not 'yes'*",
            "*ValueError: auth_required needs users=*",
        ],
        consecutive=False,
    )


def test_plugin_costs_nothing_until_used(pytester: pytest.Pytester) -> None:
    """A suite that never asks for the fixture does not import the server (nor the codec,
    so a bad FERROSMTP_BACKEND cannot break an unrelated test run)."""
    result = run_suite(
        pytester,
        """
        import sys

        def test_untouched():
            assert "ferrosmtp.testing" in sys.modules
            assert "ferrosmtp.server" not in sys.modules
            assert "ferrosmtp.codec" not in sys.modules
        """,
    )
    result.assert_outcomes(passed=1)
