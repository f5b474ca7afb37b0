"""A loopback TCP proxy that can cut a database off, as a network does.

`refuse()` closes every connection and refuses new ones (the server is down);
`partition()` keeps accepting and keeps connections open but forwards nothing (a
network partition: packets vanish, nothing says so); `restore()` forwards again.
"""

from __future__ import annotations

import asyncio
import contextlib
from enum import Enum


class Mode(Enum):
    FORWARD = "forward"
    REFUSE = "refuse"
    PARTITION = "partition"


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode = Mode.FORWARD
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self._listen()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def _drop_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def refuse(self) -> None:
        """The server is gone: open connections reset, new ones refused."""
        self.mode = Mode.REFUSE
        await self._stop_listening()
        self._drop_all()

    async def partition(self) -> None:
        """Packets vanish: connections stay open and new ones are accepted, nothing moves."""
        self.mode = Mode.PARTITION
        if self._server is None:
            await self._listen()

    async def restore(self) -> None:
        if self.mode is Mode.PARTITION:
            # What was sent into the void is gone: those connections can never recover.
            self._drop_all()
        self.mode = Mode.FORWARD
        if self._server is None:
            await self._listen()

    async def close(self) -> None:
        await self._stop_listening()
        self._drop_all()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self.mode is not Mode.FORWARD:
            await self._swallow(reader)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while await reader.read(65536):
                pass

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                if self.mode is Mode.PARTITION:
                    continue  # into the void
                if self.mode is Mode.REFUSE:
                    break
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            sink.transport.abort()
