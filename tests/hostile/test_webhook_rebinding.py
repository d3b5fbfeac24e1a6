"""Hostile customer, issue 19 row 1: a webhook host name that answers a public address when checked and
127.0.0.1 when connected (DNS rebinding) never gets a POST inside; every address is checked; the Host
header and the TLS server name stay the URL's; a redirect is never followed."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.api.conftest import problem_type
from tests.hostile.webhook_peers import FakeDns, add_endpoint, deliveries, receiver, run_sender_once

#: A global address (documentation ranges are not global, so the guard would refuse them); FakeDns
#: refuses every connection to a global address, so nothing leaves the machine.
PUBLIC = "93.184.215.14"


def test_a_name_that_rebinds_to_loopback_after_the_check_gets_no_post(make_api, monkeypatch) -> None:
    dns = FakeDns(monkeypatch)
    api = make_api(webhook_allow_private=False, webhook_timeout_s=1.0)
    with receiver() as inside:
        # Registration and the sender's check see a public address; any later lookup sees loopback.
        dns.answer("rebind.customer.test", [PUBLIC], [PUBLIC], ["127.0.0.1"])
        owner = api.owner()
        created = owner.client("operator").post("/v1/webhooks", json={"url": inside.url("rebind.customer.test")})
        assert created.status_code == 201, created.text
        api.complete(owner.conversion()["id"])
        run_sender_once(api)
        assert inside.requests == []
        [(status, attempts, log)] = deliveries(api).values()
        assert status == "pending" and attempts == 1
        assert log[0][0] is None and log[0][1]  # no status code came back from inside
        assert dns.calls.count("rebind.customer.test") == 2  # once at registration, once by the sender
        assert dns.outside == [PUBLIC]  # the sender went to the address it had checked


def test_every_address_of_a_name_is_checked(make_api, monkeypatch) -> None:
    dns = FakeDns(monkeypatch)
    api = make_api(webhook_allow_private=False, webhook_timeout_s=1.0)
    with receiver() as inside:
        dns.answer("mixed.customer.test", [PUBLIC, "127.0.0.1"])
        owner = api.owner()
        refused = owner.client("operator").post("/v1/webhooks", json={"url": inside.url("mixed.customer.test")})
        assert refused.status_code == 422 and problem_type(refused) == "webhook_url_refused"
        assert "STAYLER_WEBHOOK_ALLOW_PRIVATE" in refused.json()["detail"]
        # A row that got past registration (an older one) is refused at send time, before any connection.
        add_endpoint(api, owner.id, inside.url("mixed.customer.test"))
        api.complete(owner.conversion()["id"])
        run_sender_once(api)
        assert inside.requests == []
        [(_, _, log)] = deliveries(api).values()
        assert log[0][1].startswith("refused:") and "STAYLER_WEBHOOK_ALLOW_PRIVATE" in log[0][1]


@pytest.mark.slow  # held at abfa2b2 already
def test_a_redirect_is_not_followed(api) -> None:
    with receiver() as target:
        location = target.url()

        def redirect(conn) -> None:
            conn.sendall(f"HTTP/1.1 307 Temporary Redirect\r\nlocation: {location}\r\ncontent-length: 0\r\n\r\n"
                         .encode())

        with receiver() as bouncer:
            bouncer.answer = redirect
            owner = api.owner()
            owner.client("operator").post("/v1/webhooks", json={"url": bouncer.url()})
            api.complete(owner.conversion()["id"])
            run_sender_once(api)
            assert len(bouncer.requests) == 1 and target.requests == []
            [(status, _, log)] = deliveries(api).values()
            assert status == "pending" and log[0] == ["307", "HTTP 307"]


def _certificate(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for ``name``: the receiver's context and a client context trusting it."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    return server, client


def test_the_host_header_and_the_tls_name_stay_the_urls(api, monkeypatch, tmp_path) -> None:
    from api.webhooks.resolver import Resolver

    name = "hooks.customer.test"
    server_ctx, client_ctx = _certificate(tmp_path, name)
    lookups: list[str] = []

    def lookup(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    with receiver(tls=server_ctx) as tls_receiver:
        owner = api.owner()
        owner.client("operator").post("/v1/webhooks", json={"url": tls_receiver.url(name, "https")})
        api.complete(owner.conversion()["id"])
        run_sender_once(api, resolver=Resolver(lookup=lookup), ssl_context=client_ctx)
        [(status, _, _)] = deliveries(api).values()
        assert status == "delivered"  # the certificate was checked against the URL's name
        assert tls_receiver.server_names == [name]
        [request] = tls_receiver.requests
        assert f"Host: {name}:{tls_receiver.port}".encode() in request
        assert lookups == [name]
