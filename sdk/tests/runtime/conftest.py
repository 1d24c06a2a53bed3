"""Fixtures for the runtime tests: the echo service, servers, channels, throwaway PKI."""

from __future__ import annotations

import datetime
import ipaddress
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from support.modules import load_module
from support.servers import loopback_settings

from sedna.runtime import ChannelConfig, ServiceServer, ServiceSettings, open_channel

ECHO_SCRIPT = Path(__file__).with_name("echo_service.py")
ECHO = load_module("sedna_runtime_tests_echo_service", ECHO_SCRIPT)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's SEDNA_* variables out of every test."""
    import os

    for key in list(os.environ):
        if key.upper().startswith("SEDNA_"):
            monkeypatch.delenv(key)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure_logging() changes the root logger; put it back after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def echo() -> ModuleType:
    """The echo_service helper module (SERVICE, build_handler, path, eventually...)."""
    return ECHO


def make_settings(**values: Any) -> ServiceSettings:
    """Loopback settings with free ports (metrics too) and a short drain."""
    return loopback_settings(**{"metrics_port": 0, "drain_seconds": 5.0, **values})


@pytest.fixture
def settings_factory() -> Callable[..., ServiceSettings]:
    """``settings_factory(**values)``: loopback settings with free ports."""
    return make_settings


@dataclass
class Running:
    """A started echo server and what its handlers observed."""

    server: ServiceServer
    state: Any


ServeFn = Callable[..., Awaitable[Running]]


@pytest.fixture
async def serve() -> AsyncIterator[ServeFn]:
    """``await serve(settings=None, **setting_values)``: start an echo server; stopped after."""
    started: list[ServiceServer] = []

    async def _serve(settings: ServiceSettings | None = None, **values: Any) -> Running:
        state = ECHO.EchoState()
        server = ServiceServer(settings if settings is not None else make_settings(**values))
        server.add_generic_handler(ECHO.build_handler(state), ECHO.SERVICE)
        await server.start()
        started.append(server)
        return Running(server, state)

    yield _serve
    for server in started:
        await server.stop(0)


ConnectFn = Callable[..., grpc.aio.Channel]


@pytest.fixture
async def connect() -> AsyncIterator[ConnectFn]:
    """``connect(target, **ChannelConfig fields)``: an aio channel closed after the test."""
    channels: list[grpc.aio.Channel] = []

    def _connect(target: str, **options: Any) -> grpc.aio.Channel:
        options.setdefault("default_timeout", 5.0)
        channel = open_channel(ChannelConfig(target=target, **options))
        channels.append(channel)
        return channel

    yield _connect
    for channel in channels:
        await channel.close()


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


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server cert (SAN localhost, 127.0.0.1), client certs from it and a foreign CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = tmp_path_factory.mktemp("pki")
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
