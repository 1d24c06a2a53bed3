"""JSON and console log formats, and secret redaction."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest
from pydantic import SecretStr

from sedna.runtime import REDACTED, configure_logging, redact_text, register_secret
from sedna.runtime.logging import is_secret_key


def _json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_format_one_object_per_line() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    log = logging.getLogger("sedna.test.json")
    log.info("hello %s", "world", extra={"job": "fl-1", "round": 3})
    log.debug("not shown at INFO")
    try:
        raise RuntimeError("kaput")
    except RuntimeError:
        log.exception("failed", extra={"ts": "clash"})

    lines = _json_lines(stream)
    assert len(lines) == 2
    first = lines[0]
    assert first["level"] == "INFO"
    assert first["logger"] == "sedna.test.json"
    assert first["message"] == "hello world"
    assert first["job"] == "fl-1"
    assert first["round"] == 3
    assert first["ts"].endswith("Z")
    assert "T" in first["ts"]
    second = lines[1]
    assert second["level"] == "ERROR"
    assert "RuntimeError: kaput" in second["exc_info"]
    assert second["extra_ts"] == "clash"  # an extra never overwrites a core field


def test_console_format_is_human_readable() -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", "console", stream=stream)
    logging.getLogger("sedna.test.console").debug(
        "model loaded", extra={"model": "yolo v5", "ms": 12}
    )
    line = stream.getvalue().strip()
    assert " DEBUG    sedna.test.console: model loaded" in line
    assert 'model="yolo v5"' in line
    assert "ms=12" in line


def test_reconfiguring_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("INFO", "json", stream=first)
    configure_logging("INFO", "json", stream=second)
    logging.getLogger("sedna.test.once").info("once")
    assert first.getvalue() == ""
    assert len(_json_lines(second)) == 1


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="log format"):
        configure_logging("INFO", "xml")
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("LOUD", "json")


def test_secrets_are_redacted_from_extras_and_messages() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    log = logging.getLogger("sedna.test.redact")
    log.info(
        "connecting",
        extra={
            "token": "t-123456789",
            "password": "hunter2",
            "secret_access_key": "AKIAxxxxSECRET",
            "accessKey": "minio-access",
            "headers": {"Authorization": "Bearer abc.def.ghi", "x-request-id": "r-1"},
            "endpoint": "s3.local:9000",
            "api_key": SecretStr("k-1"),
        },
    )
    log.info("got header authorization: Bearer eyJhbGciOi.payload.sig from peer")
    log.info("url with password=hunter2&user=bob")
    log.warning("retrying", extra={"detail": "server said token=abc123456 is stale"})

    text = stream.getvalue()
    for secret in (
        "t-123456789",
        "hunter2",
        "AKIAxxxxSECRET",
        "minio-access",
        "abc.def.ghi",
        "eyJhbGciOi",
        "abc123456",
    ):
        assert secret not in text, secret
    first, second, third, fourth = _json_lines(stream)
    assert first["token"] == REDACTED
    assert first["secret_access_key"] == REDACTED
    assert first["accessKey"] == REDACTED
    assert first["headers"] == {"Authorization": REDACTED, "x-request-id": "r-1"}
    assert first["endpoint"] == "s3.local:9000"
    assert first["api_key"] == REDACTED
    assert second["message"] == f"got header authorization: Bearer {REDACTED} from peer"
    assert third["message"] == f"url with password={REDACTED}&user=bob"
    assert fourth["detail"] == f"server said token={REDACTED} is stale"


def test_registered_secret_is_redacted_anywhere() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "console", stream=stream)
    register_secret(SecretStr("Zq8-registered-secret"))
    log = logging.getLogger("sedna.test.registered")
    log.info("value is Zq8-registered-secret, see?", extra={"note": "(Zq8-registered-secret)"})
    try:
        raise ValueError("bad credential Zq8-registered-secret")
    except ValueError:
        log.exception("oops")
    text = stream.getvalue()
    assert "Zq8-registered-secret" not in text
    assert text.count(REDACTED) >= 3


def test_short_registered_values_are_ignored() -> None:
    register_secret("abc")
    assert redact_text("abc abc") == "abc abc"


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("token", True),
        ("auth_token", True),
        ("refreshToken", True),
        ("password", True),
        ("db-password", True),
        ("secret", True),
        ("client_secret", True),
        ("Authorization", True),
        ("access_key", True),
        ("secret_access_key", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("x-api-key", True),
        ("apiKey", True),
        ("model", False),
        ("endpoint", False),
        ("tokenizer", False),
        ("keyframe", False),
    ],
)
def test_secret_key_detection(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_unredactable_record_is_replaced_not_raised() -> None:
    class Hostile(dict[str, str]):
        def items(self) -> Any:
            raise RuntimeError("no")

    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    logging.getLogger("sedna.test.hostile").info("x", extra={"payload": Hostile(a="b")})
    (line,) = _json_lines(stream)
    assert line["message"].startswith(REDACTED)
    assert "payload" not in line
