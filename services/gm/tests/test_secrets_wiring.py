"""Where the GM reads credentialName Secrets: ``--secrets-dir`` in the local runtime."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from sedna.runtime.entrypoint import parse_settings
from sedna_gm.app import GlobalManager
from sedna_gm.controllers.dataset import DatasetController
from sedna_gm.settings import GMSettings
from sedna_gm.workloads.secret_files import DirectorySecretSource


def test_secrets_flags_parse(tmp_path: Path) -> None:
    argv = ["--secrets-dir", str(tmp_path), "--secret-refresh-seconds", "5"]
    settings, _ = parse_settings(GMSettings, argv, "sedna-gm", "")
    assert settings.secrets_dir == tmp_path
    assert settings.secret_refresh_seconds == 5
    defaults = GMSettings()
    assert defaults.secrets_dir is None
    assert defaults.secret_refresh_seconds == 30


def test_refresh_must_be_positive() -> None:
    with pytest.raises(ValueError, match="secret_refresh_seconds"):
        GMSettings(secret_refresh_seconds=0)


@pytest.mark.parametrize("configured", [True, False])
def test_local_runtime_reads_the_secrets_dir(tmp_path: Path, configured: bool) -> None:
    secrets_dir = tmp_path / "secrets" if configured else None
    settings = GMSettings(
        store_url=f"sqlite:///{tmp_path / 'gm.db'}",
        secrets_dir=secrets_dir,
        secret_refresh_seconds=7,
    )
    gm = GlobalManager(settings, CollectorRegistry())
    assert isinstance(gm.secrets, DirectorySecretSource)
    assert gm.secrets.directory == secrets_dir
    (controller,) = [c for c in gm.manager.controllers if c.name == "dataset"]
    reconciler = controller.reconciler
    assert isinstance(reconciler, DatasetController)
    assert reconciler.secrets is gm.secrets
    assert (reconciler.secret_refresh, reconciler.secret_retry) == (7, 7)
