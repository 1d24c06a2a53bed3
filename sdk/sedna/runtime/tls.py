"""TLS and mutual-TLS credentials for servers and channels, loaded from PEM files.

Files are checked up front (exists, readable, PEM, key matches certificate) so a bad
deployment fails at start with a message naming the file, instead of with an opaque
handshake error on the first call.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import grpc

__all__ = [
    "TLSConfigError",
    "client_credentials",
    "read_pem",
    "server_credentials",
]

StrPath = str | os.PathLike[str]


class TLSConfigError(ValueError):
    """A TLS file is missing, unreadable, not PEM, or a key does not match its certificate."""


def read_pem(path: StrPath, what: str) -> bytes:
    """Read a PEM file, failing with a message that says which file and why.

    Parameters
    ----------
    path
        The file.
    what
        What it is, for the message (e.g. ``"server certificate (tls_cert_file)"``).

    Returns
    -------
    bytes
        The file content.

    Raises
    ------
    TLSConfigError
        Missing, not a file, unreadable, empty, or without a PEM block.
    """
    file = Path(path)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise TLSConfigError(f"{what}: file not found: {file}") from None
    except IsADirectoryError:
        raise TLSConfigError(f"{what}: is a directory, not a file: {file}") from None
    except PermissionError:
        raise TLSConfigError(f"{what}: permission denied reading {file}") from None
    except OSError as exc:
        raise TLSConfigError(f"{what}: cannot read {file}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise TLSConfigError(f"{what}: {file} is empty or not PEM (no '-----BEGIN' block)")
    return data


def _check_key_pair(cert_file: StrPath, key_file: StrPath) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # A password callback that supplies nothing: gRPC cannot use encrypted keys, and
        # without a callback OpenSSL would prompt on the terminal.
        context.load_cert_chain(os.fspath(cert_file), os.fspath(key_file), password=lambda: b"")
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "MISMATCH" in str(reason).upper():
            raise TLSConfigError(
                f"private key {key_file} does not match certificate {cert_file}"
            ) from None
        raise TLSConfigError(
            f"cannot load certificate {cert_file} with key {key_file}: {reason} "
            "(encrypted private keys are not supported)"
        ) from None


def _check_ca(ca_file: StrPath, what: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=os.fspath(ca_file))
    except ssl.SSLError as exc:
        raise TLSConfigError(f"{what}: {ca_file} holds no usable certificate: {exc}") from None


def server_credentials(
    cert_file: StrPath,
    key_file: StrPath,
    client_ca_file: StrPath | None = None,
) -> grpc.ServerCredentials:
    """Server TLS credentials; with ``client_ca_file``, mutual TLS.

    Parameters
    ----------
    cert_file
        Server certificate chain (PEM), leaf first.
    key_file
        Its unencrypted private key (PEM).
    client_ca_file
        CA bundle that client certificates must chain to. When given, clients without a
        valid certificate are refused during the handshake.

    Returns
    -------
    grpc.ServerCredentials
        Credentials for ``add_secure_port``.

    Raises
    ------
    TLSConfigError
        A file is missing, unreadable, not PEM, or the key does not match.
    """
    cert = read_pem(cert_file, "server certificate (tls_cert_file)")
    key = read_pem(key_file, "server private key (tls_key_file)")
    _check_key_pair(cert_file, key_file)
    client_ca = None
    if client_ca_file is not None:
        client_ca = read_pem(client_ca_file, "client CA (tls_client_ca_file)")
        _check_ca(client_ca_file, "client CA (tls_client_ca_file)")
    return grpc.ssl_server_credentials(
        [(key, cert)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def client_credentials(
    ca_file: StrPath | None = None,
    cert_file: StrPath | None = None,
    key_file: StrPath | None = None,
) -> grpc.ChannelCredentials:
    """Channel TLS credentials; with a client certificate, for mutual TLS.

    Parameters
    ----------
    ca_file
        CA bundle to verify the server with; None uses the system roots.
    cert_file
        Client certificate chain (PEM), for servers that require one.
    key_file
        Its unencrypted private key (PEM); required with ``cert_file``.

    Returns
    -------
    grpc.ChannelCredentials
        Credentials for a secure channel.

    Raises
    ------
    TLSConfigError
        A file is missing or invalid, or only one of cert/key is given.
    """
    if (cert_file is None) != (key_file is None):
        raise TLSConfigError("client certificate and key must be given together")
    ca = None
    if ca_file is not None:
        ca = read_pem(ca_file, "CA bundle (ca_file)")
        _check_ca(ca_file, "CA bundle (ca_file)")
    cert = key = None
    if cert_file is not None and key_file is not None:
        cert = read_pem(cert_file, "client certificate (cert_file)")
        key = read_pem(key_file, "client private key (key_file)")
        _check_key_pair(cert_file, key_file)
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
