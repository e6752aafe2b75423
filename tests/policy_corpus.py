"""Shared policy corpus: policy inputs with the exact decision the library in ``policies/`` must give.

Every engine (embedded regopy, an OPA server) must answer every item identically and equal to
``expect``: ``allow``, ``eligible`` (in order), ``excluded`` (id → sorted reason texts),
``obligations`` and ``reasons``.

Two parts:

* :data:`GENERATED` — the product of data levels (4) x tenant residency tables (2) x request
  shapes (3: capabilities, context size) x deployment states (2: health, training, retention)
  over four deployments in two localities and three jurisdictions; expected decisions come
  from :func:`oracle`, a plain-Python restatement of the routing rules written from the
  README's policy description, independent of any Rego engine;
* :data:`ODD` — hand-written inputs the oracle does not model: missing fields, unknown or
  absent levels, wrong types, empty rules, no deployments, huge token counts, obligations.

``opa_text_may_differ``: items whose reason *texts* depend on rego-cpp's number handling (a
token total past 2**63 is undefined in rego-cpp, exact in OPA); against a real OPA only the
allow/eligible/excluded-ids/obligations of those are compared.
"""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CORPUS", "GENERATED", "ODD", "CorpusItem", "decision_view", "oracle"]

LEVEL_RANK = {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}
TENANT = "acme-eu"


@dataclass(frozen=True)
class CorpusItem:
    """One policy input (``input``) and the decision view it must produce (``expect``)."""

    id: str
    input: dict[str, Any]
    expect: dict[str, Any]
    opa_text_may_differ: bool = field(default=False)


def decision_view(allow: bool, eligible: Any, excluded: Any, obligations: Any, reasons: Any) -> dict[str, Any]:
    """The comparable part of a decision (engine, revision and timing left out)."""
    return {
        "allow": allow,
        "eligible": list(eligible),
        "excluded": {k: list(v) for k, v in excluded.items()},
        "obligations": dict(obligations),
        "reasons": list(reasons),
    }


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------

DEPLOYMENTS: list[dict[str, Any]] = [
    {"id": "local-eu", "locality": "local", "jurisdiction": "EU", "region": "eu-central-dc1",
     "retains_data": False, "trains_on_data": False, "capabilities": ["stream", "tools", "json"],
     "context_window": 8192},
    {"id": "ext-eu", "locality": "external", "jurisdiction": "EU", "region": "eu-west",
     "retains_data": False, "trains_on_data": False, "capabilities": ["stream", "tools"],
     "context_window": 128000},
    {"id": "ext-us", "locality": "external", "jurisdiction": "US", "region": "us-east",
     "retains_data": False, "trains_on_data": False, "capabilities": ["stream", "tools", "json", "vision"],
     "context_window": 200000},
    {"id": "ext-ch", "locality": "external", "jurisdiction": "CH", "region": "ch-zurich",
     "retains_data": True, "trains_on_data": False, "capabilities": ["stream"],
     "context_window": 32768},
]  # fmt: skip

TENANT_TABLES: dict[str, dict[str, Any]] = {
    # residency by locality for the top levels, by jurisdiction for internal
    "strict": {
        "public": {"any": True},
        "internal": {"jurisdictions": ["EU", "CH"]},
        "confidential": {"locality": ["local"]},
        "restricted": {"locality": ["local"]},
    },
    # looser: anything for internal, EU for confidential, no rule at all for restricted
    "loose": {
        "public": {"any": True},
        "internal": {"any": True},
        "confidential": {"jurisdictions": ["EU"]},
    },
}

REQUESTS: dict[str, dict[str, Any]] = {
    "plain": {"needs": [], "est_input_tokens": 100, "max_output_tokens": 100},
    "json": {"needs": ["json"], "est_input_tokens": 1000, "max_output_tokens": 500},
    "vision-long": {"needs": ["stream", "vision"], "est_input_tokens": 9000, "max_output_tokens": 1000},
}

STATES: dict[str, dict[str, dict[str, Any]]] = {
    "healthy": {},
    "degraded": {"local-eu": {"healthy": False}, "ext-eu": {"trains_on_data": True}},
}


def make_input(
    *,
    level: str | None = "public",
    allowed: dict[str, Any] | None = None,
    request: dict[str, Any] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    capture_prompts: bool = False,
) -> dict[str, Any]:
    """A policy input shaped like ``gateway.policy.build_input``'s, over :data:`DEPLOYMENTS`.

    ``overrides`` maps deployment id → fields to set. ``level=None`` leaves ``data.level`` out.
    """
    deployments = []
    for base in DEPLOYMENTS:
        dep = {
            **copy.deepcopy(base),
            "adapter": "openai_compat",
            "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
            "quality": 0.5,
            "healthy": True,
        }
        dep.update((overrides or {}).get(base["id"], {}))
        deployments.append(dep)
    data: dict[str, Any] = {"labels": [], "declared": None, "detected": level}
    if level is not None:
        data["level"] = level
    return {
        "principal": {"tenant": TENANT, "key_id": "k_corpus", "roles": ["app"], "home_region": "eu"},
        "request": {"id": "req_corpus", "endpoint": "chat.completions", "model": "auto",
                    **(request or REQUESTS["plain"])},
        "data": data,
        "tenant": {"floor": "public", "allowed": copy.deepcopy(TENANT_TABLES["strict"] if allowed is None else allowed),
                   "capture_prompts": capture_prompts},
        "deployments": deployments,
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Oracle: the routing rules in Python, for well-formed inputs
# ---------------------------------------------------------------------------------------------


def _v(value: Any) -> str:
    """Rego's ``%v`` of an array of strings: ``["EU", "CH"]``."""
    return json.dumps(value)


UNHEALTHY = (
    "deployment is unhealthy (circuit breaker open after repeated failures) or not configured (its API key is not set)"
)


def oracle(policy_input: dict[str, Any]) -> dict[str, Any]:
    """The decision view the library gives for a *well-formed* input (every field present
    and typed as the gateway sends it). Odd inputs are in :data:`ODD` with written answers."""
    level = policy_input["data"]["level"]
    allowed = policy_input["tenant"]["allowed"]
    req = policy_input["request"]
    rule = allowed.get(level)
    total = req["est_input_tokens"] + req["max_output_tokens"]
    found: dict[str, set[str]] = {}
    for d in policy_input["deployments"]:
        msgs: set[str] = set()
        if not rule:
            msgs.add(f"tenant {TENANT} has no residency rule for {level} data, so nothing may receive it")
        else:
            if not rule.get("any") and "locality" not in rule and "jurisdictions" not in rule:
                msgs.add(f"the residency rule for {level} data lists no allowed locality or jurisdiction")
            if not rule.get("any") and "locality" in rule and d["locality"] not in rule["locality"]:
                msgs.add(f"locality {d['locality']} is not allowed for {level} data (allowed: {_v(rule['locality'])})")
            if not rule.get("any") and "jurisdictions" in rule and d["jurisdiction"] not in rule["jurisdictions"]:
                msgs.add(
                    f"jurisdiction {d['jurisdiction']} is not allowed for {level} data"
                    f" (allowed: {_v(rule['jurisdictions'])})"
                )
        if level not in LEVEL_RANK:
            msgs.add("the request's data level is unknown, so nothing may receive it")
        rank = LEVEL_RANK.get(level, -1)
        if d["trains_on_data"] is not False and rank >= 1:
            msgs.add(f"deployment trains on submitted data, which is not allowed for {level} data")
        if d["retains_data"] is not False and rank >= 2:
            msgs.add(f"deployment retains submitted data, which is not allowed for {level} data")
        for need in req["needs"]:
            if need not in d["capabilities"]:
                msgs.add(f"deployment lacks the required capability {need}")
        if not d["context_window"] >= total:
            msgs.add(
                f"context window of {d['context_window']} tokens is smaller than the request's estimated {total} tokens"
            )
        if d["healthy"] is not True:
            msgs.add(UNHEALTHY)
        if msgs:
            found[d["id"]] = msgs
    eligible = [d["id"] for d in policy_input["deployments"] if d["id"] not in found]
    n = len(policy_input["deployments"])
    reasons = (
        [f"{len(eligible)} of {n} deployments eligible for {level} data"]
        if eligible
        else ["no deployment is eligible for this request"]
    )
    obligations = {"capture_prompt": True} if policy_input["tenant"].get("capture_prompts") is True else {}
    return decision_view(bool(eligible), eligible, {k: sorted(v) for k, v in found.items()}, obligations, reasons)


GENERATED: list[CorpusItem] = []
for _level, _table, _req, _state in itertools.product(LEVEL_RANK, TENANT_TABLES, REQUESTS, STATES):
    _inp = make_input(level=_level, allowed=TENANT_TABLES[_table], request=REQUESTS[_req], overrides=STATES[_state])
    GENERATED.append(CorpusItem(id=f"{_level}-{_table}-{_req}-{_state}", input=_inp, expect=oracle(_inp)))


# ---------------------------------------------------------------------------------------------
# Odd inputs, answers written by hand
# ---------------------------------------------------------------------------------------------

ALL = [d["id"] for d in DEPLOYMENTS]
NOTHING = ["no deployment is eligible for this request"]
UNKNOWN_LEVEL = "the request's data level is unknown, so nothing may receive it"
NO_ESTIMATE = (
    "the request's token estimate is missing or out of range, so it cannot be checked against the context window"
)
LOCAL_ONLY_CONF = 'locality external is not allowed for confidential data (allowed: ["local"])'


def _too_big(dep_id: str, total: int) -> str:
    """The context-window reason for a request far beyond every window (%v prints it exactly)."""
    window = next(d["context_window"] for d in DEPLOYMENTS if d["id"] == dep_id)
    return f"context window of {window} tokens is smaller than the request's estimated {total} tokens"


def _without(policy_input: dict[str, Any], dep_id: str, key: str) -> dict[str, Any]:
    for d in policy_input["deployments"]:
        if d["id"] == dep_id:
            del d[key]
    return policy_input


def _request_without(policy_input: dict[str, Any], key: str) -> dict[str, Any]:
    del policy_input["request"][key]
    return policy_input


def _deny_all(reason_by_id: dict[str, list[str]]) -> dict[str, Any]:
    return decision_view(False, [], reason_by_id, {}, NOTHING)


def _no_deployments() -> dict[str, Any]:
    inp = make_input()
    inp["deployments"] = []
    return inp


def _no_allowed_table() -> dict[str, Any]:
    inp = make_input(level="public")
    del inp["tenant"]["allowed"]
    return inp


ODD: list[CorpusItem] = [
    CorpusItem(
        "odd-unknown-level",
        make_input(level="top-secret"),
        # an unknown level also fails the data-handling thresholds (ext-ch retains data)
        _deny_all({i: [f"tenant {TENANT} has no residency rule for top-secret data, so nothing may receive it",
                       UNKNOWN_LEVEL] for i in ALL}
                  | {"ext-ch": ["deployment retains submitted data, which is not allowed for top-secret data",
                                f"tenant {TENANT} has no residency rule for top-secret data, so nothing may receive it",
                                UNKNOWN_LEVEL]}),
    ),
    CorpusItem("odd-missing-level", make_input(level=None), _deny_all({i: [UNKNOWN_LEVEL] for i in ALL})),
    CorpusItem(
        "odd-no-allowed-table",
        _no_allowed_table(),
        _deny_all({i: [f"tenant {TENANT} has no residency rule for public data, so nothing may receive it"]
                   for i in ALL}),
    ),
    CorpusItem(
        "odd-rule-any-false-and-empty",
        make_input(level="restricted", allowed={"restricted": {"any": False}}),
        _deny_all({i: ["the residency rule for restricted data lists no allowed locality or jurisdiction"]
                   for i in ALL[:3]}
                  | {"ext-ch": ["deployment retains submitted data, which is not allowed for restricted data",
                                "the residency rule for restricted data lists no allowed locality or jurisdiction"]}),
    ),
    CorpusItem(
        "odd-empty-locality-list",
        make_input(level="confidential", allowed={"confidential": {"locality": []}}),
        _deny_all({
            "local-eu": ["locality local is not allowed for confidential data (allowed: [])"],
            "ext-eu": ["locality external is not allowed for confidential data (allowed: [])"],
            "ext-us": ["locality external is not allowed for confidential data (allowed: [])"],
            "ext-ch": ["deployment retains submitted data, which is not allowed for confidential data",
                       "locality external is not allowed for confidential data (allowed: [])"],
        }),
    ),
    CorpusItem(
        "odd-missing-locality",
        _without(make_input(level="confidential"), "local-eu", "locality"),
        _deny_all({
            "local-eu": ['deployment declares no locality, which is not allowed for confidential data '
                         '(allowed: ["local"])'],
            "ext-eu": [LOCAL_ONLY_CONF],
            "ext-us": [LOCAL_ONLY_CONF],
            "ext-ch": ["deployment retains submitted data, which is not allowed for confidential data",
                       LOCAL_ONLY_CONF],
        }),
    ),
    CorpusItem(
        "odd-missing-jurisdiction",
        _without(make_input(level="internal"), "ext-eu", "jurisdiction"),
        decision_view(True, ["local-eu", "ext-ch"], {
            "ext-eu": ['deployment declares no jurisdiction, which is not allowed for internal data '
                       '(allowed: ["EU", "CH"])'],
            "ext-us": ['jurisdiction US is not allowed for internal data (allowed: ["EU", "CH"])'],
        }, {}, ["2 of 4 deployments eligible for internal data"]),
    ),
    CorpusItem(
        "odd-missing-trains-on-data",
        _without(make_input(level="internal"), "local-eu", "trains_on_data"),
        decision_view(True, ["ext-eu", "ext-ch"], {
            "local-eu": ["deployment trains on submitted data, which is not allowed for internal data"],
            "ext-us": ['jurisdiction US is not allowed for internal data (allowed: ["EU", "CH"])'],
        }, {}, ["2 of 4 deployments eligible for internal data"]),
    ),
    CorpusItem(
        "odd-missing-retains-data",
        _without(make_input(level="confidential"), "local-eu", "retains_data"),
        _deny_all({
            "local-eu": ["deployment retains submitted data, which is not allowed for confidential data"],
            "ext-eu": [LOCAL_ONLY_CONF],
            "ext-us": [LOCAL_ONLY_CONF],
            "ext-ch": ["deployment retains submitted data, which is not allowed for confidential data",
                       LOCAL_ONLY_CONF],
        }),
    ),
    CorpusItem(
        "odd-trains-on-data-null",
        make_input(level="internal", overrides={"ext-ch": {"trains_on_data": None}}),
        decision_view(True, ["local-eu", "ext-eu"], {
            "ext-ch": ["deployment trains on submitted data, which is not allowed for internal data"],
            "ext-us": ['jurisdiction US is not allowed for internal data (allowed: ["EU", "CH"])'],
        }, {}, ["2 of 4 deployments eligible for internal data"]),
    ),
    CorpusItem(
        "odd-missing-healthy",
        _without(make_input(), "ext-us", "healthy"),
        decision_view(True, ["local-eu", "ext-eu", "ext-ch"], {"ext-us": [UNHEALTHY]}, {},
                      ["3 of 4 deployments eligible for public data"]),
    ),
    CorpusItem(
        "odd-healthy-as-string",
        make_input(overrides={"ext-eu": {"healthy": "yes"}}),
        decision_view(True, ["local-eu", "ext-us", "ext-ch"], {"ext-eu": [UNHEALTHY]}, {},
                      ["3 of 4 deployments eligible for public data"]),
    ),
    CorpusItem(
        "odd-missing-capabilities",
        _without(make_input(request=REQUESTS["json"]), "local-eu", "capabilities"),
        decision_view(True, ["ext-us"], {
            "local-eu": ["deployment lacks the required capability json"],
            "ext-eu": ["deployment lacks the required capability json"],
            "ext-ch": ["deployment lacks the required capability json"],
        }, {}, ["1 of 4 deployments eligible for public data"]),
    ),
    CorpusItem(
        "odd-duplicate-needs-give-one-reason",
        make_input(request={"needs": ["vision", "vision"], "est_input_tokens": 1, "max_output_tokens": 1}),
        decision_view(True, ["ext-us"], {i: ["deployment lacks the required capability vision"]
                                         for i in ("local-eu", "ext-eu", "ext-ch")}, {},
                      ["1 of 4 deployments eligible for public data"]),
    ),
    CorpusItem(
        "odd-missing-context-window",
        _without(make_input(), "ext-ch", "context_window"),
        decision_view(True, ["local-eu", "ext-eu", "ext-us"], {"ext-ch": [NO_ESTIMATE]}, {},
                      ["3 of 4 deployments eligible for public data"]),
    ),
    CorpusItem(
        "odd-missing-token-estimate",
        _request_without(make_input(), "est_input_tokens"),
        _deny_all({i: [NO_ESTIMATE] for i in ALL}),
    ),
    CorpusItem(
        "odd-context-exactly-full",
        make_input(request={"needs": [], "est_input_tokens": 8000, "max_output_tokens": 192}),
        decision_view(True, ALL, {}, {}, ["4 of 4 deployments eligible for public data"]),
    ),
    CorpusItem(
        "odd-context-one-token-over",
        make_input(request={"needs": [], "est_input_tokens": 8000, "max_output_tokens": 193}),
        decision_view(True, ALL[1:], {
            "local-eu": ["context window of 8192 tokens is smaller than the request's estimated 8193 tokens"],
        }, {}, ["3 of 4 deployments eligible for public data"]),
    ),
    CorpusItem(
        "odd-huge-max-output-2p63",
        make_input(request={"needs": [], "est_input_tokens": 100, "max_output_tokens": 2**63 - 1}),
        _deny_all({i: [_too_big(i, 2**63 - 1 + 100)] for i in ALL}),
        opa_text_may_differ=True,
    ),
    CorpusItem(
        "odd-huge-max-output-1e30",
        make_input(request={"needs": [], "est_input_tokens": 100, "max_output_tokens": 10**30}),
        _deny_all({i: [_too_big(i, 10**30 + 100)] for i in ALL}),
        opa_text_may_differ=True,
    ),
    CorpusItem(
        "odd-no-deployments",
        _no_deployments(),
        decision_view(False, [], {}, {}, NOTHING),
    ),
    CorpusItem(
        "odd-capture-prompts-obligation",
        make_input(level="confidential", capture_prompts=True),
        decision_view(True, ["local-eu"], {
            "ext-eu": [LOCAL_ONLY_CONF],
            "ext-us": [LOCAL_ONLY_CONF],
            "ext-ch": ["deployment retains submitted data, which is not allowed for confidential data",
                       LOCAL_ONLY_CONF],
        }, {"capture_prompt": True}, ["1 of 4 deployments eligible for confidential data"]),
    ),
]  # fmt: skip

CORPUS: list[CorpusItem] = GENERATED + ODD
