"""Fast upstream simulator for the overhead benchmark (``run_bench.py``).

A raw ASGI app (no framework) served by uvicorn with uvloop + httptools, one worker:

- ``POST /v1/chat/completions`` → a fixed ``chat.completion`` (with usage), or, when the body
  asks for ``"stream": true``, an SSE stream of ``--chunks`` ``chat.completion.chunk`` events
  (the last carries usage) and ``data: [DONE]``;
- ``GET /v1/models`` → one model (health probes);
- anything else → 404.

It does no JSON parsing of the request (a byte search for ``"stream"``), so its own cost is as
small as the Python stack allows: the benchmark measures what sits between client and upstream.

Run: ``python benchmarks/upstream_sim.py --port 9100 [--chunks 8] [--chunk-delay-ms 0]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from typing import Any

_STREAM = re.compile(rb'"stream"\s*:\s*true')

COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1796000000,
        "model": "bench-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! This is a fixed answer from the simulator."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 11, "total_tokens": 23},
    },
    separators=(",", ":"),
).encode()

MODELS = json.dumps(
    {"object": "list", "data": [{"id": "bench-model", "object": "model", "owned_by": "bench"}]}
).encode()
NOT_FOUND = b'{"error":{"message":"not found","type":"invalid_request_error"}}'


def _chunk(i: int, last: bool) -> bytes:
    event: dict[str, Any] = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1796000000,
        "model": "bench-model",
        "choices": [
            {
                "index": 0,
                "delta": ({"role": "assistant", "content": "Hi"} if i == 0 else {"content": f" w{i}"}),
                "finish_reason": "stop" if last else None,
            }
        ],
    }
    if last:
        event["usage"] = {"prompt_tokens": 12, "completion_tokens": i + 1, "total_tokens": 13 + i}
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


def make_app(chunks: int, chunk_delay_s: float) -> Any:
    events = [_chunk(i, i == chunks - 1) for i in range(chunks)] + [b"data: [DONE]\n\n"]
    json_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(COMPLETION)).encode())]
    sse_headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["method"] == "POST" and path.endswith("/chat/completions"):
            if _STREAM.search(body):
                await send({"type": "http.response.start", "status": 200, "headers": sse_headers})
                for event in events:
                    if chunk_delay_s:
                        await asyncio.sleep(chunk_delay_s)
                    await send({"type": "http.response.body", "body": event, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
                return
            await send({"type": "http.response.start", "status": 200, "headers": json_headers})
            await send({"type": "http.response.body", "body": COMPLETION})
            return
        if scope["method"] == "GET" and path.endswith("/models"):
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": MODELS})
            return
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": NOT_FOUND})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(
        make_app(args.chunks, args.chunk_delay_ms / 1000),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
