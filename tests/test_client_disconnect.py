"""A client that goes away while the gateway serves its model request, through the real
gateway and the provider simulator with a raw socket client that hangs up:

* a stream, before the upstream's first chunk (the simulator answers late),
* a stream, mid-answer (the simulator streams slowly),
* a non-stream request, while the gateway waits for the upstream's answer.

Each time the gateway notices promptly, closes the upstream connection (the simulator's
stream ends unfinished: no further tokens generated or paid for), settles what was produced
(estimated: the upstream's usage never came) and leaves exactly one record, status
``client_disconnected`` — never ``ok``, never ``pending`` — and goes on serving. A tester
found streams left before the first byte recorded ``ok`` with the whole answer pulled.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from gateway.disconnect import ClientWatch
from gateway.errors import ClientDisconnected
from tests.conftest import APP_KEY, GatewayUnderTest, make_config
from tests.support.provider_sim import ProviderSimulator, StreamRecord

CHAT = "/v1/chat/completions"
LONG = "one two three four five six seven eight nine ten eleven twelve"
NOTICED_WITHIN_S = 1.5
"""How soon after the hang-up the record must be final (the simulator answers later still)."""


@pytest.fixture(scope="module")
def gw(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> GatewayUnderTest:
    # "external": ext-cheap (sim_a) first by cost, ext-pricey (sim_b) as the fallback
    return start_gateway(
        make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url="http://127.0.0.1:9/v1")
    )


def _body(path: str, *, stream: bool) -> dict[str, Any]:
    if path == "/v1/messages":
        return {
            "model": "external",
            "max_tokens": 64,
            "stream": stream,
            "messages": [{"role": "user", "content": LONG}],
        }
    return {"model": "external", "stream": stream, "messages": [{"role": "user", "content": LONG}]}


def _send(gw: GatewayUnderTest, body: dict[str, Any], path: str = CHAT) -> socket.socket:
    """Send one request on a fresh connection and leave its answer unread."""
    url = urlsplit(gw.url)
    raw = json.dumps(body).encode()
    sock = socket.create_connection((url.hostname, url.port), timeout=10)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {APP_KEY}\r\nContent-Length: {len(raw)}\r\n\r\n".encode()
        + raw
    )
    gw.sent += 1  # the conftest invariant: one record per request sent
    return sock


def _request_ids(gw: GatewayUnderTest) -> set[str]:
    return {r["request_id"] for r in gw.records(limit=10_000)}


def _final_records(
    gw: GatewayUnderTest, before: set[str], count: int = 1, within_s: float = 10
) -> list[dict[str, Any]]:
    """Wait until ``count`` requests not in ``before`` have a final record (not pending)."""
    deadline = time.monotonic() + within_s
    while True:
        new = [r for r in gw.records(limit=10_000) if r["request_id"] not in before]
        if len(new) >= count and all(r["status"] != "pending" for r in new):
            return new
        if time.monotonic() > deadline:
            return new
        time.sleep(0.05)


def _sim_stream(sim: ProviderSimulator, within_s: float = 10) -> StreamRecord:
    """The simulator's one streamed answer, once its handler has ended."""
    deadline = time.monotonic() + within_s
    while not sim.streams and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(sim.streams) == 1, sim.streams
    return sim.streams[0]


def _hang_up_while_the_upstream_waits(
    gw: GatewayUnderTest, sim_a: ProviderSimulator, body: dict[str, Any], path: str = CHAT
) -> dict[str, Any]:
    """Send ``body`` to a primary that answers in 3 s, hang up after 0.5 s; the one record,
    asserted ``client_disconnected`` within :data:`NOTICED_WITHIN_S` of the hang-up."""
    sim_a.behave(delay_s=3, times=1)
    before = _request_ids(gw)
    sock = _send(gw, body, path)
    time.sleep(0.5)
    sock.close()
    closed = time.monotonic()
    records = _final_records(gw, before, within_s=6)
    noticed_after = time.monotonic() - closed
    assert len(records) == 1, records
    rec = records[0]
    assert rec["status"] == "client_disconnected", rec
    assert noticed_after < NOTICED_WITHIN_S, f"recorded {noticed_after:.2f} s after the hang-up"
    return rec


def _still_serves(gw: GatewayUnderTest) -> None:
    r = gw.post(CHAT, json={"model": "external", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
    assert gw.record(r.headers["x-request-id"])["status"] == "ok"


@pytest.mark.parametrize("path", [CHAT, "/v1/messages"])
def test_a_stream_left_before_the_first_chunk_is_cancelled_and_recorded_client_disconnected(
    gw: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator, path: str
) -> None:
    rec = _hang_up_while_the_upstream_waits(gw, sim_a, _body(path, stream=True), path)
    assert rec["stream"] is True and rec["http_status"] == 499
    assert "first chunk" in rec["error"]
    assert [(a["deployment"], a["outcome"]) for a in rec["attempts"]] == [("ext-cheap", "cancelled")]
    assert rec["chosen_deployment"] == "ext-cheap"
    # nothing produced; the prompt (estimated: no usage came) is what may have been paid for
    assert rec["completion_tokens"] == 0 and rec["prompt_tokens"] > 0 and rec["tokens_estimated"] is True
    assert rec["cost_usd"] > 0
    assert sim_b.requests == []  # a hang-up is no reason to try the next deployment
    seen = _sim_stream(sim_a)  # the simulator's late answer found the connection closed
    assert not seen.finished and seen.content_chunks == 0
    _still_serves(gw)


def test_a_stream_left_mid_answer_stops_the_upstream_and_is_recorded_client_disconnected(
    gw: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    sim_a.behave(stream_chunk_delay_s=0.3, times=1)  # 12 content chunks: 3.6 s in full
    before = _request_ids(gw)
    sock = _send(gw, _body(CHAT, stream=True))
    received = b""
    while b"simulated" not in received:  # the first content chunk
        data = sock.recv(65536)
        assert data, received
        received += data
    assert received.startswith(b"HTTP/1.1 200")
    sock.close()
    closed = time.monotonic()
    records = _final_records(gw, before, within_s=6)
    noticed_after = time.monotonic() - closed
    assert len(records) == 1, records
    rec = records[0]
    assert rec["status"] == "client_disconnected", rec
    assert noticed_after < NOTICED_WITHIN_S, f"recorded {noticed_after:.2f} s after the hang-up"
    assert rec["stream"] is True and rec["http_status"] == 200
    assert [(a["deployment"], a["outcome"]) for a in rec["attempts"]] == [("ext-cheap", "cancelled")]
    seen = _sim_stream(sim_a)
    assert not seen.finished and seen.content_chunks < seen.total_chunks, seen
    # what was produced, estimated (the usage chunk never came): fewer tokens than the answer
    assert rec["tokens_estimated"] is True
    assert 1 <= rec["completion_tokens"] < seen.total_chunks
    assert rec["prompt_tokens"] > 0 and rec["cost_usd"] > 0
    assert sim_b.requests == []
    _still_serves(gw)


def test_a_non_stream_request_left_while_the_upstream_works_is_cancelled_and_recorded(
    gw: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    """Like LiteLLM's proxy (which cancels the provider call on ``http.disconnect``) and
    Kong/nginx (which close the upstream connection and log 499): the upstream call is
    cancelled, not finished for nobody."""
    rec = _hang_up_while_the_upstream_waits(gw, sim_a, _body(CHAT, stream=False))
    assert rec["stream"] is False and rec["http_status"] == 499
    assert [(a["deployment"], a["outcome"]) for a in rec["attempts"]] == [("ext-cheap", "cancelled")]
    assert rec["completion_tokens"] == 0 and rec["prompt_tokens"] > 0 and rec["tokens_estimated"] is True
    assert sim_b.requests == []
    _still_serves(gw)


def test_rapid_hang_ups_before_the_first_chunk_each_leave_one_client_disconnected_record(
    gw: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    """The tester's repro, in small: many streams dropped at once while the upstream has not
    answered yet (it did answer in full for most of them: 31 of 40 were recorded ok)."""
    sim_a.reset()  # streams of earlier tests off the simulator's list
    sim_a.behave(delay_s=1.5)
    before = _request_ids(gw)
    sent_at = time.monotonic()
    socks = [_send(gw, _body(CHAT, stream=True)) for _ in range(12)]
    for n, sock in enumerate(socks):
        time.sleep(0.02 * (n % 4))
        sock.close()
    records = _final_records(gw, before, count=len(socks), within_s=8)
    assert len(records) == len(socks)
    assert sorted(r["status"] for r in records) == ["client_disconnected"] * len(socks)
    assert all(r["completion_tokens"] == 0 for r in records)
    assert sim_b.requests == []
    time.sleep(max(0.0, sent_at + 2.5 - time.monotonic()))  # past the upstream's delay
    # None was pulled. A request whose client was gone before its upstream call was never sent
    # (also client_disconnected): at most one stream per request reached the simulator.
    assert len(sim_a.streams) <= len(socks)
    assert [s.content_chunks for s in sim_a.streams] == [0] * len(sim_a.streams)
    sim_a.reset()
    _still_serves(gw)


def test_the_watch_turns_only_its_own_cancellation_into_client_disconnected() -> None:
    """gateway/disconnect.py without a server: a hang-up cancels an upstream region
    (ClientDisconnected); another cancellation of the task passes through as such; an
    answer within WATCH_AFTER_S never starts the watcher task (the non-stream hot path)."""

    async def scenario() -> None:
        hang_up = asyncio.Event()

        async def receive() -> dict[str, str]:
            await hang_up.wait()
            return {"type": "http.disconnect"}

        fast = ClientWatch(receive)
        with fast.upstream("quickly", after_s=0.1):
            await asyncio.sleep(0.01)
        assert fast._task is None
        fast.close()

        watch = ClientWatch(receive)
        asyncio.get_running_loop().call_later(0.05, hang_up.set)
        with (
            pytest.raises(ClientDisconnected, match="the client disconnected while waiting"),
            watch.upstream("while waiting"),
        ):
            await asyncio.sleep(5)
        assert watch.gone
        with pytest.raises(ClientDisconnected), watch.upstream("again"):  # nothing is sent once gone
            raise AssertionError("entered")
        watch.close()

        async def cancelled_from_outside() -> None:
            other = ClientWatch(receive)
            try:
                with other.upstream("outside"):
                    await asyncio.sleep(5)
            finally:
                other.close()

        hang_up.clear()
        task = asyncio.get_running_loop().create_task(cancelled_from_outside())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
