"""Console-script entry points for services: flags generated from the settings model.

Every service's ``main()`` is :func:`service_main` with its settings class and setup
function, so every service takes the same ``--config``, ``--port``, ``--tls-cert-file`` ...
flags, documents the environment variable behind each one in ``--help``, and reports bad
values as ``field: message`` lines with exit code 2 instead of a stack trace.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from sedna import __version__
from sedna.runtime.config import (
    ConfigError,
    ServiceSettings,
    format_validation_error,
    load_settings,
)
from sedna.runtime.server import SetupFn, run_service

__all__ = ["EXIT_BAD_CONFIG", "build_parser", "parse_settings", "service_main"]

S = TypeVar("S", bound=ServiceSettings)

EXIT_BAD_CONFIG = 2
"""Exit code for unusable configuration (the argparse convention for usage errors)."""


def _is_secret(field: FieldInfo) -> bool:
    annotation = repr(field.annotation)
    return "SecretStr" in annotation


def _is_bool(field: FieldInfo) -> bool:
    return field.annotation is bool


def _default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "empty"
    default = field.default
    return "none" if default is None else str(default)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser(
    settings_cls: type[ServiceSettings], prog: str, description: str
) -> argparse.ArgumentParser:
    """Build the argument parser of a service: one flag per setting, plus ``--config``.

    Secret settings (tokens, passwords) get no flag on purpose: command lines are visible
    to every user of the machine (``ps``); they come from the environment or files.

    Parameters
    ----------
    settings_cls
        The service's settings class; its fields, descriptions and ``env_prefix`` make the
        flags and their help.
    prog
        Program name shown in usage lines, e.g. ``sedna-gm``.
    description
        What the service does, shown at the top of ``--help``.

    Returns
    -------
    argparse.ArgumentParser
        Parses into a namespace whose attributes are the setting names (``None`` when a
        flag was not given) plus ``config`` and ``check_config``.
    """
    prefix = str(settings_cls.model_config.get("env_prefix", ""))
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=(
            "Precedence: flags > environment variables > the YAML config file > defaults. "
            f"The config file is --config or ${settings_cls.config_file_env}; its keys are the "
            "setting names with underscores (e.g. 'metrics_port: 9091'). Secrets such as "
            f"tokens are read from the environment ({prefix}AUTH_TOKENS) or files "
            "(--auth-token-file), never from flags."
        ),
    )
    parser.add_argument("--version", action="version", version=f"{prog} {__version__}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help=f"YAML config file [env: {settings_cls.config_file_env}].",
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="Validate the configuration, print the effective settings as JSON "
        "(secrets masked) and exit.",
    )
    for name, field in settings_cls.model_fields.items():
        if _is_secret(field):
            continue
        env = f"{prefix}{name.upper()}"
        help_text = (field.description or name.replace("_", " ").capitalize()).rstrip(".")
        help_text += f". [env: {env}; default: {_default_text(field)}]"
        # argparse %-formats help strings; a literal '%' in a description or default would
        # make --help crash.
        help_text = help_text.replace("%", "%%")
        if _is_bool(field):
            parser.add_argument(
                _flag(name),
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(
                _flag(name), dest=name, metavar="VALUE", default=None, help=help_text
            )
    return parser


def _overrides(
    namespace: argparse.Namespace, settings_cls: type[ServiceSettings]
) -> dict[str, Any]:
    return {
        name: getattr(namespace, name)
        for name in settings_cls.model_fields
        if getattr(namespace, name, None) is not None
    }


def parse_settings(
    settings_cls: type[S], argv: Sequence[str] | None, prog: str, description: str
) -> tuple[S, bool]:
    """Parse the command line and load the settings with the documented precedence.

    Parameters
    ----------
    settings_cls
        The service's settings class.
    argv
        Arguments without the program name; ``None`` reads ``sys.argv``.
    prog, description
        As for :func:`build_parser`.

    Returns
    -------
    tuple[S, bool]
        The settings and whether ``--check-config`` was given.

    Raises
    ------
    SystemExit
        With code 2 and a ``field: message`` report on stderr when the configuration is
        unusable (and from argparse for ``--help``, ``--version`` and unknown flags).
    """
    parser = build_parser(settings_cls, prog, description)
    namespace = parser.parse_args(argv)
    try:
        settings = load_settings(
            settings_cls, namespace.config, _overrides(namespace, settings_cls)
        )
    except ValidationError as exc:
        print(f"{prog}: invalid configuration:", file=sys.stderr)
        for line in format_validation_error(exc).splitlines():
            print(f"  {_flag_for_line(line)}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None
    return settings, bool(namespace.check_config)


def _flag_for_line(line: str) -> str:
    # "metrics_port: must differ ..." -> "metrics_port (--metrics-port): must differ ..."
    field, sep, message = line.partition(": ")
    if not sep or not field.isidentifier():
        return line
    return f"{field} ({_flag(field)}): {message}"


def _effective_settings(settings: ServiceSettings) -> dict[str, Any]:
    # JSON mode renders SecretStr values as "**********", so nothing secret is printed.
    return settings.model_dump(mode="json")


def service_main(
    settings_cls: type[S],
    setup_fn: SetupFn,
    *,
    prog: str,
    description: str,
    argv: Sequence[str] | None = None,
) -> int:
    """Run a service from the command line: parse flags, load settings, serve until a signal.

    Parameters
    ----------
    settings_cls
        The service's settings class.
    setup_fn
        ``setup_fn(server)``, sync or async: registers the service's servicers.
    prog
        Program name (the console script), e.g. ``sedna-gm``.
    description
        One paragraph for ``--help``.
    argv
        Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns
    -------
    int
        0 after a clean drain or a successful ``--check-config``, 1 when the server could
        not start, 2 for unusable configuration.
    """
    try:
        settings, check_only = parse_settings(settings_cls, argv, prog, description)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        return EXIT_BAD_CONFIG
    if check_only:
        print(json.dumps(_effective_settings(settings), indent=2, sort_keys=True))
        return 0
    return run_service(settings, setup_fn)
