"""A real S3 endpoint on loopback: moto's server mode, optionally checking credentials.

``moto_s3(objects)`` starts :class:`moto.server.ThreadedMotoServer` on a free port and stores
``objects`` (``{"bucket/key": body}``). With ``authenticated=True`` it also creates an IAM
user allowed ``s3:*``, hands out that user's keys, and then turns moto's request
authentication on (``/moto-api/reset-auth``), so a wrong key gets ``InvalidAccessKeyId`` /
``SignatureDoesNotMatch`` as from real S3. moto's data and its authentication switch are
process-wide, not per server: both are reset when the block starts and when it ends.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

__all__ = ["S3Endpoint", "moto_s3"]

_ADMIN = {"aws_access_key_id": "moto-admin", "aws_secret_access_key": "moto-admin"}
_ALLOW_S3 = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}


@dataclass(frozen=True)
class S3Endpoint:
    """Where the server listens and keys it accepts."""

    host_port: str
    access_key: str
    secret_key: str

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host_port}"


def _admin_client(url: str, service: str) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=url, region_name="us-east-1", **_ADMIN)


def _moto_api(url: str, path: str, value: str = "") -> None:
    request = urllib.request.Request(
        f"{url}/moto-api/{path}",
        data=value.encode(),
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        reply.read()


@contextmanager
def moto_s3(
    objects: Mapping[str, bytes] | None = None, *, authenticated: bool = False
) -> Iterator[S3Endpoint]:
    """Run a moto S3 server holding ``objects`` for the duration of the block.

    Skips the test when ``moto[server]`` is not installed.
    """
    server_mod = pytest.importorskip(
        "moto.server", reason="moto[server] is not installed: no local S3 server"
    )
    pytest.importorskip("boto3", reason="boto3 (a moto dependency) is not installed")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = S3Endpoint(f"{host}:{port}", "moto-admin", "moto-admin")
    try:
        # moto keeps its data per process, not per server: start from nothing.
        _moto_api(endpoint.url, "reset")
        s3 = _admin_client(endpoint.url, "s3")
        for path, body in (objects or {}).items():
            bucket, _, name = path.partition("/")
            if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
                s3.create_bucket(Bucket=bucket)
            s3.put_object(Bucket=bucket, Key=name, Body=body)
        if authenticated:
            iam = _admin_client(endpoint.url, "iam")
            iam.create_user(UserName="sedna")
            iam.put_user_policy(
                UserName="sedna", PolicyName="s3", PolicyDocument=json.dumps(_ALLOW_S3)
            )
            access = iam.create_access_key(UserName="sedna")["AccessKey"]
            endpoint = S3Endpoint(
                endpoint.host_port, access["AccessKeyId"], access["SecretAccessKey"]
            )
            _moto_api(endpoint.url, "reset-auth", "0")
        yield endpoint
    finally:
        if authenticated:
            _moto_api(endpoint.url, "reset-auth", "inf")
        _moto_api(endpoint.url, "reset")
        server.stop()
