"""A tiny round-robin reverse proxy standing for the load balancer of docs/deploy.md (nginx there).

Each client connection goes to the next backend in turn, like nginx's default `upstream`: the
request head gets the headers the nginx example sets (`X-Forwarded-For`, `X-Forwarded-Proto`, the
client's `Host` kept), a plain request is sent with `Connection: close` so that the next one is
balanced again, and an `Upgrade: websocket` request keeps its connection: bytes are then copied
both ways until either side closes. `routes` records where each request went.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from dataclasses import dataclass, field

HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"x-forwarded-for", b"x-forwarded-proto"}
MAX_HEAD = 65536


@dataclass
class Route:
    method: str
    path: str
    backend: int
    upgrade: bool


@dataclass
class Balancer:
    backends: list[int]
    forwarded_proto: str = "https"  # the scheme the real balancer terminates (TLS)
    host: str = "127.0.0.1"
    port: int = 0
    routes: list[Route] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._next = itertools.cycle(self.backends)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="balancer", daemon=True)

    def start(self) -> Balancer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the balancer did not start")
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
            self._thread.join(10)

    async def _shutdown(self) -> None:
        """Close the connections still open (a socket left to the backends), then the loop."""
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop.call_soon(self._loop.stop)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, self.host, self.port))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_writer = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_HEAD:
                return
            backend = next(self._next)
            head, route = self._rewrite(head, backend, writer.get_extra_info("peername")[0])
            self.routes.append(route)
            upstream_reader, upstream_writer = await asyncio.open_connection(self.host, backend)
            upstream_writer.write(head)
            # The exchange ends when the backend is done (response sent, or socket closed).
            upward = asyncio.ensure_future(_pipe(reader, upstream_writer))
            await _pipe(upstream_reader, writer)
            upward.cancel()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            return
        finally:
            for w in (writer, upstream_writer):
                if w is not None:
                    w.close()

    def _rewrite(self, head: bytes, backend: int, client: str) -> tuple[bytes, Route]:
        request_line, *lines = head[:-4].split(b"\r\n")
        headers = [line for line in lines if line.split(b":", 1)[0].strip().lower() not in HOP_BY_HOP]
        upgrade = any(line.lower().startswith(b"upgrade:") and b"websocket" in line.lower() for line in lines)
        headers += [
            b"Connection: Upgrade" if upgrade else b"Connection: close",
            f"X-Forwarded-For: {client}".encode(),
            f"X-Forwarded-Proto: {self.forwarded_proto}".encode(),
        ]
        method, path, _ = request_line.decode("latin-1").split(" ", 2)
        return b"\r\n".join([request_line, *headers]) + b"\r\n\r\n", Route(method, path, backend, upgrade)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        if writer.can_write_eof():
            try:
                writer.write_eof()
            except (OSError, RuntimeError):
                pass
