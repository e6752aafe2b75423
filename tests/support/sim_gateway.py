"""A gateway configuration made of provider simulators only, for endpoint and SDK tests that
do not need the real local model: one simulator plays the *local* deployment (on-prem, EU),
two play external providers (EU and US). Egress is asserted on what each simulator received.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from tests.conftest import make_config
from tests.support.provider_sim import ProviderSimulator

__all__ = ["CARD", "EMAIL", "IBAN", "IBAN_COMPACT", "SECRET_PROMPT", "leaked", "sim_config"]

IBAN = "DE89 3704 0044 0532 0130 00"
IBAN_COMPACT = IBAN.replace(" ", "")
CARD = "4111111111111111"
"""A Luhn-valid test card number (Visa's documented test number)."""
EMAIL = "erika.mustermann@example.de"
SECRET_PROMPT = f"Pay invoice 2231 to IBAN {IBAN} and confirm to {EMAIL}."
"""A prompt the built-in detectors classify confidential (pii.iban, pii.email)."""


def sim_config(
    *, local: ProviderSimulator, ext_eu: ProviderSimulator, ext_us: ProviderSimulator, **server: Any
) -> dict[str, Any]:
    """tests/conftest.py's config with the local model replaced by the ``local`` simulator
    (locality local), every deployment able to embed, and ``server`` settings merged in."""
    config = copy.deepcopy(make_config(sim_a_url=ext_eu.base_url, sim_b_url=ext_us.base_url, llama_url=local.base_url))
    for dep in config["deployments"]:
        dep["capabilities"] = ["stream", "tools", "json", "embeddings", "prompt_arrays"]
        dep["timeout_s"] = 5
    config["deployments"][0]["id"] = "local-sim"
    config["deployments"][0]["model"] = "local-model"
    config["deployments"][0]["context_window"] = 32768
    for alias in config["aliases"].values():
        alias["deployments"] = ["local-sim" if d == "local-smollm2" else d for d in alias["deployments"]]
    config["server"] = {**config["server"], **server}
    return config


def leaked(sim: ProviderSimulator, *needles: str) -> list[str]:
    """Paths of requests ``sim`` received whose raw body (or its JSON, unescaped) holds any
    of ``needles``: data that reached the provider."""
    out = []
    for request in sim.requests:
        text = request.body.decode("utf-8", "replace")
        if request.json is not None:
            text += json.dumps(request.json, ensure_ascii=False)
        if any(n in text for n in needles):
            out.append(request.path)
    return out
