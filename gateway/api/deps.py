"""FastAPI dependencies: the wired Gateway from app state, the caller's principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gateway.service import Gateway

__all__ = ["GatewayDep", "get_gateway"]


async def get_gateway(request: Request) -> Gateway:
    """The Gateway built in the app's lifespan. ``async`` so FastAPI calls it on the event
    loop: a plain ``def`` dependency runs in its thread pool, a thread hop per request."""
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
