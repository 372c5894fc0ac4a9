"""The service `jingbao run` starts: every channel's receive chain as its own task, plus the HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import uvicorn

from bridge.api import create_app
from bridge.archive import Archive
from bridge.bus import EventBus
from bridge.channel import Channel
from bridge.config import Config

logger = logging.getLogger(__name__)


class Service:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.bus = EventBus()
        self.archive = Archive(config.storage)
        self.channels = [Channel(ch, self.archive, self.bus) for ch in config.channels if ch.enabled]

    def channel_states(self) -> list[dict[str, Any]]:
        return [ch.state.to_dict() for ch in self.channels]

    async def run(self, serve_http: bool = True) -> None:
        logger.info("starting %d channels; archive in %s", len(self.channels), self.config.storage.data_dir)
        async with asyncio.TaskGroup() as tasks:
            channel_tasks = [tasks.create_task(ch.run(), name=f"channel:{ch.config.id}") for ch in self.channels]
            if serve_http:
                server = self._http_server()
                http = tasks.create_task(server.serve(), name="http")
                await asyncio.gather(*channel_tasks)
                await http  # channels that end (files without loop) leave the API up
            else:
                await asyncio.gather(*channel_tasks)

    def _http_server(self) -> uvicorn.Server:
        web = self.config.web
        config = uvicorn.Config(create_app(self), host=web.host, port=web.port, log_level="warning", lifespan="off")
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # the CLI owns signals
        return server


def run_service(config: Config) -> None:
    service = Service(config)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(service.run())
