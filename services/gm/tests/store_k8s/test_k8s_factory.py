"""``open_store`` with kubernetes URLs, against the API server emulator through a kubeconfig."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from sedna_gm.store import StoreUnavailableError
from sedna_gm.store.factory import open_store
from sedna_gm.store.kubernetes import KubernetesResourceStore

contract = sys.modules["sedna_store_contract"]  # loaded by conftest.py

TOKEN = "kube-token-123"


def write_kubeconfig(path: Path, server: str, *, current: str = "sedna") -> Path:
    """A kubeconfig with context ``sedna`` on ``server`` and ``dead`` on a closed port."""
    path.write_text(
        f"""
apiVersion: v1
kind: Config
clusters:
- name: emu
  cluster: {{server: "{server}"}}
- name: nowhere
  cluster: {{server: "http://127.0.0.1:9"}}
users:
- name: gm
  user: {{token: {TOKEN}}}
contexts:
- name: sedna
  context: {{cluster: emu, user: gm, namespace: default}}
- name: dead
  context: {{cluster: nowhere, user: gm}}
current-context: {current}
"""
    )
    return path


def last_authorization(cluster: Any) -> str:
    header: str = list(cluster.emulator)[-1].headers["Authorization"]
    return header


async def test_kubeconfig_path_context_and_namespace(cluster: Any, tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "my config", cluster.host, current="dead")
    url = f"kubernetes://{kubeconfig.as_posix().replace(' ', '%20')}?context=sedna&namespace=team"
    store = open_store(url)
    assert isinstance(store, KubernetesResourceStore)
    assert store.host == cluster.host
    assert store.namespace == "team"
    assert repr(store) == f"KubernetesResourceStore({cluster.host!r}, namespace='team')"
    await store.start()
    try:
        await store.create(contract.dataset("a", namespace="team"))
        await store.create(contract.dataset("b", namespace="default"))
        assert last_authorization(cluster) == f"Bearer {TOKEN}"
        # "Every namespace" is narrowed to the URL's namespace.
        assert [o.name for o in (await store.list("Dataset")).items] == ["a"]
    finally:
        await store.close()


@pytest.mark.parametrize("url", ["kubernetes://", "kubernetes", "KUBERNETES:"])
async def test_default_kubeconfig_outside_a_pod(
    url: str, cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "config", cluster.host)))
    store = open_store(url)
    assert isinstance(store, KubernetesResourceStore)
    assert store.namespace is None
    await store.start()
    try:
        created = await store.create(contract.dataset())
        assert await store.get("Dataset", "default", "d1") == created
    finally:
        await store.close()


def test_in_a_pod_uses_the_service_account(monkeypatch: pytest.MonkeyPatch) -> None:
    # No service-account token is mounted here: the in-cluster configuration is what failed.
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(StoreUnavailableError, match="in-cluster service account"):
        open_store("kubernetes://")


def test_configuration_that_cannot_load(tmp_path: Path, cluster: Any) -> None:
    with pytest.raises(StoreUnavailableError, match="kubeconfig") as info:
        open_store(f"kubernetes://{tmp_path / 'missing'}")
    assert str(tmp_path / "missing") in str(info.value)
    kubeconfig = write_kubeconfig(tmp_path / "config", cluster.host)
    with pytest.raises(StoreUnavailableError, match="nope"):
        open_store(f"kubernetes://{kubeconfig}?context=nope")


def test_without_the_kubernetes_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kubernetes", None)  # as if the k8s extra were missing
    monkeypatch.delitem(sys.modules, "sedna_gm.store.kubernetes")
    with pytest.raises(StoreUnavailableError, match=r"pip install 'sedna\[k8s\]'"):
        open_store("kubernetes://")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("kubernetes://api.example:6443", "names a kubeconfig file, not a host"),
        ("kubernetes:///k.yaml?namespace=a&timeout=3", r"unknown option\(s\) timeout"),
        ("kubernetes:///k.yaml?namespace=a&namespace=b", r"option\(s\) namespace given twice"),
        ("kubernetes://?namespace=Not_Valid", "not a valid namespace name"),
        ("kubernetes:///k.yaml#frag", "no #fragment"),
        ("redis://localhost", "scheme 'redis' is not supported"),
        ("/var/lib/sedna.db", "has no scheme"),
    ],
)
def test_bad_urls_are_value_errors_naming_the_url(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        open_store(url)
    assert repr(url) in str(info.value)
    assert "kubernetes://" in str(info.value)  # says what would work


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://admin:s3cret@cache:6379/0", "redis://admin:***@cache:6379/0"),
        ("mongodb://u:s3cret@a@h/db", "mongodb://u:***@h/db"),
        ("admin:s3cret@db.example/sedna", "admin:***@db.example/sedna"),
        ("mysql://h/db?user=u&password=s3cret", "mysql://h/db?user=u&password=***"),
        ("kubernetes://u:s3cret@api:6443", "kubernetes://u:***@api:6443"),
    ],
)
def test_messages_never_carry_a_password(url: str, shown: str) -> None:
    with pytest.raises(ValueError, match="store URL") as info:
        open_store(url)
    assert "s3cret" not in str(info.value)
    assert repr(shown) in str(info.value)
