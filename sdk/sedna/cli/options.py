"""Options shared by the CLI commands, and :func:`connection_options` that adds the connection ones.

Every command that talks to GlobalManager takes ``--server``/``SEDNA_SERVER``,
``--token``/``SEDNA_TOKEN``, ``--tls-ca`` and ``--timeout``; rather than declaring the four in
each signature, a command takes ``conn: Connection`` and is wrapped with
:func:`connection_options`, which declares them once, here.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from sedna.cli.client import DEFAULT_SERVER, Connection

__all__ = [
    "FilenameOpt",
    "NamespaceOpt",
    "ServerOpt",
    "TimeoutOpt",
    "TlsCaOpt",
    "TokenOpt",
    "connection_options",
]

FilenameOpt = Annotated[
    list[Path],
    typer.Option(
        "--filename",
        "-f",
        help="File or directory (searched recursively for .yaml, .yml, .json); '-' reads "
        "standard input. Repeat for several.",
        show_default=False,
    ),
]
NamespaceOpt = Annotated[
    str, typer.Option("--namespace", "-n", envvar="SEDNA_NAMESPACE", help="Namespace.")
]

ServerOpt = Annotated[
    str,
    typer.Option(
        "--server",
        "-s",
        envvar="SEDNA_SERVER",
        help="GlobalManager address HOST:PORT.",
        rich_help_panel="Connection",
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="SEDNA_TOKEN",
        help="Bearer token; prefer the SEDNA_TOKEN variable (command lines are visible to "
        "every user of the machine). Never printed.",
        show_default=False,
        rich_help_panel="Connection",
    ),
]
TlsCaOpt = Annotated[
    Path | None,
    typer.Option(
        "--tls-ca",
        envvar="SEDNA_TLS_CA",
        help="CA bundle (PEM) to verify the server; turns TLS on.",
        dir_okay=False,
        rich_help_panel="Connection",
    ),
]
TimeoutOpt = Annotated[
    float,
    typer.Option(
        "--timeout",
        min=0.1,
        help="Deadline of each call, in seconds.",
        rich_help_panel="Connection",
    ),
]

_KEYWORD = inspect.Parameter.KEYWORD_ONLY
_CONNECTION_PARAMETERS = (
    inspect.Parameter("server", _KEYWORD, default=DEFAULT_SERVER, annotation=ServerOpt),
    inspect.Parameter("token", _KEYWORD, default=None, annotation=TokenOpt),
    inspect.Parameter("tls_ca", _KEYWORD, default=None, annotation=TlsCaOpt),
    inspect.Parameter("timeout", _KEYWORD, default=10.0, annotation=TimeoutOpt),
)


def connection_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` the connection options; it receives them as ``conn: Connection``.

    Parameters
    ----------
    command
        A typer command function with a keyword parameter ``conn``.

    Returns
    -------
    Callable
        What to register with typer: ``command``'s parameters without ``conn``, then
        ``--server``, ``--token``, ``--tls-ca`` and ``--timeout``. It calls ``command`` with a
        :class:`Connection` made of them (channels open on first use) and closes that
        connection's channels when ``command`` returns or raises.
    """
    signature = inspect.signature(command, eval_str=True)
    if "conn" not in signature.parameters:
        raise TypeError(f"{command.__name__} needs a `conn: Connection` parameter")
    parameters = [p for p in signature.parameters.values() if p.name != "conn"]
    parameters += _CONNECTION_PARAMETERS

    @functools.wraps(command)
    def wrapper(
        *args: Any,
        server: str,
        token: str | None,
        tls_ca: Path | None,
        timeout: float,
        **kwargs: Any,
    ) -> None:
        with Connection(server, token, tls_ca, timeout) as conn:
            command(*args, conn=conn, **kwargs)

    # typer reads the parameters from the signature and their types from the annotations.
    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    wrapper.__annotations__["return"] = signature.return_annotation
    return wrapper
