"""A :class:`~sedna_gm.workloads.storage.SecretSource` over a directory of Secret manifests.

The local mode has no Kubernetes API to read Secrets from, so the GM reads them from a
directory (``--secrets-dir``): the same ``kind: Secret`` YAML (or JSON) files a user would
``kubectl apply``, any number per file (``---`` separated, or a ``kind: List``), ``data``
base64 or ``stringData`` plain. A Secret without ``metadata.namespace`` is in ``default``.

The directory is read again on every lookup (no cache, no file watch): a changed, added or
removed file counts from the next lookup on. When two files hold the same namespace/name, the
one whose file name sorts last wins (the order ``kubectl apply -f DIR`` would apply them in).
Files that cannot be read or parsed are skipped and named in the not-found message (by file
name and line only: a parse error's text could quote a secret value).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from sedna_gm.workloads.port import WorkloadError
from sedna_gm.workloads.storage import S3Secret, SecretNotFoundError

__all__ = ["DEFAULT_SECRET_NAMESPACE", "DirectorySecretSource", "InvalidSecretError"]

DEFAULT_SECRET_NAMESPACE = "default"
_SUFFIXES = frozenset({".yaml", ".yml", ".json"})


class InvalidSecretError(WorkloadError):
    """The Secret exists but is not usable S3 credentials (no ``s3-endpoint``, bad base64)."""


class DirectorySecretSource:
    """Secrets from the manifests in ``directory`` (None: no directory configured).

    Parameters
    ----------
    directory
        Where the manifests are; None means the GM was started without ``--secrets-dir``,
        and every lookup fails with a message saying how to configure one.
    """

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    def __repr__(self) -> str:
        return f"DirectorySecretSource({str(self.directory)!r})"

    async def get_s3_secret(self, namespace: str, name: str) -> S3Secret:
        """Return the S3 credentials of Secret ``namespace/name``.

        Raises
        ------
        SecretNotFoundError
            No directory, or no manifest in it defines that Secret.
        InvalidSecretError
            The Secret lacks the ``s3-endpoint`` annotation or has non-base64 ``data``.
        """
        return await asyncio.to_thread(self._lookup, namespace, name)

    def _lookup(self, namespace: str, name: str) -> S3Secret:
        what = f"secret {namespace}/{name}"
        if self.directory is None:
            raise SecretNotFoundError(
                f"{what} not found: the GlobalManager has no secrets directory "
                "(start it with --secrets-dir DIR, or `sedna up --secrets-dir DIR`)"
            )
        try:
            files = sorted(
                p for p in self.directory.iterdir() if p.suffix in _SUFFIXES and p.is_file()
            )
        except FileNotFoundError:
            raise SecretNotFoundError(
                f"{what} not found: the secrets directory {self.directory} does not exist"
            ) from None
        except OSError as exc:
            raise SecretNotFoundError(
                f"{what} not found: cannot list the secrets directory {self.directory} "
                f"({exc.strerror})"
            ) from None
        found: tuple[Path, Mapping[str, Any]] | None = None
        problems: list[str] = []
        for path in files:
            try:
                documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                where = f" at line {mark.line + 1}" if mark is not None else ""
                problems.append(f"{path.name}: not valid YAML{where}")
                continue
            except UnicodeDecodeError:
                problems.append(f"{path.name}: not UTF-8 text")
                continue
            except OSError as exc:
                problems.append(f"{path.name}: cannot be read ({exc.strerror})")
                continue
            for manifest in _secrets_in(documents):
                meta = manifest.get("metadata") or {}
                if not isinstance(meta, Mapping):
                    continue
                ns = str(meta.get("namespace") or DEFAULT_SECRET_NAMESPACE)
                if ns == namespace and str(meta.get("name", "")) == name:
                    found = (path, manifest)
        if found is None:
            detail = f"; skipped: {', '.join(problems)}" if problems else ""
            raise SecretNotFoundError(f"{what} not found in {self.directory}{detail}")
        path, manifest = found
        try:
            return S3Secret.from_manifest(manifest)
        except WorkloadError as exc:
            raise InvalidSecretError(f"{exc} (in {path.name})") from None
        except (AttributeError, TypeError):
            # A manifest of the wrong shape (e.g. annotations or data not a mapping).
            raise InvalidSecretError(
                f"{what} (in {path.name}): metadata.annotations, data and stringData must be "
                "mappings"
            ) from None


def _secrets_in(documents: list[Any]) -> Iterator[Mapping[str, Any]]:
    """The ``kind: Secret`` manifests among ``documents`` (``kind: List`` items included)."""
    for doc in documents:
        if not isinstance(doc, Mapping):
            continue
        if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            yield from _secrets_in(doc["items"])
        elif doc.get("kind") == "Secret":
            yield doc
