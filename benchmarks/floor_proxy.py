"""Bare pass-through proxy on aiohttp: the floor of what any Python proxy can add.

``POST /v1/chat/completions`` is forwarded as-is (body bytes, content type) to
``{upstream}/v1/chat/completions`` over one pooled ``aiohttp.ClientSession``; the answer is
returned as-is, streamed chunk by chunk when the upstream streams. No auth, no parsing, no
policy, no audit: the gateway's overhead is measured against this.

Run: ``python benchmarks/floor_proxy.py --port 9200 --upstream http://127.0.0.1:9100``.
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
from aiohttp import web


def make_app(upstream: str) -> web.Application:
    app = web.Application()
    target = upstream.rstrip("/") + "/v1/chat/completions"

    async def on_startup(app: web.Application) -> None:
        connector = aiohttp.TCPConnector(limit=512, limit_per_host=512, keepalive_timeout=60)
        app["session"] = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60))

    async def on_cleanup(app: web.Application) -> None:
        await app["session"].close()

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        session: aiohttp.ClientSession = request.app["session"]
        async with session.post(
            target, data=body, headers={"content-type": request.headers.get("content-type", "application/json")}
        ) as upstream_response:
            ctype = upstream_response.headers.get("content-type", "application/json")
            if ctype.startswith("text/event-stream"):
                response = web.StreamResponse(status=upstream_response.status, headers={"content-type": ctype})
                await response.prepare(request)
                async for chunk in upstream_response.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
            data = await upstream_response.read()
            return web.Response(status=upstream_response.status, body=data, headers={"content-type": ctype})

    app.router.add_post("/v1/chat/completions", chat)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - uvloop is a dependency
        pass
    web.run_app(make_app(args.upstream), host="127.0.0.1", port=args.port, access_log=None, print=None, backlog=4096)


if __name__ == "__main__":
    main()
