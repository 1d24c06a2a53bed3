"""DirectorySecretSource: Secret manifests in a directory (the local mode's Secrets)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from sedna_gm.workloads.secret_files import DirectorySecretSource, InvalidSecretError
from sedna_gm.workloads.storage import SecretNotFoundError


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def manifest(
    name: str = "s3-creds",
    *,
    namespace: str | None = None,
    access: str = "AK",
    secret: str = "SK",
    endpoint: str = "127.0.0.1:9000",
    string_data: bool = False,
) -> str:
    ns = f"\n  namespace: {namespace}" if namespace else ""
    if string_data:
        body = f"stringData:\n  ACCESS_KEY_ID: {access}\n  SECRET_ACCESS_KEY: {secret}\n"
    else:
        body = f"data:\n  ACCESS_KEY_ID: {b64(access)}\n  SECRET_ACCESS_KEY: {b64(secret)}\n"
    return (
        "apiVersion: v1\nkind: Secret\nmetadata:\n"
        f"  name: {name}{ns}\n"
        f'  annotations:\n    s3-endpoint: "{endpoint}"\n    s3-usehttps: "0"\n'
        f"type: Opaque\n{body}"
    )


async def test_reads_base64_data_in_the_default_namespace(tmp_path: Path) -> None:
    (tmp_path / "s3.yaml").write_text(manifest(access="key-id", secret="s3cr3t"))
    secret = await DirectorySecretSource(tmp_path).get_s3_secret("default", "s3-creds")
    assert (secret.endpoint, secret.use_https) == ("127.0.0.1:9000", False)
    assert (secret.access_key_id, secret.secret_access_key) == ("key-id", "s3cr3t")
    assert "s3cr3t" not in repr(secret)


async def test_string_data_namespaces_multi_documents_and_lists(tmp_path: Path) -> None:
    (tmp_path / "many.yml").write_text(
        "kind: ConfigMap\nmetadata: {name: other}\n---\n"
        + manifest("a", namespace="team", string_data=True, secret="plain")
        + "---\n"
        + manifest("a", secret="in-default")
    )
    (tmp_path / "list.json").write_text(
        '{"kind": "List", "items": [{"kind": "Secret", "metadata": {"name": "b", '
        '"annotations": {"s3-endpoint": "https://s3.example"}}, '
        '"stringData": {"ACCESS_KEY_ID": "x", "SECRET_ACCESS_KEY": "y"}}]}'
    )
    (tmp_path / "notes.txt").write_text(manifest("c"))  # not a manifest suffix: ignored
    source = DirectorySecretSource(tmp_path)
    assert (await source.get_s3_secret("team", "a")).secret_access_key == "plain"
    assert (await source.get_s3_secret("default", "a")).secret_access_key == "in-default"
    listed = await source.get_s3_secret("default", "b")
    assert listed.endpoint_url == "https://s3.example"
    with pytest.raises(SecretNotFoundError, match=r"secret default/c not found in"):
        await source.get_s3_secret("default", "c")
    with pytest.raises(SecretNotFoundError, match="secret other/a not found"):
        await source.get_s3_secret("other", "a")


async def test_every_lookup_reads_the_directory_again(tmp_path: Path) -> None:
    source = DirectorySecretSource(tmp_path)
    with pytest.raises(SecretNotFoundError):
        await source.get_s3_secret("default", "s3-creds")
    path = tmp_path / "s3.yaml"
    path.write_text(manifest(secret="one"))
    assert (await source.get_s3_secret("default", "s3-creds")).secret_access_key == "one"
    path.write_text(manifest(secret="two"))
    assert (await source.get_s3_secret("default", "s3-creds")).secret_access_key == "two"
    # The file sorting last wins when two define the same Secret.
    (tmp_path / "z-override.yaml").write_text(manifest(secret="three"))
    assert (await source.get_s3_secret("default", "s3-creds")).secret_access_key == "three"
    path.unlink()
    (tmp_path / "z-override.yaml").unlink()
    with pytest.raises(SecretNotFoundError):
        await source.get_s3_secret("default", "s3-creds")


async def test_broken_files_are_named_without_their_content(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text(
        "kind: Secret\nstringData:\n  SECRET_ACCESS_KEY: leaked-value: [\n"
    )
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SecretNotFoundError) as info:
        await DirectorySecretSource(tmp_path).get_s3_secret("default", "s3-creds")
    message = str(info.value)
    assert "broken.yaml: not valid YAML at line 3" in message
    assert "binary.yaml: not UTF-8 text" in message
    assert "leaked-value" not in message


async def test_unusable_secrets_are_invalid(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "kind: Secret\nmetadata:\n  name: no-endpoint\nstringData:\n  ACCESS_KEY_ID: x\n"
        "---\nkind: Secret\nmetadata:\n  name: bad-b64\n  annotations: {s3-endpoint: h:1}\n"
        "data:\n  SECRET_ACCESS_KEY: '*not base64*'\n"
        "---\nkind: Secret\nmetadata:\n  name: odd\n  annotations: [s3-endpoint]\n"
    )
    source = DirectorySecretSource(tmp_path)
    no_endpoint = r"annotation 's3-endpoint' is required.*a\.yaml"
    with pytest.raises(InvalidSecretError, match=no_endpoint):
        await source.get_s3_secret("default", "no-endpoint")
    with pytest.raises(InvalidSecretError, match=r"data\.SECRET_ACCESS_KEY is not base64"):
        await source.get_s3_secret("default", "bad-b64")
    with pytest.raises(InvalidSecretError, match="must be mappings"):
        await source.get_s3_secret("default", "odd")


async def test_no_directory_or_a_missing_one_says_how_to_configure(tmp_path: Path) -> None:
    with pytest.raises(SecretNotFoundError, match="--secrets-dir"):
        await DirectorySecretSource(None).get_s3_secret("default", "x")
    with pytest.raises(SecretNotFoundError, match="does not exist"):
        await DirectorySecretSource(tmp_path / "nope").get_s3_secret("default", "x")
