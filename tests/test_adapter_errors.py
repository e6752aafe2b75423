"""Every exception class of the HTTP client (httpx) and of litellm is mapped to the adapter
error tree explicitly — these tests fail when an upgrade adds a class nobody mapped."""

from __future__ import annotations

import inspect

import httpx
import pytest

from adapters.base import AdapterError, UpstreamConnectError, UpstreamHTTPError, UpstreamTimeout
from adapters.litellm import LITELLM_ERRORS, _map_error, import_litellm
from adapters.openai_compat import HTTPX_ERRORS, map_httpx_error


def _exception_classes(module: object, prefix: str) -> set[type[BaseException]]:
    return {
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, BaseException) and obj.__module__.startswith(prefix)
    }


def test_every_httpx_exception_class_is_mapped() -> None:
    unmapped = sorted(c.__name__ for c in _exception_classes(httpx, "httpx") if c not in HTTPX_ERRORS)
    assert unmapped == [], f"map these httpx exceptions in adapters/openai_compat.py: {unmapped}"
    assert all(issubclass(kind, AdapterError) for kind in HTTPX_ERRORS.values())


def test_every_litellm_exception_class_is_mapped() -> None:
    litellm = import_litellm()
    classes = _exception_classes(litellm.exceptions, "litellm")
    unmapped = sorted(c.__name__ for c in classes if c.__name__ not in LITELLM_ERRORS)
    assert unmapped == [], f"map these litellm exceptions in adapters/litellm.py: {unmapped}"


@pytest.mark.parametrize(
    ("exc", "kind", "retryable"),
    [
        (httpx.ReadTimeout("slow"), UpstreamTimeout, True),
        (httpx.ConnectError("refused"), UpstreamConnectError, True),
        (httpx.RemoteProtocolError("peer closed"), UpstreamConnectError, True),
    ],
)
def test_httpx_errors_map_to_retryable_adapter_errors(exc: Exception, kind: type, retryable: bool) -> None:
    mapped = map_httpx_error(exc, timeout_s=5)
    assert type(mapped) is kind and mapped.retryable is retryable


def test_litellm_http_errors_keep_the_providers_status() -> None:
    litellm = import_litellm()
    limited = litellm.exceptions.RateLimitError("slow down", llm_provider="anthropic", model="m")
    refused = litellm.exceptions.BadRequestError("prompt is too long", llm_provider="anthropic", model="m")
    timeout = litellm.exceptions.Timeout("late", llm_provider="anthropic", model="m")
    assert isinstance(_map_error(limited), UpstreamHTTPError) and _map_error(limited).status == 429
    assert _map_error(limited).retryable
    assert _map_error(refused).status == 400 and not _map_error(refused).retryable
    assert isinstance(_map_error(timeout), UpstreamTimeout)


def test_every_aiohttp_client_exception_class_is_mapped() -> None:
    """The OpenAI-compatible adapter sends on aiohttp: every client exception it exports maps
    to the most specific adapter error (timeouts before connection errors)."""
    import aiohttp

    from adapters.openai_compat import AIOHTTP_ERRORS, map_aiohttp_error

    classes = {c for c in _exception_classes(aiohttp, "aiohttp") if issubclass(c, aiohttp.ClientError)}
    unmapped = sorted(c.__name__ for c in classes if not any(base in AIOHTTP_ERRORS for base in c.__mro__[:-2]))
    assert unmapped == [], f"map these aiohttp exceptions in adapters/openai_compat.py: {unmapped}"
    assert type(map_aiohttp_error(aiohttp.ServerTimeoutError("slow"), timeout_s=5)) is UpstreamTimeout
    assert type(map_aiohttp_error(TimeoutError(), timeout_s=5)) is UpstreamTimeout
    assert type(map_aiohttp_error(aiohttp.ServerDisconnectedError(), timeout_s=5)) is UpstreamConnectError
    assert type(map_aiohttp_error(aiohttp.ClientPayloadError("cut"), timeout_s=5)) is UpstreamConnectError
