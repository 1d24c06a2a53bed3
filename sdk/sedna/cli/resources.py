"""Registration of the commands that talk to GlobalManager's resource and node APIs."""

from __future__ import annotations

import typer

from sedna.cli.apply import apply_command
from sedna.cli.delete import delete_command
from sedna.cli.describe import describe_command
from sedna.cli.get import get_command
from sedna.cli.logs import logs_command
from sedna.cli.nodes import nodes_command

__all__ = ["register_resource_commands"]


def register_resource_commands(app: typer.Typer) -> None:
    """Add ``apply``, ``get``, ``describe``, ``delete``, ``nodes`` and ``logs`` to ``app``.

    Parameters
    ----------
    app
        The root ``sedna`` application.
    """
    app.command(
        "apply",
        help="Create or update Sedna objects from manifests (validated locally first).",
    )(apply_command)
    app.command(
        "get",
        help="Show Sedna objects as a table (the kind's columns), YAML or JSON; -w watches.",
    )(get_command)
    app.command("describe", help="Show one Sedna object in detail.")(describe_command)
    app.command("delete", help="Delete Sedna objects by name or from manifests.")(delete_command)
    app.command("nodes", help="List the nodes GlobalManager knows and their connection.")(
        nodes_command
    )
    app.command("logs", help="Print a worker's output from its node's LocalController.")(
        logs_command
    )
