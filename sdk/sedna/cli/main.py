"""The ``sedna`` command line: the root application and its global options."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from sedna import __version__
from sedna.cli.demo import demo_app
from sedna.cli.resources import register_resource_commands
from sedna.cli.up import up_command
from sedna.cli.validate import validate_command

app = typer.Typer(
    name="sedna",
    help=(
        "Sedna: edge-cloud synergy AI. Joint inference, incremental, federated and lifelong "
        "learning for edge applications, on Kubernetes or on one machine."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command(
    "validate",
    help=(
        "Check Sedna manifests (sedna.io/v1alpha1 YAML or JSON) against the resource schemas, "
        "offline, and print every error with the path of the field at fault."
    ),
)(validate_command)


app.command(
    "up",
    help=(
        "Run Sedna on this machine without Kubernetes: a GlobalManager on SQLite and one "
        "LocalController per node, with state kept in --data-dir. Ctrl-C stops everything."
    ),
)(up_command)

register_resource_commands(app)

app.add_typer(
    demo_app,
    name="demo",
    help="Run a feature end to end on this machine: [bold]sedna demo joint-inference[/bold].",
)


def _print_version(value: bool) -> None:
    if value:
        Console().print(f"sedna {__version__}")
        raise typer.Exit


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            help="Print the Sedna version and exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Sedna command line."""


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
