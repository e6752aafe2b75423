"""Noticing a client that goes away while the gateway works on its request.

uvicorn's ``send`` silently drops what is written after the client disconnected, so a
hang-up is only seen through ASGI ``receive()``: once the request body has been read, the
next ``receive()`` returns ``{"type": "http.disconnect"}`` when the connection is lost (or the
response is complete). :class:`ClientWatch` runs that ``receive()`` in a watcher task while
the request waits on an upstream and cancels the waiting region, so the upstream connection
is closed at once (the provider stops generating; nothing more is paid for) and the pipeline
records ``client_disconnected`` with what was produced. Audit writes are never cancelled:
an :meth:`~ClientWatch.upstream` region holds only the upstream call, and a
:meth:`~ClientWatch.relay` region (which holds the relay, whose outcome record is written
under an anyio shield) is an anyio cancel scope, which respects shields.

Hot path: a non-stream request answered within :data:`WATCH_AFTER_S` spawns no task: its
region arms a timer and cancels it (~3 us a request in all, most of it the timer); only a
slower answer gets the watcher task. Streams get it from the upstream call on (their relay
needs it anyway).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any

import anyio

from gateway.errors import ClientDisconnected

__all__ = ["WATCH_AFTER_S", "ClientWatch"]

WATCH_AFTER_S = 0.1
"""A non-stream request starts watching for a hang-up after this many seconds of waiting on
its upstream (so a hang-up is noticed within this plus a loop turn)."""

Receive = Callable[[], Awaitable[Mapping[str, Any]]]


class ClientWatch:
    """Watches one request's client through ASGI ``receive`` (after its body was read).

    ``gone``: the client has disconnected (set by the watcher task). Use :meth:`upstream`
    or :meth:`relay` around a wait (one region at a time); :meth:`close` when the response
    is done. With ``receive=None`` (direct pipeline calls without an HTTP client, as in
    tests) nothing is watched.
    """

    __slots__ = (
        "_after_s",
        "_cancelled",
        "_receive",
        "_relay",
        "_scope",
        "_target",
        "_task",
        "_timer",
        "_what",
        "gone",
    )

    def __init__(self, receive: Receive | None) -> None:
        self._receive = receive
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._scope: anyio.CancelScope | None = None  # the active relay region's
        self._target: asyncio.Task[Any] | None = None  # the task in the active upstream region
        self._cancelled = False  # the watcher cancelled _target
        self._what = ""
        self._after_s = 0.0
        self._relay = False
        self.gone = False

    def upstream(self, what: str, *, after_s: float = 0.0) -> ClientWatch:
        """A context manager around an upstream call (nothing shielded inside: it is
        cancelled as asyncio cancels a task). Cancelled as soon as the client is seen gone;
        it then raises :class:`ClientDisconnected` ("the client disconnected ``what``"). The
        watcher task starts now, or after ``after_s`` seconds still inside. Entering raises
        ClientDisconnected if the client is already known to be gone (nothing is sent)."""
        self._what, self._after_s, self._relay = what, after_s, False
        return self

    def relay(self, what: str) -> ClientWatch:
        """A context manager around a stream's relay: an anyio cancel scope (shielded work
        inside, such as the outcome's audit write, is not cancelled), cancelled as soon as
        the client is seen gone, then raising :class:`ClientDisconnected`. If the client is
        already known to be gone it enters cancelled: the first wait inside is cancelled,
        so the relay still runs far enough to record its outcome."""
        self._what, self._after_s, self._relay = what, 0.0, True
        return self

    def __enter__(self) -> None:
        if self._receive is None:
            return
        if self.gone and not self._relay:
            raise ClientDisconnected(f"the client disconnected {self._what}")
        if self._task is None and self._timer is None:
            if self._after_s > 0:
                self._timer = asyncio.get_running_loop().call_later(self._after_s, self.start)
            else:
                self.start()
        if self._relay:
            self._scope = scope = anyio.CancelScope()
            scope.__enter__()
            if self.gone:
                scope.cancel()
        else:
            self._target = asyncio.current_task()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if self._timer is not None:  # answered before the watcher was needed
            self._timer.cancel()
            self._timer = None
        scope, self._scope = self._scope, None
        if scope is not None:
            swallowed = scope.__exit__(exc_type, exc, tb)
            if scope.cancelled_caught:  # only the watcher cancels this scope
                raise ClientDisconnected(f"the client disconnected {self._what}") from None
            return bool(swallowed)
        target, self._target = self._target, None
        if target is not None and self._cancelled:
            self._cancelled = False
            # The watcher ran while the target waited in here, so its cancel was delivered
            # in here (asyncio throws it at the next resumption); no other cancel pending:
            # it is ours to turn into ClientDisconnected.
            if target.uncancel() == 0 and exc_type is asyncio.CancelledError:
                raise ClientDisconnected(f"the client disconnected {self._what}") from None
        return False

    def start(self) -> None:
        """Start the watcher task (idempotent; nothing once closed or without ``receive``)."""
        self._timer = None
        if self._task is None and self._receive is not None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        receive = self._receive
        if receive is None:
            return
        try:
            while (await receive()).get("type") != "http.disconnect":
                pass  # the body was read in full: nothing else is expected, nothing is lost
        except Exception:  # a server that refuses to be asked: stop watching, serve on
            return
        self.gone = True
        if self._scope is not None:
            self._scope.cancel()
        elif self._target is not None and not self._cancelled:
            self._cancelled = True
            self._target.cancel()

    def close(self) -> None:
        """Stop watching (the response is complete or abandoned); idempotent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()
        self._receive = None
