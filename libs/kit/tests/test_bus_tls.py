"""TLS to NATS as production configures it (DMP_NATS_TLS_*), against a real nats-server that
presents a certificate and verifies its clients'."""

from __future__ import annotations

import datetime
import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.errors
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dmp_kit.bus import EventBus
from dmp_kit.config import Settings
from dmp_stack.infra import free_port, nats_binary, spawn, wait_port
from dmp_stack.stack import stop_pid

NOW = datetime.datetime.now(datetime.UTC)


def issue(
    directory: Path,
    name: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate (the CA's own when `issuer` is None) and its key, written as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(minutes=5))
        .not_valid_after(NOW + datetime.timedelta(days=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            False,
        )
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    """nats-server with TLS, verifying client certificates against the same CA."""
    directory = tmp_path_factory.mktemp("nats-tls")
    ca = issue(directory, "ca")
    issue(directory, "server", ca)
    issue(directory, "client", ca)
    port = free_port()
    config = {
        "listen": f"127.0.0.1:{port}",
        "jetstream": {"store_dir": str(directory / "js")},
        "tls": {
            "cert_file": str(directory / "server.pem"),
            "key_file": str(directory / "server.key"),
            "ca_file": str(directory / "ca.pem"),
            "verify": True,
        },
    }
    (directory / "nats.conf").write_text(json.dumps(config))
    log = directory / "nats.log"
    proc = spawn([str(nats_binary()), "-c", str(directory / "nats.conf")], log)
    try:
        wait_port(port, 30, proc, "nats-server", log)
        yield directory, port
    finally:
        stop_pid(proc.pid)


def bus(settings: Settings) -> EventBus:
    return EventBus(settings.nats_url, "tls-test", tls=settings.nats_tls())


async def test_a_service_connects_over_tls_with_its_settings(tls_server: tuple[Path, int]) -> None:
    directory, port = tls_server
    settings = Settings(
        env="dev",
        nats_url=f"tls://127.0.0.1:{port}",
        nats_tls_ca=str(directory / "ca.pem"),
        nats_tls_cert=str(directory / "client.pem"),
        nats_tls_key=str(directory / "client.key"),
    )
    connected = bus(settings)
    await connected.connect()
    try:
        assert await connected.healthy()
    finally:
        await connected.close()


@pytest.mark.parametrize("missing", ["ca", "client certificate"])
async def test_without_the_ca_or_a_client_certificate_nothing_connects(
    tls_server: tuple[Path, int], missing: str
) -> None:
    directory, port = tls_server
    given = {
        "nats_tls_ca": "" if missing == "ca" else str(directory / "ca.pem"),
        "nats_tls_cert": "" if missing == "client certificate" else str(directory / "client.pem"),
        "nats_tls_key": "" if missing == "client certificate" else str(directory / "client.key"),
    }
    settings = Settings(env="dev", nats_url=f"tls://127.0.0.1:{port}", **given)
    with pytest.raises((nats.errors.Error, OSError)):
        await nats.connect(
            settings.nats_url, tls=settings.nats_tls(), allow_reconnect=False, connect_timeout=2
        )
