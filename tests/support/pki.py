"""A throwaway PKI for TLS tests: a CA, server and client certificates, and a foreign CA."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Pki", "make_pki"]


@dataclass(frozen=True)
class Pki:
    """Paths of a throwaway CA, server and client certificates (PEM)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    other_client_cert: Path
    other_client_key: Path


def make_pki(directory: Path) -> Pki:
    """Write a CA, a server cert (SAN localhost, 127.0.0.1), client certs and a foreign CA."""

    now = datetime.datetime.now(datetime.UTC)

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def write_key(key: ec.EllipticCurvePrivateKey, file_name: str) -> Path:
        path = directory / file_name
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return path

    def write_cert(cert: x509.Certificate, file_name: str) -> Path:
        path = directory / file_name
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(common_name))
            .issuer_name(name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def issue(
        ca_key: ec.EllipticCurvePrivateKey,
        ca_cert: x509.Certificate,
        common_name: str,
        usage: x509.ObjectIdentifier,
        sans: list[x509.GeneralName],
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(common_name))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    ca_key, ca_cert = make_ca("sedna-test-ca")
    server_key, server_cert = issue(
        ca_key,
        ca_cert,
        "localhost",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client_key, client_cert = issue(
        ca_key, ca_cert, "sedna-test-client", ExtendedKeyUsageOID.CLIENT_AUTH, []
    )
    other_ca_key, other_ca_cert = make_ca("some-other-ca")
    other_client_key, other_client_cert = issue(
        other_ca_key, other_ca_cert, "intruder", ExtendedKeyUsageOID.CLIENT_AUTH, []
    )
    return Pki(
        ca=write_cert(ca_cert, "ca.pem"),
        server_cert=write_cert(server_cert, "server.pem"),
        server_key=write_key(server_key, "server-key.pem"),
        client_cert=write_cert(client_cert, "client.pem"),
        client_key=write_key(client_key, "client-key.pem"),
        other_ca=write_cert(other_ca_cert, "other-ca.pem"),
        other_client_cert=write_cert(other_client_cert, "other-client.pem"),
        other_client_key=write_key(other_client_key, "other-client-key.pem"),
    )
