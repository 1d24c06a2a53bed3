"""Open the ResourceStore named by a URL (the GM's ``--store-url``)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, parse_qs, parse_qsl, unquote, urlencode, urlsplit

from sedna_gm.store.errors import StoreUnavailableError
from sedna_gm.store.port import ResourceStore
from sedna_gm.store.sql import SqlResourceStore

if TYPE_CHECKING:
    from sedna_gm.store.kubernetes import KubernetesResourceStore

__all__ = ["open_store"]

_SQL_SCHEMES = frozenset(
    {
        "sqlite",
        "sqlite+aiosqlite",
        "postgres",
        "postgresql",
        "postgresql+psycopg",
        "postgresql+psycopg_async",
    }
)
_KUBERNETES = "kubernetes"
_KUBERNETES_OPTIONS = ("namespace", "context")
_KNOWN = "sqlite://, postgresql://, kubernetes://"
_SECRET_WORDS = ("password", "passwd", "secret", "token")
# ``user:password@`` at the start or after ``//``; greedy up to the authority's last "@".
_PASSWORD = re.compile(r"(?P<user>(?:^|//)[^/?#@:]*):[^/?#]*@")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def open_store(url: str) -> ResourceStore:
    """Return an (unstarted) store for ``url``; call ``await store.start()`` next.

    Parameters
    ----------
    url
        One of:

        - ``sqlite:///path/to/sedna.db``;
        - ``postgresql://user:password@host:port/db``;
        - ``kubernetes://`` (or just ``kubernetes``): the cluster's API server, with the Sedna
          objects as ``sedna.io`` custom resources; the pod's service account when running in
          a pod, else the default kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``);
        - ``kubernetes:///path/to/kubeconfig``: that kubeconfig file (percent-encode special
          characters in the path).

        A kubernetes URL takes the query options ``context=NAME`` (a kubeconfig context other
        than the current one; implies a kubeconfig, even in a pod) and ``namespace=NS`` (the
        GM works in that namespace only, for namespace-scoped RBAC), e.g.
        ``kubernetes:///etc/sedna/kubeconfig?context=edge&namespace=sedna``.

    Returns
    -------
    ResourceStore
        A :class:`~sedna_gm.store.sql.SqlResourceStore` or a
        :class:`~sedna_gm.store.kubernetes.KubernetesResourceStore` (which closes its API
        client when closed).

    Raises
    ------
    ValueError
        The URL has no scheme, one no adapter handles, or a malformed kubernetes part (a host,
        an unknown or repeated option, an invalid namespace); the message quotes the URL
        without its password.
    sedna_gm.store.errors.StoreUnavailableError
        The kubeconfig or in-cluster configuration cannot be loaded, or the ``kubernetes``
        client (the ``k8s`` extra) is not installed.
    """
    try:
        parts = urlsplit(url.strip())
    except ValueError as exc:  # e.g. an unbalanced "[" in the host
        raise ValueError(
            f"store URL {_redacted(url)!r} is malformed ({exc}); expected one of {_KNOWN}"
        ) from None
    scheme = parts.scheme.lower()
    if scheme in _SQL_SCHEMES:
        return SqlResourceStore(url)
    if scheme == _KUBERNETES or (not scheme and parts.path.lower() == _KUBERNETES):
        return _open_kubernetes(_redacted(url), parts if scheme else urlsplit("kubernetes://"))
    shown = _redacted(url)
    if not scheme:
        raise ValueError(f"store URL {shown!r} has no scheme; expected one of {_KNOWN}")
    raise ValueError(
        f"store URL {shown!r}: scheme {scheme!r} is not supported; expected one of {_KNOWN}"
    )


def _open_kubernetes(shown: str, parts: SplitResult) -> KubernetesResourceStore:
    """A store on the cluster named by a kubernetes URL (``shown`` is it redacted)."""
    if parts.netloc:
        raise ValueError(
            f"store URL {shown!r}: a kubernetes URL names a kubeconfig file, not a host; use "
            "kubernetes:///path/to/kubeconfig, or kubernetes:// for the in-cluster or default "
            "configuration"
        )
    if parts.fragment:
        raise ValueError(f"store URL {shown!r}: a kubernetes URL takes no #fragment")
    options = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(options) - set(_KUBERNETES_OPTIONS))
    if unknown:
        raise ValueError(
            f"store URL {shown!r}: unknown option(s) {', '.join(unknown)}; a kubernetes URL "
            f"takes {' and '.join(_KUBERNETES_OPTIONS)}"
        )
    repeated = sorted(k for k, v in options.items() if len(v) > 1)
    if repeated:
        raise ValueError(f"store URL {shown!r}: option(s) {', '.join(repeated)} given twice")
    namespace = options.get("namespace", [""])[0] or None
    if namespace is not None and not _DNS1123_LABEL.fullmatch(namespace):
        raise ValueError(
            f"store URL {shown!r}: namespace {namespace!r} is not a valid namespace name "
            "(lowercase letters, digits and '-', at most 63)"
        )
    context = options.get("context", [""])[0] or None
    kubeconfig = unquote(parts.path) or None
    try:
        # Imported here: the kubernetes client is an extra, needed only for this store.
        from sedna_gm.store.kubernetes import (  # noqa: PLC0415
            KubernetesResourceStore,
            kubernetes_client_from_config,
            running_in_cluster,
        )
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("kubernetes"):
            raise
        raise StoreUnavailableError(
            f"store URL {shown!r} needs the Kubernetes client, which is not installed: "
            "pip install 'sedna[k8s]'"
        ) from None
    in_cluster = kubeconfig is None and context is None and running_in_cluster()
    api_client = kubernetes_client_from_config(kubeconfig, context, in_cluster)
    return KubernetesResourceStore(api_client, namespace=namespace, owns_client=True)


def _redacted(url: str) -> str:
    """``url`` for messages: no password, no value of a secret-looking query option."""
    text = _PASSWORD.sub(r"\g<user>:***@", url.strip())
    base, question, rest = text.partition("?")
    if not question:
        return text
    query, hash_, fragment = rest.partition("#")
    pairs = [
        (key, "***" if any(word in key.lower() for word in _SECRET_WORDS) else value)
        for key, value in parse_qsl(query, keep_blank_values=True)
    ]
    return f"{base}?{urlencode(pairs, safe='/:*')}{hash_}{fragment}"
