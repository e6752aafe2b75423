"""Change notification between gateway replicas: "something in the database changed, reload".

A :class:`ChangeWatcher` keeps one in-memory view (API keys, the active policy…) fresh by
calling its ``refresh`` coroutine when the state may have changed; :func:`publish` says that
it did. The refresh coroutine reads the database itself (cheaply, e.g. a change counter first),
so a notification carries no data and a lost one only delays a change, never corrupts it.

Transport: the shared Redis — ``limits_store.url`` when ``limits_store.kind`` is ``redis``
(there is no separate setting). With Redis, a watcher subscribes to the pub/sub channel
``sovereign-gateway:<topic>`` and refreshes on every message (bursts are coalesced into one
refresh), and still refreshes every ``10 x poll_interval_s`` as a backstop for a lost message;
while Redis is unreachable it falls back to polling every ``poll_interval_s`` and resubscribes
when Redis is back (then refreshes once, for what it missed). Without Redis (``redis_url``
None: the embedded default, one process) it polls every ``poll_interval_s``. So a change is
seen everywhere within about ``poll_interval_s`` (1 s by default) either way.

A refresh error is logged and retried at the next message or poll; it never stops the watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["BACKSTOP_FACTOR", "CHANNEL_PREFIX", "ChangeWatcher", "channel", "namespaced", "publish"]

log = logging.getLogger("gateway.notify")

CHANNEL_PREFIX = "sovereign-gateway:"
"""Redis pub/sub channels are ``sovereign-gateway:<topic>``."""

BACKSTOP_FACTOR = 10
"""With Redis, the watcher also refreshes every ``BACKSTOP_FACTOR x poll_interval_s`` seconds."""

_REDIS_TIMEOUT_S = 2.0


def namespaced(config: Any, topic: str) -> str:
    """``topic`` in the namespace of ``config``'s shared Redis (``limits_store.key_prefix``), so
    deployments or test runs sharing one Redis do not receive each other's change notices."""
    return f"{config.limits_store.key_prefix}{topic}"


def channel(topic: str) -> str:
    """The Redis pub/sub channel of ``topic`` (``sovereign-gateway:<topic>``)."""
    return CHANNEL_PREFIX + topic


def _redis(url: str) -> Any:
    from redis.asyncio import Redis

    return Redis.from_url(url, socket_connect_timeout=_REDIS_TIMEOUT_S, socket_timeout=_REDIS_TIMEOUT_S)


async def publish(redis_url: str | None, topic: str) -> None:
    """Tell every watcher of ``topic`` to refresh now. Never raises.

    Without Redis (``redis_url`` None) this does nothing: watchers poll. If Redis cannot be
    reached the failure is logged; watchers then see the change at their next poll (they poll
    every ``poll_interval_s`` while their own subscription is down, else at the backstop).
    """
    if redis_url is None:
        return
    client = _redis(redis_url)
    try:
        await client.publish(channel(topic), b"changed")
    except Exception as exc:  # redis-py raises RedisError and OSError subclasses; log all alike
        log.warning("could not publish change of %r to Redis: %s", topic, type(exc).__name__)
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()


class ChangeWatcher:
    """Calls ``refresh`` when ``topic`` changes (Redis pub/sub) or at least every poll.

    ``refresh``: a coroutine function with no arguments that reloads the state; its errors are
    logged. ``redis_url``: the shared Redis, or None to poll only. ``poll_interval_s``:
    seconds between polls without Redis (with Redis: while it is unreachable); the backstop
    with Redis is ``BACKSTOP_FACTOR`` times this. Create in the app's lifespan (after loading
    the initial state), :meth:`start`, and :meth:`aclose` at shutdown.
    """

    def __init__(
        self,
        topic: str,
        refresh: Callable[[], Awaitable[None]],
        *,
        redis_url: str | None,
        poll_interval_s: float = 1.0,
    ) -> None:
        if poll_interval_s <= 0:
            raise ValueError("poll_interval_s must be > 0")
        self.topic = topic
        self._refresh = refresh
        self._redis_url = redis_url
        self._poll_s = poll_interval_s
        self._task: asyncio.Task[None] | None = None
        self._client: Any = None
        self._pubsub: Any = None
        self._failing: str | None = None
        self.subscribed = False
        """True while the Redis subscription is live (for health checks and tests)."""

    async def start(self) -> None:
        """Subscribe (when Redis is configured and reachable) and start the background task.

        Returns once subscribed, so a change published after ``start`` returns is seen; if
        Redis is unreachable the watcher polls and keeps trying. Never raises for Redis errors.
        The task refreshes once right away, covering changes made before it subscribed.
        """
        if self._task is not None:
            return
        if self._redis_url is not None:
            await self._subscribe()
        self._task = asyncio.create_task(self._run(), name=f"change-watcher-{self.topic}")

    async def aclose(self) -> None:
        """Stop the task and close the Redis connection (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._unsubscribe()

    async def _subscribe(self) -> bool:
        assert self._redis_url is not None
        await self._unsubscribe()
        try:
            self._client = _redis(self._redis_url)
            self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            await self._pubsub.subscribe(channel(self.topic))
        except Exception as exc:  # connection refused, timeout, auth: poll until it works
            log.warning("change watcher %r: Redis unreachable, polling (%s)", self.topic, type(exc).__name__)
            await self._unsubscribe()
            return False
        self.subscribed = True
        return True

    async def _unsubscribe(self) -> None:
        self.subscribed = False
        pubsub, client, self._pubsub, self._client = self._pubsub, self._client, None, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _do_refresh(self) -> None:
        try:
            await self._refresh()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # logged once per distinct failure, not at every poll
            why = f"{type(exc).__name__}: {exc}"
            if why != self._failing:
                log.warning("change watcher %r: refresh failed, retrying at each poll: %s", self.topic, why)
            self._failing = why
        else:
            if self._failing is not None:
                log.info("change watcher %r: refresh works again", self.topic)
            self._failing = None

    async def _run(self) -> None:
        await self._do_refresh()
        backstop = self._poll_s * BACKSTOP_FACTOR
        next_backstop = time.monotonic() + backstop
        while True:
            if not self.subscribed:
                await asyncio.sleep(self._poll_s)
                if self._redis_url is not None and await self._subscribe():
                    log.info("change watcher %r: subscribed to Redis again", self.topic)
                await self._do_refresh()
                next_backstop = time.monotonic() + backstop
                continue
            try:
                wait = max(0.0, next_backstop - time.monotonic())
                message = await self._pubsub.get_message(timeout=wait)
                if message is not None:  # coalesce a burst of changes into one refresh
                    while await self._pubsub.get_message(timeout=0.0) is not None:
                        pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis went away: poll until it is back
                log.warning("change watcher %r: Redis subscription lost, polling (%s)", self.topic, type(exc).__name__)
                await self._unsubscribe()
                continue
            if message is not None or time.monotonic() >= next_backstop:
                await self._do_refresh()
                next_backstop = time.monotonic() + backstop
