"""send_email against a real local SMTP server (tests/smtpserver.py, aiosmtpd): no mocks."""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.actions import registry
from relay.actions.email import AUTH_FAILED, SmtpTarget, parse_smtp_url, send_email
from relay.events import new_job
from relay.parsing import build_events
from relay.rules import load_rules_text
from relay.settings import load_settings
from tests.httpsink import closed_port
from tests.skips import skip_or_fail
from tests.smtpserver import SmtpServer, silent_port

TIMEOUT = 2.0  # seconds: every exchange here takes milliseconds when all is well
PASSWORD = "s3cr3t-Pa55w0rd"


@pytest.fixture
def server() -> Iterator[SmtpServer]:
    with SmtpServer() as running:
        yield running


@pytest.fixture
def auth_server() -> Iterator[SmtpServer]:
    with SmtpServer(credentials=("relay", PASSWORD)) as running:
        yield running


def send(target: SmtpTarget, **kwargs: object):
    kwargs.setdefault("mail_from", "Relay <relay@example.com>")
    kwargs.setdefault("to", ["ops@example.com"])
    kwargs.setdefault("cc", [])
    kwargs.setdefault("subject", "SMS failure 7104")
    kwargs.setdefault("body", "The message could not be delivered.")
    kwargs.setdefault("timeout", TIMEOUT)
    return send_email(target, **kwargs)  # type: ignore[arg-type]


# -- parse_smtp_url -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example.com", ("mail.example.com", 25, None, None, "plain")),
        ("smtp://u:p@mail.example.com:2525", ("mail.example.com", 2525, "u", "p", "plain")),
        ("smtp://u:p@mx:587?starttls=1", ("mx", 587, "u", "p", "starttls")),
        ("smtp://mx?starttls=true", ("mx", 25, None, None, "starttls")),
        ("smtp://mx/?starttls=0", ("mx", 25, None, None, "plain")),
        ("smtps://u:p@mx", ("mx", 465, "u", "p", "tls")),
        ("smtps://mx:1465", ("mx", 1465, None, None, "tls")),
        ("smtp://me%40corp.com:p%3Aw%2Fd%40x@mx", ("mx", 25, "me@corp.com", "p:w/d@x", "plain")),
        ("smtp://apikey@mx", ("mx", 25, "apikey", "", "plain")),
        ("smtp://[::1]:25", ("::1", 25, None, None, "plain")),
    ],
)
def test_smtp_urls_parse_into_targets(url: str, expected: tuple) -> None:
    target = parse_smtp_url(url)
    assert (target.host, target.port, target.username, target.password, target.mode) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://u:hunter2@mx", "SMTP URL: scheme must be smtp or smtps, got 'http'"),
        ("mx:25", "SMTP URL: scheme must be smtp or smtps, got 'mx'"),
        ("smtp://u:hunter2@", "SMTP URL: no host"),
        ("smtp://u:hunter2@mx:port", "SMTP URL: port must be a number from 1 to 65535"),
        ("smtp://u:hunter2@mx:99999", "SMTP URL: port must be a number from 1 to 65535"),
        ("smtp://u:hunter2@mx:0", "SMTP URL: port must be a number from 1 to 65535"),
        ("smtp://u:hunter2@mx/inbox", "SMTP URL: must not have a path or fragment"),
        ("smtp://:hunter2@mx", "SMTP URL: a password is given without a user name"),
        ("smtp://u:hunter2@mx?tls=1", "SMTP URL: unknown option(s) tls (only starttls)"),
        ("smtp://u:hunter2@mx?starttls=maybe", "SMTP URL: starttls must be 1 or 0, got 'maybe'"),
        (
            "smtps://u:hunter2@mx?starttls=1",
            "SMTP URL: starttls does not apply to smtps (already TLS)",
        ),
    ],
)
def test_a_bad_smtp_url_is_a_clear_error_without_the_password(url: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_smtp_url(url)
    assert str(raised.value) == message
    assert "hunter2" not in str(raised.value)
    context = raised.value.__context__  # a chained exception could quote the URL
    assert raised.value.__cause__ is None and (context is None or raised.value.__suppress_context__)


def test_the_password_is_not_in_the_targets_repr() -> None:
    target = parse_smtp_url("smtp://relay:hunter2@mx")
    assert "hunter2" not in repr(target)
    assert "relay" in repr(target)


# -- sending --------------------------------------------------------------------------------


def test_a_sent_message_has_its_headers_body_and_envelope(server: SmtpServer) -> None:
    outcome = send(
        server.target(),
        to=["Ops <ops@example.com>", "dev@example.com"],
        cc=["boss@example.com"],
        headers={"X-Relay-Delivery-Id": "evt-1:oncall"},
    )
    assert (outcome.kind, outcome.status, outcome.error) == ("ok", 250, None)
    assert 0 < outcome.latency < TIMEOUT
    (received,) = server.messages
    assert received.mail_from == "relay@example.com"
    assert received.rcpt_tos == ("ops@example.com", "dev@example.com", "boss@example.com")
    message = received.message()
    assert message["From"] == "Relay <relay@example.com>"
    assert message["To"] == "Ops <ops@example.com>, dev@example.com"
    assert message["Cc"] == "boss@example.com"
    assert message["Subject"] == "SMS failure 7104"
    assert message["Message-ID"].endswith("@example.com>")
    assert message["Date"]
    assert message["X-Relay-Delivery-Id"] == "evt-1:oncall"
    assert message.get_content_type() == "text/plain"
    assert message.get_content() == "The message could not be delivered.\n"
    assert "Bcc" not in message


def test_html_makes_a_multipart_alternative_with_both_parts(server: SmtpServer) -> None:
    assert send(server.target(), body="plain words", html="<p>rich words</p>").ok
    message = server.messages[0].message()
    assert message.get_content_type() == "multipart/alternative"
    plain, html = message.iter_parts()
    assert (plain.get_content_type(), plain.get_content()) == ("text/plain", "plain words\n")
    assert (html.get_content_type(), html.get_content()) == ("text/html", "<p>rich words</p>\n")


def test_unicode_subject_and_body_survive(server: SmtpServer) -> None:
    subject = "Échec SMS → 7104 ✓ Привет"
    body = "Zustellung fehlgeschlagen: größer als 160 Zeichen? 😀\nZeile 2"
    assert send(server.target(), subject=subject, body=body, html=f"<b>{body}</b>").ok
    received = server.messages[0]
    assert received.content.isascii()  # 7bit on the wire: any server takes it
    plain, html = received.message().iter_parts()
    assert received.message()["Subject"] == subject
    assert plain.get_content() == body + "\n"
    assert html.get_content() == f"<b>{body}</b>\n"


def test_the_message_id_domain_can_be_chosen(server: SmtpServer) -> None:
    assert send(server.target(), message_id_domain="relay.acme.test").ok
    assert server.messages[0].message()["Message-ID"].endswith("@relay.acme.test>")


def test_line_breaks_in_a_rendered_subject_become_spaces(server: SmtpServer) -> None:
    assert send(server.target(), subject="SMS failure\n  7104\r\nagain").ok
    assert server.messages[0].message()["Subject"] == "SMS failure 7104 again"


#: every line separator str.splitlines knows besides CR and LF: each one in a header
#: made the email package refuse the whole message
OTHER_LINE_BREAKS = ["\u2028", "\u2029", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85"]


@pytest.mark.parametrize("separator", OTHER_LINE_BREAKS, ids=ascii)
def test_any_line_break_an_sms_puts_in_a_templated_subject_becomes_a_space(
    server: SmtpServer, separator: str
) -> None:
    text = f"help{separator}Bcc: victim@example.com{separator} "
    mail, job = _templated_email("SMS from {{ event.sender }}: {{ event.text }}", text)
    settings = load_settings({"RELAY_SMTP_URL": f"smtp://127.0.0.1:{server.port}"})
    outcome = registry.send(mail, registry.prepare(mail, job, settings), job, settings)
    assert (outcome.kind, outcome.error) == ("ok", None)
    (received,) = server.messages
    message = received.message()
    assert message["Subject"] == "SMS from 447700900123: help Bcc: victim@example.com"
    assert "Bcc" not in message
    assert received.rcpt_tos == ("ops@example.com",)


def _templated_email(subject: str, text: str) -> tuple[Any, dict]:
    """An email destination with ``subject``, and a job for an inbound SMS saying ``text``."""
    rules = (
        "version: 1\ndestinations:\n  mail:\n    type: email\n    to: ops@example.com\n"
        f"    subject: '{subject}'\n    body: '{{{{ event.text }}}}'\n"
        "routes: [{name: all, to: mail}]\n"
    )
    payload = {"oa": "447700900123", "da": "12345", "message": text, "tid": "t-1"}
    (event,), _ = build_events(payload, "default", frozenset())
    job = new_job(event, "all", "mail", "v1", {"attempts": 1, "initial": 1.0, "max": 1.0})
    return load_rules_text(rules, env={}).destinations["mail"], job


def test_a_header_with_a_line_break_is_permanent_and_nothing_is_sent(
    server: SmtpServer,
) -> None:
    outcome = send(server.target(), headers={"X-Evil": "a\r\nBcc: victim@example.com"})
    assert outcome.kind == "permanent"
    assert outcome.error is not None and outcome.error.startswith("invalid message: ")
    assert server.messages == []


def test_a_bad_extra_header_name_is_permanent(server: SmtpServer) -> None:
    outcome = send(server.target(), headers={"X-Evil: 1\r\nBcc": "victim@example.com"})
    assert outcome.kind == "permanent"
    assert outcome.error is not None and outcome.error.startswith("invalid message: bad header")
    assert server.messages == []


def test_cc_alone_is_enough(server: SmtpServer) -> None:
    assert send(server.target(), to=[], cc=["boss@example.com"]).ok
    (received,) = server.messages
    assert received.rcpt_tos == ("boss@example.com",)
    assert "To" not in received.message()
    assert received.message()["Cc"] == "boss@example.com"


def test_no_recipients_is_permanent_without_connecting() -> None:
    target = SmtpTarget("127.0.0.1", closed_port())
    outcome = send(target, to=[], cc=[])
    assert (outcome.kind, outcome.error) == ("permanent", "invalid message: no recipients")


# -- what the server says -------------------------------------------------------------------


def test_a_4xx_for_the_data_is_transient_and_the_next_try_succeeds(server: SmtpServer) -> None:
    server.script("data", "451 4.3.0 try later")
    first, second = send(server.target()), send(server.target())
    assert (first.kind, first.status, first.error) == (
        "transient",
        451,
        "SMTP 451: 4.3.0 try later",
    )
    assert (second.kind, second.status) == ("ok", 250)
    assert len(server.messages) == 1


def test_a_5xx_for_the_data_is_permanent(server: SmtpServer) -> None:
    server.script("data", "550 5.7.1 message content rejected")
    outcome = send(server.target())
    assert (outcome.kind, outcome.status, outcome.error) == (
        "permanent",
        550,
        "SMTP 550: 5.7.1 message content rejected",
    )


def test_every_recipient_refused_with_5xx_is_permanent(server: SmtpServer) -> None:
    server.script("rcpt", "550 5.1.1 no such user", "553 5.1.3 bad address")
    outcome = send(server.target(), to=["a@example.com"], cc=["b@example.com"])
    assert (outcome.kind, outcome.status) == ("permanent", 553)
    assert outcome.error == (
        "SMTP 553: all recipients refused: a@example.com (550 5.1.1 no such user); "
        "b@example.com (553 5.1.3 bad address)"
    )


def test_every_recipient_refused_with_a_4xx_among_them_is_transient(server: SmtpServer) -> None:
    server.script("rcpt", "550 5.1.1 no such user", "450 4.2.1 mailbox busy")
    outcome = send(server.target(), to=["a@example.com", "b@example.com"])
    assert (outcome.kind, outcome.status) == ("transient", 450)


def test_some_recipients_refused_is_ok_and_names_them(server: SmtpServer) -> None:
    server.script("rcpt", "550 5.1.1 no such user")
    outcome = send(server.target(), to=["gone@example.com", "ops@example.com"])
    assert outcome.kind == "ok"  # a retry would send ops@ a duplicate
    assert outcome.error == "1 of 2 recipients refused: gone@example.com (550 5.1.1 no such user)"
    assert server.messages[0].rcpt_tos == ("ops@example.com",)


def test_a_closed_port_is_transient() -> None:
    outcome = send(SmtpTarget("127.0.0.1", closed_port()))
    assert outcome.kind == "transient"
    assert outcome.error is not None and outcome.error.startswith("connection failed: ")
    assert "Connection refused" in outcome.error


def test_a_server_that_never_greets_is_a_transient_timeout() -> None:
    listener, port = silent_port()
    with listener:
        outcome = send(SmtpTarget("127.0.0.1", port), timeout=0.2)
    assert (outcome.kind, outcome.error) == ("transient", "timeout after 0.2s")


def test_a_non_positive_timeout_is_a_value_error(server: SmtpServer) -> None:
    with pytest.raises(ValueError, match="timeout must be positive"):
        send(server.target(), timeout=0)


# -- login ----------------------------------------------------------------------------------


def test_login_with_the_right_credentials_sends(auth_server: SmtpServer) -> None:
    target = auth_server.target(username="relay", password=PASSWORD)
    assert send(target).kind == "ok"
    assert len(auth_server.messages) == 1


def test_a_rejected_login_is_permanent_and_names_no_credentials(
    auth_server: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="relay")
    target = auth_server.target(username="relay", password=PASSWORD + "-wrong")
    outcome = send(target)
    assert (outcome.kind, outcome.status, outcome.error) == ("permanent", 535, AUTH_FAILED)
    assert auth_server.messages == []
    assert PASSWORD not in repr(outcome) + str(outcome.error) + caplog.text


def test_a_url_with_credentials_logs_in(auth_server: SmtpServer) -> None:
    target = parse_smtp_url(f"smtp://relay:{PASSWORD}@127.0.0.1:{auth_server.port}")
    assert send(target).ok


def test_a_non_ascii_password_is_permanent_and_not_quoted(auth_server: SmtpServer) -> None:
    outcome = send(auth_server.target(username="relay", password="pässwörd"))
    assert outcome.kind == "permanent"
    assert outcome.error is not None and "ä" not in outcome.error


def test_login_against_a_server_without_auth_is_permanent(server: SmtpServer) -> None:
    outcome = send(server.target(username="relay", password=PASSWORD))
    assert outcome.kind == "permanent"
    assert outcome.error is not None and PASSWORD not in outcome.error


# -- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    if shutil.which("openssl") is None:
        skip_or_fail("openssl", "the openssl command makes the test certificate")
    folder: Path = tmp_path_factory.mktemp("tls")
    certfile, keyfile = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", keyfile, "-out", certfile, "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return certfile, keyfile


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
def test_tls_modes_send_with_a_trusted_context(tls: str, cert: tuple[str, str]) -> None:
    trusting = ssl.create_default_context(cafile=cert[0])
    with SmtpServer(tls=tls, cert=cert) as server:  # type: ignore[arg-type]
        outcome = send(server.target(), ssl_context=trusting)
        assert outcome.kind == "ok", outcome.error
        assert len(server.messages) == 1


def test_an_untrusted_certificate_is_permanent(cert: tuple[str, str]) -> None:
    with SmtpServer(tls="implicit", cert=cert) as server:
        outcome = send(server.target())  # the default context does not trust it
    assert outcome.kind == "permanent"
    assert outcome.error is not None and outcome.error.startswith("TLS: ")
