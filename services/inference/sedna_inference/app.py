"""Wiring of the inference server: repository, servicer, health and model loading."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from sedna.runtime import ServiceServer
from sedna.serving import SERVICE_NAME, Backend, InferenceMetrics, add_inference_service
from sedna_inference.backends import ModelLoader, RuntimeOptions, load_backend
from sedna_inference.repository import ModelConfig, ModelRepository
from sedna_inference.settings import InferenceSettings

__all__ = ["configured_loader", "setup"]


def configured_loader(options: RuntimeOptions) -> ModelLoader:
    """:func:`~sedna_inference.backends.load_backend` with the runtime ``options``."""

    def load(path: Path, *, model_format: str | None = None) -> Backend:
        return load_backend(path, model_format=model_format, options=options)

    return load


async def setup(
    server: ServiceServer, settings: InferenceSettings, *, loader: ModelLoader | None = None
) -> ModelRepository:
    """Register the OIP servicer and load the configured model once the server is up.

    Health reports the inference service (and so the server) NOT_SERVING until every
    configured model is loaded; a model that fails to load keeps it NOT_SERVING (until a
    hot reload, when enabled, loads a fixed version). Once loaded, each model's source is
    watched for new versions every ``reload_interval_seconds`` (0: never).

    Parameters
    ----------
    server
        The service server, not started.
    settings
        The inference settings.
    loader
        ``load(path, *, model_format) -> Backend``; by default
        :func:`~sedna_inference.backends.load_backend` (file suffix, directory layout, then
        ``settings.model_format``) with ``settings.runtime_options()`` (ONNX Runtime
        threads and spinning).

    Returns
    -------
    ModelRepository
        The repository the servicer serves.
    """
    if loader is None:
        loader = configured_loader(settings.runtime_options())
    repository = ModelRepository(
        InferenceMetrics(server.registry), loader=loader, cache_dir=settings.model_cache_dir
    )
    if settings.model_name is not None and settings.model_path is not None:
        repository.configure(
            ModelConfig(
                name=settings.model_name,
                path=settings.model_path,
                version=settings.model_version,
                max_batch_size=settings.max_batch_size,
                max_queue_delay_ms=settings.max_queue_delay_ms,
                inline_compute_ms=settings.inline_compute_ms,
                reload_interval_s=settings.reload_interval_seconds,
                format=settings.model_format,
            )
        )
    add_inference_service(server, repository)
    await server.set_serving(SERVICE_NAME, repository.server_ready())
    tasks: list[asyncio.Task[None]] = []

    async def update_health() -> None:
        await server.set_serving(SERVICE_NAME, repository.server_ready())

    async def load() -> None:
        if await repository.load_all():
            await server.set_serving(SERVICE_NAME, True)
        await repository.watch_all(update_health)

    def start_loading() -> None:
        if repository.names:
            tasks.append(asyncio.get_running_loop().create_task(load(), name="load-models"))

    async def close() -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await repository.close()

    server.on_startup(start_loading)
    server.on_shutdown(close)
    return repository
