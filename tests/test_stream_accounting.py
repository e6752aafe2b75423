"""../shared/cases/streaming.yaml stream-accounting-matches against the real llama.cpp server
(SmolLM2), whose streams carry no usage: with the deployment's tokenizer (``tokenizer:
smollm2``) stream and non-stream record the same tokens and cost, the stream marked
estimated; the suite's simulator variant (upstream omits usage) is in test_stream_faults.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gateway.tokens import build_token_counter
from tests.conftest import GatewayUnderTest, make_config
from tests.support.provider_sim import ProviderSimulator

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def local_gw(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator, llama: str
) -> GatewayUnderTest:
    doc = make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url=llama)
    for dep in doc["deployments"]:
        if dep["id"] == "local-smollm2":
            dep["tokenizer"] = "smollm2"
    return start_gateway(doc)


def _accounting(gw: GatewayUnderTest, response: httpx.Response) -> tuple[Any, ...]:
    assert response.status_code == 200, response.text
    rec = gw.record(response.headers["x-request-id"])
    assert rec["chosen_deployment"] == "local-smollm2"
    return rec["prompt_tokens"], rec["completion_tokens"], rec["cost_usd"], rec["tokens_estimated"]


@pytest.mark.parametrize(
    ("content", "max_tokens"),
    [("Name three colors.", 24), ("Write a haiku about the sea, with émojis 🌊 and ünïcödé.", 40)],
)
def test_llama_cpp_stream_and_non_stream_record_the_same_tokens_and_cost(
    local_gw: GatewayUnderTest, content: str, max_tokens: int
) -> None:
    req: dict[str, Any] = {
        "model": "local-smollm2",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": 7,
    }
    plain = local_gw.post(CHAT, json=req)
    reported = plain.json()["usage"]
    with_usage = local_gw.post(CHAT, json={**req, "stream": True, "stream_options": {"include_usage": True}})
    without = local_gw.post(CHAT, json={**req, "stream": True})
    rows = [_accounting(local_gw, r) for r in (plain, with_usage, without)]
    assert rows[0][3] is False, "llama.cpp reports usage without streaming"
    assert rows[1][3] is True and rows[2][3] is True, "streams carry no usage: counted locally, marked"
    assert {row[:3] for row in rows} == {rows[0][:3]}, rows  # same tokens and cost
    assert rows[0][:2] == (reported["prompt_tokens"], reported["completion_tokens"])
    usage_chunk = [line for line in with_usage.text.splitlines() if '"usage"' in line]
    assert usage_chunk and f'"prompt_tokens":{rows[0][0]}' in usage_chunk[-1]


def test_without_a_tokenizer_the_stream_is_estimated_and_marked(gateway: GatewayUnderTest) -> None:
    """The standard test gateway has no tokenizer for local-smollm2: its streams fall back to
    the character estimate, marked estimated (so the gap is visible in the record)."""
    req = {"model": "local-smollm2", "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8}
    r = gateway.post(CHAT, json={**req, "stream": True})
    assert r.status_code == 200
    assert gateway.record(r.headers["x-request-id"])["tokens_estimated"] is True


def test_token_counter_matches_the_model_and_rejects_unknown_tokenizers() -> None:
    counter = build_token_counter("smollm2")
    # what llama.cpp's server reports for this request (chat template with its default system prompt)
    assert counter.prompt_tokens({"messages": [{"role": "user", "content": "Name three colors."}]}) == 34
    assert counter.text_tokens("1. Red\n2. Blue\n3. Green") == 11
    assert counter.text_tokens("") == 0
    assert counter.prompt_tokens({"input": "embed me"}) is None
    with pytest.raises(ValueError, match="unknown tokenizer"):
        build_token_counter("gpt2")
    with pytest.raises(FileNotFoundError):
        build_token_counter("/nonexistent/model.gguf")


def test_a_missing_tokenizer_file_stops_start_up_naming_the_field(tmp_path: Any) -> None:
    import asyncio

    from gateway.config import parse_config
    from gateway.errors import ConfigError
    from gateway.main import build_gateway

    doc = make_config(sim_a_url="http://127.0.0.1:9/v1", sim_b_url="http://127.0.0.1:9/v1", llama_url="http://x/v1")
    doc["deployments"][0]["tokenizer"] = str(tmp_path / "missing.gguf")
    doc["audit"] = {
        "url": f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}",
        "signing_key_file": str(tmp_path / "signing.pem"),
        "digest_secret_file": str(tmp_path / "digest.key"),
    }
    with pytest.raises(ConfigError, match=r"deployments\.0\.tokenizer: .*missing\.gguf does not exist"):
        asyncio.run(build_gateway(parse_config(doc)))
