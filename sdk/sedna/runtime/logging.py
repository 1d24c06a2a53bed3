"""Process logging: JSON lines or console text, with secrets redacted before output.

Redaction happens in a filter on the handler that :func:`configure_logging` installs, so
it covers every logger in the process that propagates to the root logger:

- values of ``extra=`` fields whose key looks secret (token, password, secret,
  authorization, access_key, secret_access_key, api_key, ...), at any nesting depth;
- ``Bearer <token>`` / ``Basic <credentials>`` and ``token=...``-style pairs in messages,
  string extras, exception text and stack traces;
- any value registered with :func:`register_secret` (the runtime registers every
  configured bearer token), wherever it appears.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any, Final

from pydantic import SecretStr

__all__ = [
    "REDACTED",
    "ConsoleFormatter",
    "JsonFormatter",
    "RedactingFilter",
    "configure_logging",
    "is_secret_key",
    "redact_text",
    "redact_value",
    "register_secret",
]

REDACTED: Final = "[REDACTED]"

# Secrets shorter than this are not redacted verbatim: replacing every occurrence of a
# 3-letter string would garble unrelated text. Pattern-based redaction still applies.
_MIN_REGISTERED_SECRET_LEN: Final = 8

_SECRET_WORDS = (
    r"token|tokens|password|passwd|passphrase|secret|secrets|authorization|"
    r"credential|credentials|api_?key|access_?key|private_?key|cookie|session_?id"
)
_SECRET_KEY_RE = re.compile(rf"(?:^|_)(?:{_SECRET_WORDS})(?:$|_)")
_CAMEL_BOUNDARY_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

_AUTH_SCHEME_RE = re.compile(r"(?i)\b(bearer|basic)(\s+)(?!\[REDACTED\])[^\s,;\"'\]}]+")
_KEY_VALUE_RE = re.compile(
    r"(?i)(\b[\w.-]*(?:token|password|passwd|secret|api[_-]?key|access[_-]?key|"
    r"private[_-]?key|authorization)[\w.-]*[\"']?\s*[:=]\s*)([\"']?)"
    # Not the value itself when it is "Bearer <token>": that rule keeps the scheme visible.
    r"(?!\[REDACTED\])(?!(?:bearer|basic)\s)([^\s\"',;&}\]]+)"
)

# LogRecord attributes that are not user extras (plus ones the formatters add later).
_RECORD_ATTRS: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)

# Marks handlers installed by configure_logging so a second call replaces them.
_HANDLER_MARK: Final = "_sedna_runtime_handler"

_secrets_lock = threading.Lock()
_secrets: set[str] = set()
_secrets_re: re.Pattern[str] | None = None


def register_secret(value: str | SecretStr | None) -> None:
    """Redact every future occurrence of ``value`` in log output.

    Parameters
    ----------
    value
        The secret; ``None``, empty and very short values (< 8 characters) are ignored.
    """
    global _secrets_re  # noqa: PLW0603 - one process-wide set, like the logging module's own state
    if value is None:
        return
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if len(text) < _MIN_REGISTERED_SECRET_LEN:
        return
    with _secrets_lock:
        if text in _secrets:
            return
        _secrets.add(text)
        # Longest first so a secret that contains another is replaced whole.
        ordered = sorted(_secrets, key=len, reverse=True)
        _secrets_re = re.compile("|".join(re.escape(s) for s in ordered))


def is_secret_key(key: str) -> bool:
    """Whether a field name looks like it holds a secret (``accessKey``, ``x-api-key``...).

    Parameters
    ----------
    key
        A mapping key or ``extra=`` field name.

    Returns
    -------
    bool
        True when its value must be redacted.
    """
    normalised = _CAMEL_BOUNDARY_RE.sub("_", key).lower().replace("-", "_").replace(".", "_")
    return _SECRET_KEY_RE.search(normalised) is not None


def redact_text(text: str) -> str:
    """Replace bearer/basic credentials, ``key=value`` secrets and registered secrets.

    Parameters
    ----------
    text
        Any text about to be logged.

    Returns
    -------
    str
        The text with secrets replaced by ``[REDACTED]``.
    """
    pattern = _secrets_re
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    text = _AUTH_SCHEME_RE.sub(rf"\1\2{REDACTED}", text)
    return _KEY_VALUE_RE.sub(rf"\1\2{REDACTED}", text)


def redact_value(value: Any, _depth: int = 0) -> Any:
    """Redact secrets inside a value: strings, and mappings/sequences recursively.

    Parameters
    ----------
    value
        A log field value.

    Returns
    -------
    Any
        A redacted copy (the caller's objects are never modified).
    """
    # Bound the recursion: log extras are small, and a cyclic structure must not hang logging.
    if _depth > 8:
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, SecretStr):
        return REDACTED
    if isinstance(value, Mapping):
        return {
            key: REDACTED
            if isinstance(key, str) and is_secret_key(key)
            else redact_value(item, _depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        # Plain list/tuple on purpose: a namedtuple cannot be rebuilt from one iterable.
        items = [redact_value(item, _depth + 1) for item in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, set | frozenset):
        return frozenset(redact_value(item, _depth + 1) for item in value)
    return value


class RedactingFilter(logging.Filter):
    """Rewrite a record in place so no formatter or later handler sees a secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the message, extras, exception text and stack info of ``record``.

        Parameters
        ----------
        record
            The record being emitted.

        Returns
        -------
        bool
            Always True: records are redacted, never dropped.
        """
        try:
            self._redact(record)
        except Exception:
            # A filter that raises would propagate into the caller's log call; and a record
            # that could not be redacted must not be written as is. Keep only a marker.
            for key in list(record.__dict__):
                if key not in _RECORD_ATTRS and not key.startswith("_"):
                    del record.__dict__[key]
            record.msg = f"{REDACTED} (log record could not be redacted)"
            record.args = None
            record.exc_info = None
            record.exc_text = None
            record.stack_info = None
        return True

    @staticmethod
    def _redact(record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:
            # A bad format string: logging itself reports it; redact what we have.
            message = str(record.msg)
        record.msg = redact_text(message)
        record.args = None
        for key in list(record.__dict__):
            if key in _RECORD_ATTRS or key.startswith("_"):
                continue
            value = record.__dict__[key]
            record.__dict__[key] = REDACTED if is_secret_key(key) else redact_value(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _RECORD_ATTRS and not key.startswith("_")
    }


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message`` and the extras."""

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record`` as a single-line JSON object.

        Parameters
        ----------
        record
            The (already redacted) record.

        Returns
        -------
        str
            The JSON text, without a trailing newline.
        """
        payload: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extras(record).items():
            # Core keys win; a clashing extra is kept under a prefixed name, not dropped.
            payload["extra_" + key if key in payload else key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            payload["exc_info"] = record.exc_text
        if record.stack_info:
            payload["stack_info"] = record.stack_info
        return json.dumps(payload, default=str, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    """Human-readable lines: ``ts LEVEL logger: message key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record`` for a terminal.

        Parameters
        ----------
        record
            The (already redacted) record.

        Returns
        -------
        str
            The text, possibly several lines when an exception is attached.
        """
        parts = [f"{_timestamp(record)} {record.levelname:<8} {record.name}: {record.getMessage()}"]
        for key, value in _extras(record).items():
            text = str(value)
            if not text or any(c.isspace() for c in text) or "=" in text:
                text = json.dumps(text, ensure_ascii=False)
            parts.append(f"{key}={text}")
        line = " ".join(parts)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


def configure_logging(
    level: str | int = "INFO",
    fmt: str = "json",
    *,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send all logging to one redacting handler on the root logger.

    Calling it again replaces the handler it installed before. Handlers installed by
    others on the root logger are kept, but get the redaction filter too.

    Parameters
    ----------
    level
        Root level: a name (``"debug"``, ``"INFO"``, ``"warn"``) or a ``logging`` constant.
    fmt
        ``"json"`` (one object per line, for collectors) or ``"console"`` (for humans).
    stream
        Where to write; standard error by default.

    Returns
    -------
    logging.Handler
        The installed handler.

    Raises
    ------
    ValueError
        Unknown level or format.
    """
    if fmt not in ("json", "console"):
        raise ValueError(f"log format must be 'json' or 'console', not {fmt!r}")
    if isinstance(level, str):
        name = level.strip().upper()
        name = "WARNING" if name == "WARN" else name
        resolved = logging.getLevelNamesMapping().get(name)
        if resolved is None:
            raise ValueError(f"unknown log level {level!r}")
        level = resolved
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    handler.addFilter(RedactingFilter())
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _HANDLER_MARK, False):
            root.removeHandler(old)
            old.close()
        elif not any(isinstance(f, RedactingFilter) for f in old.filters):
            # A handler someone else installed sees the same records; redact there too.
            old.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    return handler
