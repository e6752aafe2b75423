"""The local model server `make run` starts: refused on a taken port (a server left by a
killed run would otherwise answer in its place), and gone when its parent is SIGKILLed."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gateway.config import GatewayConfig, parse_config
from gateway.localmodel import SMOLLM2_ALIAS, ensure_port_free, point_at_local_model, start_llama_server
from tests.conftest import ROOT
from tests.support.servers import free_port


def test_a_taken_model_port_is_refused_with_a_hint() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(RuntimeError, match=rf"port {port} .* already in use .*fuser -k {port}/tcp"):
            start_llama_server(port)


def test_the_model_server_dies_with_a_sigkilled_parent() -> None:
    port = free_port()
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom gateway.localmodel import start_llama_server\n"
         f"p = start_llama_server({port})\nprint(p.pid, flush=True)\ntime.sleep(120)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                return
            with open(f"/proc/{child}/stat") as fh:  # a zombie awaiting init's reap is gone too
                if fh.read().split(") ", 1)[1].startswith("Z"):
                    return
            time.sleep(0.2)
        pytest.fail("the llama.cpp server outlived its SIGKILLed parent")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def test_a_port_left_in_time_wait_by_a_stopped_server_is_free() -> None:
    """Stop-then-restart of `make run`: the old server's closed connections sit in TIME_WAIT
    for a minute; only a socket still listening means the port is taken."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn (llama.cpp's server) does
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = server.accept()
        conn.close()  # the server side closes first: its end of the connection enters TIME_WAIT
        client.close()
    with socket.socket() as plain, pytest.raises(OSError):  # what the check used to do
        plain.bind(("127.0.0.1", port))
    ensure_port_free("127.0.0.1", port)


def _config_with_local_api_base(api_base: str) -> GatewayConfig:
    doc = yaml.safe_load((ROOT / "gateway.yaml").read_text())
    local = next(d for d in doc["deployments"] if d["model"] == SMOLLM2_ALIAS)
    local["api_base"] = api_base
    return parse_config(doc)


@pytest.mark.parametrize(
    ("api_base", "flag", "port", "expected"),
    [
        ("http://127.0.0.1:8081/v1", None, 8081, "http://127.0.0.1:8081/v1"),
        ("http://127.0.0.1:8081/v1", 8096, 8096, "http://127.0.0.1:8096/v1"),  # --model-port re-points it
        ("http://localhost:8082/v1", None, 8082, "http://localhost:8082/v1"),  # the config's port is used
        ("http://127.0.0.1/v1", None, 80, "http://127.0.0.1:80/v1"),
    ],
)
def test_the_local_model_deployment_follows_the_model_port(
    api_base: str, flag: int | None, port: int, expected: str
) -> None:
    """`gateway up --model-port P` used to start the model on P while the deployment kept
    pointing at 8081, where anything listening got confidential requests."""
    config = _config_with_local_api_base(api_base)
    pointed, chosen = point_at_local_model(config, flag)
    assert chosen == port
    local = next(d for d in pointed.deployments if d.model == SMOLLM2_ALIAS)
    assert local.api_base == expected
    others = [d for d in pointed.deployments if d.model != SMOLLM2_ALIAS]
    assert others == [d for d in config.deployments if d.model != SMOLLM2_ALIAS]


def test_gateway_up_refuses_a_taken_gateway_port_before_starting_anything(tmp_path: Path) -> None:
    """`gateway up --port P` with P held used to start the model server, print the banner and
    then die with uvicorn's raw 'address already in use'."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        model_port = free_port()
        done = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "up", "--config", str(ROOT / "gateway.yaml"),
             "--port", str(port), "--model-port", str(model_port)],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in done.stderr and "GATEWAY_PORT" in done.stderr
    assert "starting local model" not in done.stdout
    ensure_port_free("127.0.0.1", model_port)  # no model server was started
