"""Real servers for tests on free loopback ports: the gateway under uvicorn in a thread, and
any aiohttp application (provider simulator, fake OPA, OTLP collector) on its own event loop
thread."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from aiohttp import web

from gateway.api.server import GatewayHttpProtocol

__all__ = ["AiohttpThread", "ThreadedServer", "free_port"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThreadedServer:
    """Runs an ASGI app with uvicorn in a background thread (its lifespan included), on the
    HTTP protocol ``gateway serve`` uses (:class:`gateway.api.server.GatewayHttpProtocol`)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False, http=GatewayHttpProtocol
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="gateway-under-test", daemon=True)

    def start(self, timeout_s: float = 30.0) -> ThreadedServer:
        """Start and wait until the server accepts requests. Raises RuntimeError on failure."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("gateway failed to start (see log output)")
            if time.monotonic() > deadline:
                raise RuntimeError("gateway did not start in time")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for the thread (lifespan shutdown included)."""
        self._server.should_exit = True
        self._thread.join(timeout=15)


class AiohttpThread:
    """Serves the aiohttp application ``make_app()`` builds on 127.0.0.1 (a free port) from an
    event loop in a daemon thread. ``make_app`` runs on that loop (handlers may use it).

    ``shutdown_timeout_s``: how long :meth:`stop` lets in-flight requests finish; ``backlog``:
    the listen queue.
    """

    def __init__(
        self,
        make_app: Callable[[], web.Application],
        *,
        name: str,
        shutdown_timeout_s: float = 1.0,
        backlog: int = 1024,
    ) -> None:
        self._make_app = make_app
        self._name = name
        self._shutdown_timeout_s = shutdown_timeout_s
        self._backlog = backlog
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        """The port while serving, else None."""

    def start(self) -> int:
        """Start serving; returns the port. Raises RuntimeError if already started."""
        if self._thread is not None:
            raise RuntimeError(f"{self._name} already started")
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        thread = threading.Thread(target=run, name=self._name, daemon=True)
        thread.start()
        ready.wait(10)
        self._loop, self._thread = loop, thread
        try:
            self.port = asyncio.run_coroutine_threadsafe(self._serve(), loop).result(10)
        except BaseException:
            self.stop()
            raise
        return self.port

    async def _serve(self) -> int:
        runner = web.AppRunner(
            self._make_app(), access_log=None, handle_signals=False, shutdown_timeout=self._shutdown_timeout_s
        )
        await runner.setup()
        self._runner = runner
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        await web.SockSite(runner, sock, backlog=self._backlog).start()
        return int(sock.getsockname()[1])

    def stop(self) -> None:
        """Stop the server and its thread (idempotent)."""
        loop, thread, runner = self._loop, self._thread, self._runner
        self._loop = self._thread = self._runner = None
        self.port = None
        if loop is None:
            return
        try:
            if runner is not None:
                asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(self._shutdown_timeout_s + 10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(10)
            if not loop.is_running():
                loop.close()
