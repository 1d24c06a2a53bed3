"""Read the per-node hub tokens (the GM's ``--node-token-file``)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

__all__ = ["NodeTokenFileError", "read_node_tokens"]


class NodeTokenFileError(ValueError):
    """The node token file is missing or malformed; the message names the file and entry."""


def read_node_tokens(path: Path) -> dict[str, str]:
    """Parse a YAML or JSON mapping of node name to bearer token.

    Parameters
    ----------
    path
        The file, e.g. a mounted Kubernetes Secret key. Example content::

            edge-1: 3f9c...
            edge-2: 77ab...

    Returns
    -------
    dict
        Node name -> token.

    Raises
    ------
    NodeTokenFileError
        The file cannot be read, is not a mapping, or has an empty name or token. Tokens
        never appear in the message.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise NodeTokenFileError(f"node token file {path}: {exc.strerror or exc}") from None
    try:
        # JSON is YAML, but a JSON syntax error reads better from the JSON parser.
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise NodeTokenFileError(f"node token file {path}: not valid YAML/JSON ({exc})") from None
    if not isinstance(data, dict):
        raise NodeTokenFileError(
            f"node token file {path}: expected a mapping of node name to token, "
            f"got {type(data).__name__}"
        )
    tokens: dict[str, str] = {}
    for node, token in data.items():
        if not isinstance(node, str) or not node:
            raise NodeTokenFileError(f"node token file {path}: node name {node!r} is not a name")
        if not isinstance(token, str) or not token.strip():
            raise NodeTokenFileError(
                f"node token file {path}: node {node!r} needs a non-empty string token"
            )
        tokens[node] = token.strip()
    return tokens
