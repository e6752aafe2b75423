"""Broken upstream streams (../shared/cases/streaming.yaml): after the first byte the client
never sees a normal finish — it gets an explicit error event — and the record says partial;
a client that goes away mid-stream is recorded as such."""

from __future__ import annotations

import json
import time

from tests.conftest import APP_KEY, GatewayUnderTest
from tests.support.provider_sim import ProviderSimulator

CHAT = "/v1/chat/completions"
LONG = "one two three four five six seven eight nine ten eleven twelve"


def _events(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


def _assert_no_normal_finish(events: list[str]) -> dict[str, object]:
    assert "[DONE]" not in events
    chunks = [json.loads(e) for e in events]
    assert not any(c.get("choices") and c["choices"][0].get("finish_reason") == "stop" for c in chunks)
    last: dict[str, object] = chunks[-1]
    assert "error" in last
    return last


def test_stream_stalled_mid_answer_gets_an_error_event_within_the_idle_timeout(
    gateway: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    sim_a.behave(stream_stall_s=30)  # one chunk, then silence; the deployment's timeout is 5 s
    started = time.monotonic()
    r = gateway.post(CHAT, json={"model": "external", "stream": True, "messages": [{"role": "user", "content": LONG}]})
    elapsed = time.monotonic() - started
    last = _assert_no_normal_finish(_events(r.text))
    assert "timeout" in json.dumps(last)
    assert elapsed < 15
    assert sim_b.requests == []
    rec = gateway.record(r.headers["x-request-id"])
    assert rec["status"] == "partial" and rec["attempts"][0]["outcome"] == "partial"
    assert rec["completion_tokens"] >= 1


def test_malformed_stream_line_mid_answer_ends_with_an_error_event(
    gateway: GatewayUnderTest, sim_a: ProviderSimulator
) -> None:
    sim_a.behave(stream_malformed_after=2)
    r = gateway.post(CHAT, json={"model": "external", "stream": True, "messages": [{"role": "user", "content": LONG}]})
    last = _assert_no_normal_finish(_events(r.text))
    assert "protocol_error" in json.dumps(last)
    assert gateway.record(r.headers["x-request-id"])["status"] == "partial"


def test_client_disconnect_mid_stream_is_recorded(gateway: GatewayUnderTest, sim_a: ProviderSimulator) -> None:
    sim_a.behave(stream_stall_s=4)
    request_id = None
    with gateway.client.stream(
        "POST",
        CHAT,
        headers={"authorization": f"Bearer {APP_KEY}"},
        json={"model": "external", "stream": True, "messages": [{"role": "user", "content": LONG}]},
    ) as response:
        request_id = response.headers["x-request-id"]
        for line in response.iter_lines():
            if line.startswith("data: "):
                break  # got the first chunk: hang up
    deadline = time.monotonic() + 15
    status = None
    while time.monotonic() < deadline:
        rows = [r for r in gateway.records(limit=50) if r["request_id"] == request_id]
        status = rows[0]["status"] if rows else None
        if status not in (None, "pending"):
            break
        time.sleep(0.2)
    assert status == "client_disconnected"
    rec = gateway.record(request_id)
    assert rec["attempts"][-1]["outcome"] == "cancelled"


def test_stream_and_non_stream_record_the_same_tokens_and_cost(
    gateway: GatewayUnderTest, sim_a: ProviderSimulator
) -> None:
    """../shared/cases/streaming.yaml stream-accounting-matches: with and without
    include_usage, and with an upstream that omits usage entirely (then both are estimated
    the same way and marked)."""
    req = {"model": "external", "messages": [{"role": "user", "content": "count the words in this sentence"}]}

    def accounting(response_id: str) -> tuple[object, ...]:
        rec = gateway.record(response_id)
        return rec["prompt_tokens"], rec["completion_tokens"], rec["cost_usd"], rec["tokens_estimated"]

    for omit in (False, True):
        sim_a.reset()
        if omit:
            sim_a.behave(omit_usage=True)
        plain = gateway.post(CHAT, json=req)
        with_usage = gateway.post(CHAT, json={**req, "stream": True, "stream_options": {"include_usage": True}})
        without = gateway.post(CHAT, json={**req, "stream": True})
        rows = {accounting(r.headers["x-request-id"]) for r in (plain, with_usage, without)}
        assert len(rows) == 1, rows
        (prompt, completion, cost, estimated) = rows.pop()
        assert estimated is omit and prompt > 0 and completion > 0 and cost > 0
