"""Backend adapters, one module per backend kind, in one explicit registry.

``ADAPTER_KINDS`` maps the ``adapter:`` name used in gateway.yaml to a factory. Factories are
called once per kind in the app's lifespan, and only for kinds a deployment uses (so litellm is
imported only when a litellm deployment exists). This package never imports ``gateway``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from adapters.base import (
    Adapter,
    AdapterError,
    Target,
    UpstreamConnectError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamTimeout,
    json_safe,
)

__all__ = [
    "ADAPTER_KINDS",
    "Adapter",
    "AdapterError",
    "Target",
    "UpstreamConnectError",
    "UpstreamHTTPError",
    "UpstreamProtocolError",
    "UpstreamTimeout",
    "create_adapter",
    "json_safe",
]


def _openai_compat() -> Adapter:
    from adapters.openai_compat import OpenAICompatAdapter

    return OpenAICompatAdapter()


def _litellm() -> Adapter:
    from adapters.litellm import LiteLLMAdapter

    return LiteLLMAdapter()


ADAPTER_KINDS: Mapping[str, Callable[[], Adapter]] = MappingProxyType(
    {
        "openai_compat": _openai_compat,
        "litellm": _litellm,
    }
)


def create_adapter(kind: str) -> Adapter:
    """Create the adapter for ``kind``. Raises KeyError for an unknown kind."""
    return ADAPTER_KINDS[kind]()
