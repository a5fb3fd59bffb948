"""ferrosmtp.errors mirrors aiosmtplib's exceptions: names, hierarchy, constructor shapes."""

from __future__ import annotations

import asyncio
import inspect

import aiosmtplib
import aiosmtplib.errors
import pytest

from ferrosmtp import errors
from ferrosmtp.client import SendResult, SMTPResponse

AIOSMTPLIB_NAMES = list(aiosmtplib.errors.__all__)


@pytest.mark.parametrize("name", AIOSMTPLIB_NAMES)
def test_every_aiosmtplib_exception_exists_with_the_same_bases(name: str) -> None:
    ours = getattr(errors, name)
    theirs = getattr(aiosmtplib.errors, name)
    our_bases = {b.__name__ for b in ours.__mro__}
    their_bases = {b.__name__ for b in theirs.__mro__}
    assert their_bases <= our_bases | {"TimeoutError"}, (name, their_bases - our_bases)
    assert list(inspect.signature(ours.__init__).parameters) == list(
        inspect.signature(theirs.__init__).parameters
    )


def test_shapes() -> None:
    exc = errors.SMTPSenderRefused(550, "nope", "a@example.org")
    assert (exc.code, exc.message, exc.sender, exc.args) == (
        550,
        "nope",
        "a@example.org",
        (550, "nope", "a@example.org"),
    )
    one = errors.SMTPRecipientRefused(550, "no such user", "b@example.org")
    many = errors.SMTPRecipientsRefused([one])
    assert many.recipients == [one] and one.recipient == "b@example.org"
    assert isinstance(errors.SMTPReadTimeoutError("t"), asyncio.TimeoutError)
    assert isinstance(errors.SMTPConnectTimeoutError("t"), errors.SMTPConnectError)
    assert isinstance(errors.SMTPServerDisconnected("x"), ConnectionError)


def test_additions_stay_inside_the_hierarchy() -> None:
    closing = errors.SMTPServiceUnavailable(421, "bye")
    assert isinstance(closing, errors.SMTPResponseException)
    assert isinstance(closing, errors.SMTPServerDisconnected)
    assert (closing.code, closing.message) == (421, "bye")
    assert isinstance(errors.SMTPProtocolError("x"), errors.SMTPServerDisconnected)


def test_response_and_result_shapes() -> None:
    response = SMTPResponse(250, "2.0.0 Ok")
    assert response == aiosmtplib.SMTPResponse(250, "2.0.0 Ok")
    assert str(response) == "250 2.0.0 Ok"
    result = SendResult({}, "queued", {"b@example.org": response})
    refused, message = result
    assert (refused, message) == ({}, "queued")
    assert result == ({}, "queued") and isinstance(result, tuple)
    assert result.delivered == {"b@example.org": response}
