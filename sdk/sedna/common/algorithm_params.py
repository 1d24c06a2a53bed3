"""Algorithm choices injected by the controller as environment variables.

For a resource field such as ``hardExampleMining: {name: IBT, parameters: [{key, value}]}`` the
controller sets ``HEM_NAME=IBT`` and ``HEM_PARAMETERS='[{"key": "threshold_img", "value":
"0.9"}]'``. :func:`get_algorithm_from_env` turns those two variables into upstream's
``{"method": name, "param": {key: value}}`` dict (upstream
``Context.get_algorithm_from_api``). Values stay as they arrived (normally strings); the
algorithm classes convert them, as upstream's do.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["get_algorithm_from_env", "parse_algorithm_parameters"]


def _env(environ: Mapping[str, str], name: str) -> str | None:
    """Upstream ``Context.get_parameters``: exact name, then upper-case; empty counts as unset."""
    value = environ.get(name) or environ.get(name.upper())
    return value or None


def parse_algorithm_parameters(raw: str | None, *, variable: str) -> dict[str, Any]:
    """Parse a ``<ALGORITHM>_PARAMETERS`` value: a JSON list of ``{"key", "value"}`` objects.

    Parameters
    ----------
    raw : str or None
        The variable's value; None, empty or blank means no parameters.
    variable : str
        The variable's name, used in error messages.

    Returns
    -------
    dict
        ``{key: value}``; a missing ``value`` becomes ``""`` as upstream. Later duplicates
        of a key win.

    Raises
    ------
    ValueError
        If ``raw`` is not JSON, not a list, or an item is not an object with a non-empty
        string ``key``. The message names ``variable`` and quotes the value.
    """
    if raw is None or not raw.strip():
        return {}
    try:
        items = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{variable} must be a JSON list of {{'key', 'value'}} objects; "
            f"got {raw!r} ({err.msg} at char {err.pos})"
        ) from None
    if not isinstance(items, list):
        raise ValueError(
            f"{variable} must be a JSON list of {{'key', 'value'}} objects; got {raw!r}"
        )
    params: dict[str, Any] = {}
    for index, item in enumerate(items):
        key = item.get("key") if isinstance(item, dict) else None
        if not isinstance(key, str) or not key:
            raise ValueError(
                f"{variable}[{index}] must be an object with a non-empty string 'key'; "
                f"got {item!r} in {raw!r}"
            )
        params[key] = item.get("value", "")
    return params


def get_algorithm_from_env(
    algorithm: str, environ: Mapping[str, str] | None = None, **param: Any
) -> dict[str, Any]:
    """Read ``<algorithm>_NAME`` / ``<algorithm>_PARAMETERS`` (upstream ``get_algorithm_from_api``).

    Parameters
    ----------
    algorithm : str
        Variable prefix, e.g. ``"HEM"`` or ``"UTD"``.
    environ : Mapping[str, str], optional
        Where to read the variables; defaults to ``os.environ``.
    **param
        Overrides merged on top of the parsed parameters.

    Returns
    -------
    dict
        ``{"method": name, "param": {...}}``, or ``{}`` when ``<algorithm>_NAME`` is unset or
        empty (``**param`` is then ignored, as upstream).

    Raises
    ------
    ValueError
        If ``<algorithm>_PARAMETERS`` is malformed (see :func:`parse_algorithm_parameters`).
    """
    env = os.environ if environ is None else environ
    name = _env(env, f"{algorithm}_NAME")
    if name is None:
        return {}
    variable = f"{algorithm}_PARAMETERS"
    params = parse_algorithm_parameters(_env(env, variable), variable=variable)
    params.update(param)
    return {"method": name, "param": params}
