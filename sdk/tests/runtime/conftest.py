"""Fixtures for the runtime tests: the echo service, servers, channels, throwaway PKI."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from support.modules import load_module
from support.pki import Pki, make_pki
from support.servers import loopback_settings

from sedna.runtime import ChannelConfig, ServiceServer, ServiceSettings, open_channel

ECHO_SCRIPT = Path(__file__).with_name("echo_service.py")
ECHO = load_module("sedna_runtime_tests_echo_service", ECHO_SCRIPT)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's SEDNA_* variables out of every test."""
    import os

    for key in list(os.environ):
        if key.upper().startswith("SEDNA_"):
            monkeypatch.delenv(key)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure_logging() changes the root logger; put it back after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def echo() -> ModuleType:
    """The echo_service helper module (SERVICE, build_handler, path, eventually...)."""
    return ECHO


def make_settings(**values: Any) -> ServiceSettings:
    """Loopback settings with free ports (metrics too) and a short drain."""
    return loopback_settings(**{"metrics_port": 0, "drain_seconds": 5.0, **values})


@pytest.fixture
def settings_factory() -> Callable[..., ServiceSettings]:
    """``settings_factory(**values)``: loopback settings with free ports."""
    return make_settings


@dataclass
class Running:
    """A started echo server and what its handlers observed."""

    server: ServiceServer
    state: Any


ServeFn = Callable[..., Awaitable[Running]]


@pytest.fixture
async def serve() -> AsyncIterator[ServeFn]:
    """``await serve(settings=None, **setting_values)``: start an echo server; stopped after."""
    started: list[ServiceServer] = []

    async def _serve(settings: ServiceSettings | None = None, **values: Any) -> Running:
        state = ECHO.EchoState()
        server = ServiceServer(settings if settings is not None else make_settings(**values))
        server.add_generic_handler(ECHO.build_handler(state), ECHO.SERVICE)
        await server.start()
        started.append(server)
        return Running(server, state)

    yield _serve
    for server in started:
        await server.stop(0)


ConnectFn = Callable[..., grpc.aio.Channel]


@pytest.fixture
async def connect() -> AsyncIterator[ConnectFn]:
    """``connect(target, **ChannelConfig fields)``: an aio channel closed after the test."""
    channels: list[grpc.aio.Channel] = []

    def _connect(target: str, **options: Any) -> grpc.aio.Channel:
        options.setdefault("default_timeout", 5.0)
        channel = open_channel(ChannelConfig(target=target, **options))
        channels.append(channel)
        return channel

    yield _connect
    for channel in channels:
        await channel.close()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server cert (SAN localhost, 127.0.0.1), client certs from it and a foreign CA."""
    return make_pki(tmp_path_factory.mktemp("pki"))
