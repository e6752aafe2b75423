"""The test Redis (127.0.0.1:6379, shared with other test runs): every test module keeps its
keys under a prefix unique to the run and deletes them at the end — never FLUSHDB."""

from __future__ import annotations

import asyncio
import uuid

__all__ = ["REDIS_URL", "drop_keys", "drop_keys_async", "run_prefix"]

REDIS_URL = "redis://127.0.0.1:6379/0"


def run_prefix(name: str) -> str:
    """``sgw-test-<name>:<random>:`` — a key prefix no other run uses."""
    return f"sgw-test-{name}:{uuid.uuid4().hex[:12]}:"


async def drop_keys_async(prefix: str) -> int:
    """Delete every key under ``prefix``; returns how many there were."""
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        return len(keys)
    finally:
        await client.aclose()


def drop_keys(prefix: str) -> int:
    """:func:`drop_keys_async` from synchronous code (a fixture's teardown)."""
    return asyncio.run(drop_keys_async(prefix))
