"""TLS verification is always on: a self-signed API is refused unless its CA is configured."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from worker.emulator import AuditRules, Emulator, EmulatorConfig, EmulatorServer
from worker.jsms import Credentials, JsmsClient, RetryPolicy, SignRequest
from worker.jsms.errors import OutcomeUnknown, TransportError
from worker.settings import Settings


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and its key, written as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signq test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmulatorServer, Path]]:
    """The emulator behind HTTPS with a self-signed certificate."""
    cert, key = self_signed(tmp_path_factory.mktemp("tls"))
    emulator = Emulator(EmulatorConfig(rules=AuditRules(audit_delay=3600)))
    emulator.add_account("tls" + "a" * 21, "tls-secret")
    with EmulatorServer(emulator, ssl_certfile=str(cert), ssl_keyfile=str(key)) as server:
        yield server, cert


CREDS = Credentials("tls" + "a" * 21, "tls-secret")


def test_untrusted_certificate_is_refused(tls_server: tuple[EmulatorServer, Path]) -> None:
    """By default the client verifies certificates: a self-signed server never gets the request."""
    server, _ = tls_server
    with (
        JsmsClient(server.api_url, retry=RetryPolicy(max_attempts=1)) as jsms,
        pytest.raises(TransportError) as caught,
    ):
        jsms.query(CREDS, 1)
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert caught.value.sent is False


def test_create_to_untrusted_server_is_not_an_uncertain_outcome(
    tls_server: tuple[EmulatorServer, Path],
) -> None:
    """A failed handshake means nothing was sent: no OutcomeUnknown for create."""
    server, _ = tls_server
    with (
        JsmsClient(server.api_url, retry=RetryPolicy(max_attempts=1)) as jsms,
        pytest.raises(TransportError) as caught,
    ):
        jsms.create(CREDS, SignRequest("证书"))
    assert not isinstance(caught.value, OutcomeUnknown)


def test_configured_ca_bundle_is_trusted(tls_server: tuple[EmulatorServer, Path]) -> None:
    """SIGNQ_CA_BUNDLE makes a private CA trusted, still verified."""
    server, cert = tls_server
    settings = Settings.from_env({"SIGNQ_API_URL": server.api_url, "SIGNQ_CA_BUNDLE": str(cert)})
    with JsmsClient.from_settings(settings) as jsms:
        assert jsms.create(CREDS, SignRequest("证书")) > 0
