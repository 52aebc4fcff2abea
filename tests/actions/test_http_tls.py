"""Mutual TLS for http destinations, against a real HTTPS receiver that asks for a client
certificate (tests/httpsink.py with a server context), with certificates made at test time
(tests/actions/pki.py). Deliveries go through the http action as the worker sends them, and
through the worker's runtime in process to their dead letters."""

from __future__ import annotations

import os
import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.actions import close_session, get_session, tls
from relay.actions.registry import checks, prepare, send
from relay.actions.sessions import session_for
from relay.errors import RulesError
from relay.ops.checks import load_ruleset
from relay.rules import HttpDestination, load_rules_text
from relay.rules.interpolation import PLACEHOLDERS
from relay.settings import load_settings
from relay.worker.delivery import deliver_job
from tests.actions.pki import Pki
from tests.harness import in_process_runtime, pending_job
from tests.httpsink import HttpSink

SETTINGS = load_settings({"RELAY_REDIS_URL": "redis://127.0.0.1:6379/0"})
JOB = {
    "delivery_id": "01EVENT:crm",
    "event": {"id": "01EVENT", "kind": "delivery_receipt", "raw": {}},
    "route": "all",
    "destination": "crm",
}


def rules(url: str, tls_yaml: str | None) -> str:
    """A rules file whose destination ``crm`` has ``tls: <tls_yaml>`` (none when None)."""
    return f"""
version: 1
destinations:
  crm:
    type: http
    url: "{url}"
    retry: {{attempts: 3}}
    {"" if tls_yaml is None else "tls: " + tls_yaml}
routes: [{{name: all, to: [crm]}}]
"""


def files(pki: Pki, client: str | None = "client", ca: str | None = "ca") -> str:
    """A tls mapping of file paths: ``ca``, and ``client``'s certificate and key."""
    parts = [f"ca: {pki.path(ca + '.pem')}"] if ca else []
    if client:
        parts += [
            f"client_cert: {pki.path(client + '.pem')}",
            f"client_key: {pki.path(client + '.key')}",
        ]
    return "{" + ", ".join(parts) + "}"


def destination(text: str, env: dict | None = None) -> HttpDestination:
    found = load_rules_text(text, env=env).destinations["crm"]
    assert isinstance(found, HttpDestination)
    return found


def deliver(target: HttpDestination):
    return send(target, prepare(target, JOB, SETTINGS), JOB, SETTINGS)


@pytest.fixture
def receiver(pki: Pki) -> Iterator[HttpSink]:
    """An HTTPS receiver that requires a client certificate signed by the test CA."""
    with HttpSink(tls=pki.server_context()) as sink:
        yield sink
    close_session()


def test_a_client_certificate_from_files_is_accepted(pki: Pki, receiver: HttpSink) -> None:
    target = destination(rules(receiver.url("/hook"), files(pki)))
    outcome = deliver(target)
    assert outcome.kind == "ok", outcome.error
    assert [r.path for r in receiver.requests] == ["/hook"]
    assert receiver.refused == []


def test_pems_given_inline_through_the_environment_are_accepted(
    pki: Pki, receiver: HttpSink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where a private file would go
    env = {
        "CRM_CA": pki.text("ca.pem"),
        "CRM_CERT": pki.text("client.pem"),
        "CRM_KEY": pki.text("client.key"),
    }
    tls_yaml = '{ca: "${CRM_CA}", client_cert: "${CRM_CERT}", client_key: "${CRM_KEY}"}'
    target = destination(rules(receiver.url("/hook"), tls_yaml), env)
    assert target.tls is not None and target.tls.client_key is not None
    assert target.tls.client_key.source == "inline"
    assert checks(target, SETTINGS) == []
    assert deliver(target).kind == "ok"
    assert list(tmp_path.iterdir()) == []  # kept in memory: nothing written


def test_a_certificate_and_key_in_one_pem_need_no_client_key(pki: Pki, receiver: HttpSink) -> None:
    both = pki.text("client.pem") + pki.text("client.key")
    tls_yaml = '{ca: "${CRM_CA}", client_cert: "${CRM_BOTH}"}'
    target = destination(
        rules(receiver.url("/hook"), tls_yaml), {"CRM_CA": pki.text("ca.pem"), "CRM_BOTH": both}
    )
    assert deliver(target).kind == "ok"


def test_without_memfd_the_pems_are_read_from_a_private_file_removed_at_once(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(os, "memfd_create")
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    seen: list[tuple[int, int]] = []
    real = ssl.SSLContext.load_cert_chain

    def spy(context, certfile, keyfile=None, password=None):  # type: ignore[no-untyped-def]
        for path in (certfile, keyfile):
            seen.append(
                (os.stat(path).st_mode & 0o777, os.stat(os.path.dirname(path)).st_mode & 0o777)
            )
        return real(context, certfile, keyfile, password)

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", spy)
    env = {"CRM_CERT": pki.text("client.pem"), "CRM_KEY": pki.text("client.key")}
    tls_yaml = '{client_cert: "${CRM_CERT}", client_key: "${CRM_KEY}"}'
    target = destination(rules("https://127.0.0.1:1/hook", tls_yaml), env)
    assert target.tls is not None
    tls.context_for(target.tls)
    assert seen == [(0o600, 0o700), (0o600, 0o700)]
    assert list(tmp_path.iterdir()) == []


def test_without_a_client_certificate_the_delivery_is_dead_lettered_naming_the_tls_error(
    redis_server, pki: Pki, receiver: HttpSink
) -> None:
    runtime, store, scheduler = in_process_runtime(
        redis_server.url, rules(receiver.url("/hook"), files(pki, client=None))
    )
    job = pending_job(runtime, "crm", {"attempts": 3, "initial": 1, "max": 1})
    assert deliver_job(runtime, job) == "dead_lettered"  # permanent: no retry
    assert scheduler.calls == []
    record = store.dead_letters.get(job["delivery_id"])
    assert record is not None
    assert record["reason"] == "tls: tlsv13 alert certificate required"
    assert receiver.requests == [] and len(receiver.refused) == 1


def test_a_client_certificate_the_server_does_not_trust_is_dead_lettered(
    redis_server, pki: Pki, receiver: HttpSink
) -> None:
    runtime, store, _ = in_process_runtime(
        redis_server.url, rules(receiver.url("/hook"), files(pki, client="stranger"))
    )
    job = pending_job(runtime, "crm", {"attempts": 3, "initial": 1, "max": 1})
    assert deliver_job(runtime, job) == "dead_lettered"
    record = store.dead_letters.get(job["delivery_id"])
    assert record is not None and record["reason"] == "tls: tlsv1 alert unknown ca"
    assert "unable to get local issuer certificate" in receiver.refused[0]


def test_a_server_certificate_from_another_ca_is_permanent(pki: Pki, receiver: HttpSink) -> None:
    target = destination(rules(receiver.url("/hook"), files(pki, ca="stranger-ca")))
    outcome = deliver(target)
    assert outcome.kind == "permanent"
    assert outcome.error is not None
    assert outcome.error.startswith("tls: certificate verify failed: ")
    assert receiver.requests == []


def test_without_tls_of_its_own_a_refused_certificate_is_retried(
    pki: Pki, receiver: HttpSink
) -> None:
    """A plain https destination (the system's CA bundle, no client certificate): the
    receiver's certificate refused is transient, as before tls existed (a certificate
    being renewed is worth the retries); only a destination with tls of its own gives up."""
    outcome = deliver(destination(rules(receiver.url("/hook"), None)))
    assert outcome.kind == "transient"
    assert outcome.error is not None
    assert outcome.error.startswith("tls: certificate verify failed: ")


def test_ca_replaces_the_default_bundle(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the test CA as requests' bundle, a destination without tls trusts the server;
    one whose ca is another CA does not: no bundle is added to its own."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", pki.path("ca.pem"))
    close_session()
    with HttpSink(tls=pki.server_context(require_client_cert=False)) as server:
        assert deliver(destination(rules(server.url("/"), None))).kind == "ok"
        stranger = destination(rules(server.url("/"), files(pki, client=None, ca="stranger-ca")))
        outcome = deliver(stranger)
        assert outcome.kind == "permanent", outcome
        assert outcome.error is not None and "certificate verify failed" in outcome.error
        client_only = files(pki, ca=None)
        assert deliver(destination(rules(server.url("/"), client_only))).kind == "ok"
    close_session()


def test_a_connection_reset_mid_handshake_is_transient(pki: Pki) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def reset_after_client_hello() -> None:
            connection, _ = listener.accept()
            connection.recv(1024)
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            connection.close()  # an RST

        server = threading.Thread(target=reset_after_client_hello)
        server.start()
        port = listener.getsockname()[1]
        outcome = deliver(destination(rules(f"https://127.0.0.1:{port}/", files(pki))))
        server.join()
    close_session()
    assert outcome.kind == "transient"
    assert outcome.error is not None and "Connection reset by peer" in outcome.error


def test_a_destination_with_tls_has_its_own_session_and_reuses_its_connections(
    pki: Pki, receiver: HttpSink
) -> None:
    target = destination(rules(receiver.url("/hook"), files(pki)))
    for _ in range(5):
        assert deliver(target).kind == "ok"
    assert receiver.accepted == 1  # one handshake, one connection, five requests
    assert session_for(target) is session_for(target) is not get_session()
    changed = destination(rules(receiver.url("/hook"), files(pki, client="stranger")))
    assert session_for(changed) is not session_for(target)  # a reload that changes its tls


def test_check_names_a_pem_that_does_not_parse(pki: Pki, tmp_path: Path) -> None:
    """At load (relay rules check, the worker), not at the first delivery."""
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nbm90IGl0\n-----END CERTIFICATE-----\n")
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(
        ["openssl", "pkey", "-in", pki.path("client.key"), "-aes256", "-passout", "pass:x",
         "-out", str(encrypted)],
        check=True, capture_output=True,
    )  # fmt: skip
    cert, key, other_key = pki.path("client.pem"), pki.path("client.key"), pki.path("stranger.key")
    cases = [
        (f"{{ca: {bad}}}", "tls.ca: no certificate could be read ("),
        (f"{{client_cert: {bad}, client_key: {key}}}", "tls.client_cert: not a certificate ("),
        (
            f"{{client_cert: {cert}, client_key: {other_key}}}",
            "tls.client_key: the key does not match client_cert",
        ),
        (
            f"{{client_cert: {cert}, client_key: {encrypted}}}",
            "tls.client_key: the key is encrypted: give it unencrypted",
        ),
        (f"{{client_cert: {cert}, client_key: {bad}}}", "tls.client_key: not a private key ("),
    ]
    path = tmp_path / "rules.yaml"
    for tls_yaml, message in cases:
        path.write_text(rules("https://crm.internal/hook", tls_yaml))
        with pytest.raises(RulesError) as caught:
            load_ruleset(SETTINGS, str(path))
        (error,) = caught.value.errors
        assert error.startswith(f"{path}:4: destinations.crm: {message}"), error


def test_a_candidate_reads_no_file_it_names() -> None:
    """A rules diff's candidate (anyone's text) must not learn what files exist here."""
    for tls_yaml in ("{ca: /nonexistent/ca.pem}", "{ca: /dev/null}", '{ca: "${CRM_CA}"}'):
        text = rules("https://crm.internal/hook", tls_yaml)
        found = load_rules_text(text, env=PLACEHOLDERS).destinations["crm"]
        assert isinstance(found, HttpDestination) and found.tls is not None
        assert found.tls.ca is not None and found.tls.ca.text is None
        assert checks(found, SETTINGS) == []
    with pytest.raises(RulesError):  # read with the environment, the same file is refused
        load_rules_text(rules("https://crm.internal/hook", "{ca: /nonexistent/ca.pem}"))
