"""``sedna validate``: check Sedna manifests offline and show every error with its field path."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sedna.resources.validation import DocumentResult, ValidationReport, validate_paths

__all__ = ["OutputFormat", "render_table", "validate_command"]


class OutputFormat(StrEnum):
    """How ``sedna validate`` prints its results."""

    table = "table"
    json = "json"


def _document_cell(result: DocumentResult) -> str:
    if not result.document:
        return "-"
    cell = str(result.document)
    if result.item is not None:
        cell += f" items[{result.item}]"
    return cell


def _object_cell(result: DocumentResult) -> str:
    if result.kind is None and result.name is None:
        return "-"
    return escape(result.label)


def _result_cell(result: DocumentResult) -> str:
    lines: list[str] = []
    if result.status == "valid":
        lines.append("[green]OK[/green]")
    elif result.status == "skipped":
        lines.append(f"[dim]skipped: {escape(result.reason or '')}[/dim]")
    for error in result.errors:
        where = f" [dim](line {error.line})[/dim]" if error.line else ""
        lines.append(f"[red]{escape(str(error))}[/red]{where}")
    for warning in result.warnings:
        where = f" [dim](line {warning.line})[/dim]" if warning.line else ""
        lines.append(f"[yellow]warning: {escape(str(warning))}[/yellow]{where}")
    return "\n".join(lines)


def render_table(report: ValidationReport, console: Console) -> None:
    """Print a report as a table followed by a one-line summary.

    Parameters
    ----------
    report
        What :func:`sedna.resources.validate_paths` returned.
    console
        Where to print.
    """
    table = Table(show_lines=True)
    table.add_column("File", overflow="fold")
    table.add_column("Doc", justify="right", no_wrap=True)
    table.add_column("Kind/Name", overflow="fold")
    table.add_column("Result", overflow="fold")
    for result in report.results:
        table.add_row(
            escape(result.source),
            _document_cell(result),
            _object_cell(result),
            _result_cell(result),
        )
    console.print(table)
    valid, invalid, skipped = (report.count(s) for s in ("valid", "invalid", "skipped"))
    colour = "green" if report.ok else "red"
    console.print(
        f"[{colour}]{valid} valid, {invalid} invalid, {skipped} skipped[/{colour}]",
        highlight=False,
    )


def validate_command(
    filename: Annotated[
        list[Path],
        typer.Option(
            "--filename",
            "-f",
            help="File or directory (searched recursively for .yaml, .yml, .json) to check; "
            "'-' reads standard input. Repeat for several.",
            show_default=False,
        ),
    ],
    output: Annotated[
        OutputFormat,
        typer.Option("--output", "-o", help="Output format.", case_sensitive=False),
    ] = OutputFormat.table,
) -> None:
    """Check Sedna manifests offline against the sedna.io/v1alpha1 schemas.

    Every document is checked as the API server would check it with Sedna's CRDs installed;
    documents of other API groups are skipped. Exits with status 1 when anything is invalid.

    Parameters
    ----------
    filename
        Files, directories or ``-`` (stdin).
    output
        ``table`` (default) or ``json``.

    Raises
    ------
    typer.Exit
        With code 1 when any document or path is invalid.
    """
    report = validate_paths(filename)
    if output is OutputFormat.json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        render_table(report, Console())
    if not report.ok:
        raise typer.Exit(code=1)
