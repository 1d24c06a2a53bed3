"""The upstream-compatible worker HTTP API: ``POST /sedna/workers/{worker-name}/info``.

Unmodified upstream workers (the Python ``sedna`` lib's ``JobBase.report_task_info``) POST
their status here as JSON; the answer is upstream's ``{"Status":200,"Message":"OK"}``. Errors
use the same shape with a ``field`` naming what is wrong.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from sedna.api.common.v1 import types_pb2
from sedna_lc.reports.intake import ReportError, WorkerReportIntake

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "REPORT_KINDS",
    "REPORT_STATUSES",
    "HttpReportServer",
    "build_app",
    "parse_report",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
REPORT_KINDS = ("train", "eval", "deploy", "inference")
REPORT_STATUSES = ("running", "completed", "failed")
_INTAKE_KEY: web.AppKey[WorkerReportIntake] = web.AppKey("intake", WorkerReportIntake)
_LIMIT_KEY: web.AppKey[int] = web.AppKey("max_body", int)


def _str_field(body: Mapping[str, Any], name: str, *, required: bool = False) -> str:
    value = body.get(name)
    if value is None:
        if required:
            raise ReportError(name, "required")
        return ""
    if not isinstance(value, str):
        raise ReportError(name, f"must be a string, got {type(value).__name__}")
    return value


def _choice(body: Mapping[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    # Optional as in upstream's LC (Go zero value): its joint-inference reporter sends no
    # status at all. When given, it must be one of the known values.
    value = _str_field(body, name).strip().lower()
    if value and value not in allowed:
        raise ReportError(name, f"{body.get(name)!r} is not one of {', '.join(allowed)}")
    return value


def parse_report(worker_name: str, body: bytes) -> types_pb2.WorkerReport:
    """Parse an upstream report body for the worker named in the path.

    Raises
    ------
    ReportError
        Malformed JSON, a wrong type, a missing field, or ``name`` differing from the path.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReportError("body", f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ReportError("body", f"must be a JSON object, got {type(data).__name__}")
    name = _str_field(data, "name", required=True)
    if name != worker_name:
        raise ReportError(
            "name", f"{name!r} does not match the worker name in the path ({worker_name!r})"
        )
    report = types_pb2.WorkerReport(
        worker_name=name,
        namespace=_str_field(data, "namespace"),
        owner_name=_str_field(data, "ownerName"),
        owner_kind=_str_field(data, "ownerKind"),
        kind=_choice(data, "kind", REPORT_KINDS),
        status=_choice(data, "status", REPORT_STATUSES),
    )
    owner_info = data.get("ownerInfo")
    if owner_info is not None:
        if not isinstance(owner_info, dict):
            raise ReportError("ownerInfo", f"must be an object, got {type(owner_info).__name__}")
        report.owner_info.update(owner_info)
    results = data.get("results")
    if results is not None:
        if not isinstance(results, list):
            raise ReportError("results", f"must be a list, got {type(results).__name__}")
        for index, item in enumerate(results):
            if not isinstance(item, dict):
                raise ReportError(
                    f"results[{index}]", f"must be an object, got {type(item).__name__}"
                )
            report.results.add().update(item)
    return report


def _answer(status: int, message: str, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {"Status": status, "Message": message}
    if field is not None:
        body["field"] = field
    return web.json_response(body, status=status)


async def _post_info(request: web.Request) -> web.Response:
    limit = request.app[_LIMIT_KEY]
    if request.content_length is not None and request.content_length > limit:
        return _answer(413, f"body: larger than {limit} bytes", "body")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _answer(413, f"body: larger than {limit} bytes", "body")
    worker_name = request.match_info["worker_name"]
    try:
        report = parse_report(worker_name, body)
        await request.app[_INTAKE_KEY].submit(report)
    except ReportError as exc:
        return _answer(400, str(exc), exc.field)
    except Exception:
        logger.exception("could not store the report of worker %s", worker_name)
        return _answer(503, "the node could not store the report; retry")
    return _answer(200, "OK")


def build_app(
    intake: WorkerReportIntake, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> web.Application:
    """The aiohttp application serving the worker route."""
    app = web.Application(client_max_size=max_body_bytes)
    app[_INTAKE_KEY] = intake
    app[_LIMIT_KEY] = max_body_bytes
    app.router.add_post("/sedna/workers/{worker_name}/info", _post_info)
    return app


class HttpReportServer:
    """Serves :func:`build_app` on ``host:port`` (port 0 picks a free one).

    Parameters
    ----------
    intake
        Where reports go.
    host, port
        Bind address.
    max_body_bytes
        Larger bodies get 413.
    """

    def __init__(
        self,
        intake: WorkerReportIntake,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self._app = build_app(intake, max_body_bytes=max_body_bytes)
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        """Bind and serve; :attr:`port` holds the bound port afterwards."""
        runner = web.AppRunner(self._app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else self._port

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
