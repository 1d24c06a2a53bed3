"""A tiny HTTP file server on loopback, for tests of ``http(s)://`` model downloads.

``async with http_files(files) as base:`` serves ``files`` (``{"models/m.onnx": body}``) at
``{base}/models/m.onnx`` with GET and HEAD, each reply carrying an ``ETag`` derived from the
body; any other path is 404. ``files`` is read on every request, so a test changes what is
served by assigning to it (a new version) or deleting a key.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, MutableMapping

from aiohttp import web

__all__ = ["http_files"]


@contextlib.asynccontextmanager
async def http_files(files: MutableMapping[str, bytes]) -> AsyncIterator[str]:
    """Serve ``files`` on 127.0.0.1 (a free port) for the block; yields ``http://host:port``."""

    async def serve(request: web.Request) -> web.Response:
        body = files.get(request.match_info["path"])
        if body is None:
            raise web.HTTPNotFound
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        return web.Response(body=body, headers={"ETag": etag})

    app = web.Application()
    app.router.add_get("/{path:.+}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
