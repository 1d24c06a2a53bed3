"""How the GM's settings become its store and hub-state URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sedna_gm.app import hub_state_url, store_url
from sedna_gm.settings import GMSettings


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"store_url": "sqlite:///x.db", "namespace": "n"}, "sqlite:///x.db"),
        ({"store_url": "kubernetes"}, "kubernetes://"),
        ({"store_url": "kubernetes://"}, "kubernetes://"),
        (
            {"store_url": "kubernetes", "kubeconfig": Path("/etc/k c"), "namespace": "ns"},
            "kubernetes:///etc/k%20c?namespace=ns",
        ),
        # What the URL says wins over the separate flags.
        (
            {
                "store_url": "kubernetes:///a/b?context=x&namespace=mine",
                "kubeconfig": Path("/other"),
                "namespace": "n",
            },
            "kubernetes:///a/b?context=x&namespace=mine",
        ),
    ],
)
def test_store_url_applies_kubeconfig_and_namespace(
    values: dict[str, object], expected: str
) -> None:
    assert store_url(GMSettings(**values)) == expected


def test_hub_state_shares_a_sql_store_and_has_its_own_file_otherwise() -> None:
    assert hub_state_url(GMSettings(store_url="sqlite:///gm.db")) == "sqlite:///gm.db"
    assert hub_state_url(GMSettings(store_url="postgresql://u@h/db")) == "postgresql://u@h/db"
    assert hub_state_url(GMSettings(store_url="kubernetes://")) == "sqlite:///sedna-gm-hub.db"
    explicit = GMSettings(store_url="kubernetes://", hub_state_url="sqlite:///h.db")
    assert hub_state_url(explicit) == "sqlite:///h.db"
