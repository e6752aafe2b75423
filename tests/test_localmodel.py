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

import pytest

from gateway.localmodel import start_llama_server
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
