"""Policy as code, production grade (issue 4): the policy library's own table tests, METADATA on
every exclusion rule, versioned policies (push → validate → test → activate → roll back) through
the admin API and the CLI, refusal of policies the engine cannot run (the active one stays),
activation audited and in force on every gateway sharing the database, the incident kill
switch, the decision cache, explain and what-if replay over a generated day of traffic.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gateway.audit.ledger import Signer
from gateway.audit.store import AuditStore
from gateway.auth import hash_key
from gateway.cli import app as cli
from gateway.context import Classification, DataLevel, Principal, RequestContext
from gateway.policy import load_bundle
from gateway.policy.embedded import Evaluator
from gateway.policy.replay import rule_catalog
from gateway.policy.testing import cases_from_documents, load_tests, run_tests
from tests.conftest import APP_KEY, AUDITOR_KEY, OTHER_TENANT_KEY, ROOT, GatewayUnderTest, make_config
from tests.support.provider_sim import ProviderSimulator
from tests.support.redis_keys import REDIS_URL, drop_keys, run_prefix

POLICY_DIR = ROOT / "policies"
ADMIN_KEY = "sk-test-policy-admin"
TENANT_ADMIN_KEY = "sk-test-policy-tenant-admin"
POLICIES = "/v1/admin/policies"
CHAT = "/v1/chat/completions"
EXTERNAL = {"model": "external", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}

CASES = load_tests(POLICY_DIR)


# ---------------------------------------------------------------------------------------------
# The library: table tests beside each policy, METADATA on each exclusion rule
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[f"{c.file}:{c.name}" for c in CASES])
def test_policy_library_table_case(case: Any) -> None:
    (result,) = run_tests(load_bundle(POLICY_DIR), [case])
    assert result.passed, result.problems


def test_every_policy_module_has_its_tests_beside_it() -> None:
    modules = {p.stem for p in POLICY_DIR.glob("*.rego")}
    tested = {Path(c.file).name.removesuffix("_test.yaml") for c in CASES}
    assert modules - {"levels", "exclusions"} <= tested


def test_the_table_runner_reports_a_wrong_expectation() -> None:
    base = json.loads((POLICY_DIR / "testdata" / "input.json").read_text())
    cases = cases_from_documents(
        {"x_test.yaml": "cases:\n  - name: wrong\n    expect: {allow: false, rules: {ext-us: [unhealthy]}}\n"}, base
    )
    (result,) = run_tests(load_bundle(POLICY_DIR), cases)
    assert not result.passed and any(p.startswith("allow:") for p in result.problems)


def test_every_exclusion_rule_carries_metadata_with_title_short_name_and_message() -> None:
    bundle = load_bundle(POLICY_DIR)
    catalog = rule_catalog(bundle)
    emitted = set()
    for source in bundle.modules.values():
        emitted |= set(re.findall(r'exclusion contains \{"deployment": d\.id, "rule": "(\w+)"', source))
    assert len(emitted) >= 13
    assert emitted == set(catalog), "every emitted rule name has METADATA and vice versa"
    for name in emitted:
        assert catalog[name]["title"] and catalog[name]["message"], name


# ---------------------------------------------------------------------------------------------
# Versions through the admin API
# ---------------------------------------------------------------------------------------------


def _doc(sim_a: ProviderSimulator, sim_b: ProviderSimulator, **policy: Any) -> dict[str, Any]:
    doc = make_config(sim_a_url=sim_a.base_url, sim_b_url=sim_b.base_url, llama_url="http://127.0.0.1:9/v1")
    admin = {"id": "k_policy_admin", "hash": hash_key(ADMIN_KEY), "tenant": "acme-eu", "roles": ["admin"]}
    doc["keys"] += [
        {**admin, "all_tenants": True},  # policies apply to every tenant
        {**admin, "id": "k_tenant_admin", "hash": hash_key(TENANT_ADMIN_KEY)},
    ]
    doc["policy"].update(policy)
    return doc


def _with_module(extra: dict[str, str]) -> dict[str, Any]:
    bundle = load_bundle(POLICY_DIR)
    return {"modules": {**bundle.modules, **extra}, "data": bundle.data}


def _admin(gw: GatewayUnderTest, path: str, body: dict[str, Any] | None = None) -> Any:
    return gw.post(path, key=ADMIN_KEY, json=body or {})


@pytest.fixture(scope="module")
def gw(start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator) -> Any:
    return start_gateway(_doc(sim_a, sim_b))


def _active(gw: GatewayUnderTest) -> str:
    r = gw.client.get(POLICIES, headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 200, r.text
    return str(r.json()["active"])


def test_the_file_policy_is_bootstrapped_and_recorded(gw: GatewayUnderTest) -> None:
    r = gw.client.get(POLICIES, headers={"authorization": f"Bearer {ADMIN_KEY}"})
    body = r.json()
    assert body["active"] == load_bundle(POLICY_DIR).revision
    assert body["activations"][-1]["action"] == "bootstrap"
    boot = [rec for rec in gw.records(limit=10_000) if rec["endpoint"] == "policy.bootstrap"]
    assert len(boot) == 1 and boot[0]["admin"]["to"] == body["active"] and boot[0]["request_id"].startswith("sys_")


def test_listing_policies_needs_the_admin_role(gw: GatewayUnderTest) -> None:
    r = gw.client.get(POLICIES, headers={"authorization": f"Bearer {APP_KEY}"})
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"


@pytest.mark.parametrize(
    ("module", "fragment"),
    [
        (
            'package gateway.routing\n\nblocked_net if net.cidr_contains("10.0.0.0/8", "10.1.2.3")\n',
            "net.cidr_contains",
        ),
        ("package gateway.routing\n\ndecision := {\n", "does not compile"),
    ],
    ids=["unsupported-builtin", "syntax-error"],
)
def test_a_policy_the_engine_cannot_run_is_refused_at_push_and_the_active_one_stays(
    gw: GatewayUnderTest, sim_a: ProviderSimulator, module: str, fragment: str
) -> None:
    """policy.yaml policy-load-fails-closed: refused at push/activation with a clear error; the
    previously active policy stays active (never "loaded but silently undefined")."""
    before = _active(gw)
    r = _admin(gw, POLICIES, {**_with_module({"bad.rego": module}), "activate": True})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "policy_invalid" and err["param"] == "modules" and fragment in err["message"]
    assert _active(gw) == before
    rec = gw.record(r.headers["x-request-id"])
    assert rec["endpoint"] == "admin.policies.push" and rec["status"] == "invalid" and fragment in rec["error"]
    assert gw.post(CHAT, json=EXTERNAL).status_code == 200  # still serving under the active policy


def test_a_version_whose_tests_fail_is_refused(gw: GatewayUnderTest) -> None:
    before = _active(gw)
    body = _with_module({})
    body["data"] = {**body["data"], "killswitch": {"external_egress_blocked": True}}
    tests = {"killswitch_test.yaml": (POLICY_DIR / "killswitch_test.yaml").read_text()}
    base = json.loads((POLICY_DIR / "testdata" / "input.json").read_text())
    r = _admin(gw, POLICIES, {**body, "tests": tests, "test_input": base, "activate": True})
    assert r.status_code == 400 and r.json()["error"]["code"] == "policy_tests_failed", r.text
    assert "switch off, external egress allowed" in r.json()["error"]["message"]
    assert _active(gw) == before


def test_activate_and_roll_back_are_audited_and_in_force_at_once(
    gw: GatewayUnderTest, sim_a: ProviderSimulator, sim_b: ProviderSimulator
) -> None:
    start = _active(gw)
    r = _admin(gw, f"{POLICIES}/killswitch", {"blocked": True, "reason": "INC-42"})
    assert r.status_code == 200, r.text
    blocked_rev = r.json()["to"]
    assert r.json()["from"] == start and blocked_rev != start and r.json()["activated"] is True
    rec = gw.record(r.headers["x-request-id"])
    assert rec["endpoint"] == "admin.policies.killswitch" and rec["key_id"] == "k_policy_admin"
    assert rec["admin"]["from"] == start and rec["admin"]["to"] == blocked_rev and rec["admin"]["reason"] == "INC-42"

    sim_a.reset()
    sim_b.reset()
    denied = gw.post(CHAT, json=EXTERNAL)
    assert denied.status_code == 403, denied.text
    assert "kill switch" in json.dumps(denied.json())
    assert sim_a.requests == [] and sim_b.requests == []
    drec = gw.record(denied.headers["x-request-id"])
    assert drec["policy_revision"] == blocked_rev
    assert drec["excluded_rules"] == {
        "ext-cheap": ["external_egress_blocked"],
        "ext-pricey": ["external_egress_blocked"],
    }

    back = _admin(gw, f"{POLICIES}/rollback")
    assert back.status_code == 200, back.text
    assert {k: back.json()[k] for k in ("action", "from", "to")} == {
        "action": "rollback",
        "from": blocked_rev,
        "to": start,
    }
    assert back.json()["to_description"] == "(file)"
    assert gw.post(CHAT, json=EXTERNAL).status_code == 200
    listing = gw.client.get(POLICIES, headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()
    assert [a["action"] for a in listing["activations"][:2]] == ["rollback", "activate"]
    assert {v["revision"] for v in listing["versions"]} >= {start, blocked_rev}

    again = _admin(gw, f"{POLICIES}/{blocked_rev}/activate")  # a stored revision by its address
    assert again.status_code == 200 and again.json()["to"] == blocked_rev
    assert gw.post(CHAT, json=EXTERNAL).status_code == 403
    assert _admin(gw, f"{POLICIES}/rollback", {"to": start}).json()["to"] == start


@pytest.mark.parametrize(
    ("modules", "fragment"),
    [
        ({"a.rego": "package gateway.routing\n"}, "it is undefined"),
        ({"a.rego": 'package gateway.routing\n\ndecision := "yes"\n'}, "it is a str"),
        ({"a.rego": "package gateway.routing\n\ndecision := {}\n"}, "it is a dict"),
    ],
    ids=["no-decision", "decision-not-an-object", "decision-without-allow"],
)
def test_a_policy_without_a_well_formed_decision_is_refused(
    gw: GatewayUnderTest, modules: dict[str, str], fragment: str
) -> None:
    """policy.yaml policy-load-fails-closed: never "loaded but silently undefined"."""
    before = _active(gw)
    r = _admin(gw, POLICIES, {"modules": modules, "activate": True})
    assert r.status_code == 400 and r.json()["error"]["code"] == "policy_invalid", r.text
    assert fragment in r.json()["error"]["message"]
    assert _active(gw) == before


def test_an_api_push_without_tests_runs_the_tests_beside_the_configured_policies(gw: GatewayUnderTest) -> None:
    before = _active(gw)
    capped = _with_module({"cap.rego": CAP_OUTPUT})
    r = _admin(gw, POLICIES, {**capped, "activate": True})
    assert r.status_code == 400 and r.json()["error"]["code"] == "policy_tests_failed", r.text
    assert _active(gw) == before
    # With its own tests (here: none that the cap breaks) the same version is accepted.
    own = {
        "cap_test.yaml": "cases:\n  - name: big outputs are refused\n    input: {request: {max_output_tokens: 5000}}\n"
        "    expect: {allow: false, rules: {local-eu: [output_cap], ext-eu: [output_cap], ext-us: [output_cap]}}\n"
    }
    base = json.loads((POLICY_DIR / "testdata" / "input.json").read_text())
    ok = _admin(gw, POLICIES, {**capped, "tests": own, "test_input": base})
    assert ok.status_code == 200 and ok.json()["tests"] == 1 and ok.json()["activated"] is False, ok.text
    assert _active(gw) == before


CAP_OUTPUT = """package gateway.routing

# METADATA
# title: Output cap
# custom:
#   short_name: output_cap
#   message: "max output tokens above 100"
exclusion contains {"deployment": d.id, "rule": "output_cap", "message": "max output tokens above 100"} if {
	some d in input.deployments
	not input.request.max_output_tokens <= 100
}
"""


def test_policy_changes_need_an_all_tenant_admin_and_bad_fields_are_named(gw: GatewayUnderTest) -> None:
    before = _active(gw)
    for path, body in (
        (POLICIES, _with_module({})),
        (f"{POLICIES}/killswitch", {"blocked": True}),
        (f"{POLICIES}/rollback", {}),
        (f"{POLICIES}/{before}/activate", {}),
    ):
        r = gw.post(path, key=TENANT_ADMIN_KEY, json=body)
        assert r.status_code == 403 and "all_tenants" in r.json()["error"]["message"], (path, r.text)
        assert gw.record(r.headers["x-request-id"])["status"] == "forbidden"
    assert _active(gw) == before
    r = _admin(gw, POLICIES, {**_with_module({}), "activate": "yes"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "activate"
    r = _admin(gw, POLICIES, {"modules": {"../escape.rego": "package gateway.routing\n"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "modules"
    r = _admin(gw, f"{POLICIES}/whatif", {**_with_module({}), "since": "99999999d"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "since", r.text
    assert gw.record(r.headers["x-request-id"])["endpoint"] == "admin.policies.whatif"
    other = gw.post(f"{POLICIES}/whatif", key=TENANT_ADMIN_KEY, json={**_with_module({}), "tenant": "globex-us"})
    assert other.status_code == 403 and other.json()["error"]["param"] == "tenant"


def test_activating_an_unknown_revision_is_404(gw: GatewayUnderTest) -> None:
    r = _admin(gw, f"{POLICIES}/sha256:{'0' * 64}/activate")
    assert r.status_code == 404 and r.json()["error"]["code"] == "policy_not_found"


def test_bad_push_bodies_name_the_field(gw: GatewayUnderTest) -> None:
    assert _admin(gw, POLICIES, {"modules": {}}).json()["error"]["param"] == "modules"
    assert _admin(gw, POLICIES, {"modules": {"a.rego": 1}}).json()["error"]["param"] == "modules"
    for data in ([1], {"killswitch": True}):
        bad_data = _admin(gw, POLICIES, {**_with_module({}), "data": data})
        assert bad_data.status_code == 400 and bad_data.json()["error"]["param"] == "data", bad_data.text
    r = gw.post(POLICIES, key=ADMIN_KEY, content=b"{nope")
    assert r.status_code == 400 and r.json()["error"]["param"] == "body"


def test_repeated_inputs_are_answered_by_the_decision_cache(gw: GatewayUnderTest) -> None:
    ids = [gw.post(CHAT, json=EXTERNAL).headers["x-request-id"] for _ in range(3)]
    cached = [gw.record(i)["policy_cached"] for i in ids]
    assert cached[1:] == [True, True]
    stats = gw.client.get("/healthz").json()["policy_cache"]
    assert stats["hits"] >= 2 and 0 < stats["hit_rate"] <= 1


def test_explain_reproduces_a_recorded_decision_with_rule_titles(gw: GatewayUnderTest) -> None:
    r = gw.post(
        CHAT,
        json={"model": "external", "messages": [{"role": "user", "content": "mail me: ana@example.com"}]},
        headers={"x-data-classification": "internal"},
    )
    request_id = r.headers["x-request-id"]
    e = gw.client.get(f"/v1/audit/decisions/{request_id}/explain", headers={"authorization": f"Bearer {AUDITOR_KEY}"})
    assert e.status_code == 200, e.text
    body = e.json()
    assert body["reproduced"] is True and body["revision"] == gw.record(request_id)["policy_revision"]
    pricey = next(d for d in body["deployments"] if d["id"] == "ext-pricey")
    assert pricey["eligible"] is False
    assert {"name": "locality_not_allowed", "title": "Locality not allowed for the data level"} in pricey["rules"]
    other = gw.client.get(
        f"/v1/audit/decisions/{request_id}/explain", headers={"authorization": f"Bearer {OTHER_TENANT_KEY}"}
    )
    assert other.status_code == 403  # an app key is not an auditor
    assert (
        gw.client.get(
            "/v1/audit/decisions/req_nope/explain", headers={"authorization": f"Bearer {AUDITOR_KEY}"}
        ).status_code
        == 404
    )


# ---------------------------------------------------------------------------------------------
# Several gateways on one database: activation in force everywhere
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["redis", "polling"])
def test_an_activation_through_one_gateway_is_in_force_on_another_within_a_second(
    start_gateway: Callable[..., GatewayUnderTest],
    sim_a: ProviderSimulator,
    sim_b: ProviderSimulator,
    pg_url: str,
    transport: str,
) -> None:
    from gateway.cli import migrate_database

    name = f"gw_pol_{uuid.uuid4().hex[:8]}"
    url = _fresh_pg(pg_url, name)
    migrate_database(url)
    doc = _doc(sim_a, sim_b, poll_interval_s=0.5 if transport == "polling" else 30.0)
    prefix = run_prefix("policy")
    if transport == "redis":
        doc["limits_store"] = {"kind": "redis", "url": REDIS_URL, "key_prefix": prefix}
    one = start_gateway(doc, audit_url=url, migrate=False, check_invariant=False)
    two = start_gateway(doc, audit_url=url, migrate=False, check_invariant=False)
    assert two.post(CHAT, json=EXTERNAL).status_code == 200

    r = _admin(one, f"{POLICIES}/killswitch", {"blocked": True})
    assert r.status_code == 200, r.text
    switched = time.monotonic()
    while two.post(CHAT, json=EXTERNAL).status_code != 403:
        assert time.monotonic() - switched < 1.0, f"gateway two still allows external egress ({transport})"
        time.sleep(0.05)
    rec = two.records(limit=1)[0]
    assert rec["policy_revision"] == r.json()["to"]
    written = asyncio.run(_count(url))
    assert written == one.sent + two.sent
    drop_keys(prefix)


def _fresh_pg(pg_url: str, name: str) -> str:
    """A new database beside ``pg_url``'s (dropped with the server's test databases)."""
    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database="test")
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return pg_url.rsplit("/", 1)[0] + f"/{name}"


async def _count(url: str) -> int:
    store = AuditStore.from_url(url)
    try:
        return await store.count(include_system=False)
    finally:
        await store.aclose()


# ---------------------------------------------------------------------------------------------
# What-if over a generated day of traffic, and the CLI
# ---------------------------------------------------------------------------------------------

TENANTS = {
    "acme-eu": {
        "internal": {"jurisdictions": ["EU"]},
        "public": {"any": True},
        "confidential": {"locality": ["local"]},
    },
    "globex-us": {
        "internal": {"jurisdictions": ["US"]},
        "public": {"any": True},
        "confidential": {"locality": ["local"]},
    },
}
LEVELS = ("public", "internal", "confidential")


def _inputs(n: int) -> list[tuple[str, str, dict[str, Any]]]:
    base = json.loads((POLICY_DIR / "testdata" / "input.json").read_text())
    out = []
    for i in range(n):
        tenant = ("acme-eu", "globex-us")[i % 2]
        level = LEVELS[(i // 2) % 3]
        policy_input = json.loads(json.dumps(base))
        policy_input["principal"]["tenant"] = tenant
        policy_input["tenant"]["allowed"] = TENANTS[tenant]
        policy_input["data"]["level"] = level
        policy_input["request"]["id"] = f"req_gen_{i}"
        policy_input["request"]["max_output_tokens"] = 100 + i  # distinct inputs
        out.append((tenant, level, policy_input))
    return out


async def _write_day(url: str, key_file: Path, n: int, old: int) -> list[dict[str, Any]]:
    """``n`` decisions spread over the last 24 h plus ``old`` from 30 h ago, made by the
    shipped policy, recorded as the gateway records them."""
    bundle = load_bundle(POLICY_DIR)
    evaluator = Evaluator(bundle)
    store = AuditStore.from_url(url, Signer.from_file(key_file))
    now = time.time()
    written = []
    try:
        for i, (tenant, level, policy_input) in enumerate(_inputs(n + old)):
            ctx = RequestContext(endpoint="chat.completions", request_id=f"req_gen_{i}")
            ctx.created_at = now - 30 * 3600 if i >= n else now - (i + 1) * (86_000 / n)
            ctx.principal = Principal(tenant=tenant, key_id="k_gen", roles=("app",), home_region="eu")
            ctx.classification = Classification(
                level=DataLevel.parse(level), detected=DataLevel.parse(level), declared=None
            )
            ctx.policy_input = policy_input
            ctx.decision = evaluator.decide(policy_input)
            ctx.status, ctx.http_status = ("ok", 200) if ctx.decision.allow else ("denied", 403)
            await store.record_outcome(ctx)
            if i < n:
                written.append({"tenant": tenant, "level": level, "eligible": list(ctx.decision.eligible)})
    finally:
        await store.aclose()
    return written


def test_whatif_over_a_generated_day_reports_exactly_the_expected_changes(
    start_gateway: Callable[..., GatewayUnderTest], sim_a: ProviderSimulator, sim_b: ProviderSimulator, tmp_path: Path
) -> None:
    db = tmp_path / "day.db"
    url = f"sqlite+aiosqlite:///{db}"
    from gateway.cli import migrate_database

    migrate_database(url)
    day = asyncio.run(_write_day(url, tmp_path / "gen-key.pem", n=240, old=30))
    # Candidate: the kill switch on. Every decision that let data out to an external
    # deployment changes; local-only ones do not; the 30 older records are outside the window.
    candidate = tmp_path / "candidate"
    shutil.copytree(POLICY_DIR, candidate)
    data = json.loads((candidate / "data.json").read_text())
    data["killswitch"]["external_egress_blocked"] = True
    (candidate / "data.json").write_text(json.dumps(data))

    externals = {"ext-eu", "ext-us"}
    expected = [d for d in day if externals & set(d["eligible"])]
    assert 0 < len(expected) < len(day)
    want_tenant = Counter(d["tenant"] for d in expected)
    want_level = Counter(d["level"] for d in expected)
    want_dest = Counter(dep for d in expected for dep in d["eligible"] if dep in externals)
    want_deny = sum(1 for d in expected if set(d["eligible"]) <= externals)

    # the day was written straight into the ledger, so records != requests sent here
    gw = start_gateway(_doc(sim_a, sim_b), audit_url=url, migrate=False, check_invariant=False)
    bundle = load_bundle(candidate)
    r = _admin(
        gw, f"{POLICIES}/whatif", {"modules": bundle.modules, "data": bundle.data, "since": "24h", "examples": 3}
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["replayed"] == len(day) and report["changed"] == len(expected)
    assert report["by_tenant"] == dict(want_tenant) and report["by_level"] == dict(want_level)
    assert {k: v.get("newly_excluded", 0) for k, v in report["by_destination"].items()} == dict(want_dest)
    assert report["by_change"].get("allow->deny", 0) == want_deny
    assert len(report["examples"]) == 3 and all(
        e["after"]["eligible"] == [d for d in e["after"]["eligible"] if d == "local-eu"] for e in report["examples"]
    )
    assert gw.record(r.headers["x-request-id"])["admin"]["changed"] == len(expected)

    # The same through the CLI, on the same database.
    config = _config_file(tmp_path, url, gw)
    out = CliRunner().invoke(
        cli, ["policy", "whatif", "--candidate", str(candidate), "--since", "24h", "-c", str(config)]
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["changed"] == len(expected)
    # Unchanged candidate: nothing changes.
    same = CliRunner().invoke(
        cli, ["policy", "whatif", "--candidate", str(POLICY_DIR), "--since", "48h", "-c", str(config)]
    )
    assert json.loads(same.output)["changed"] == 0 and json.loads(same.output)["replayed"] == len(day) + 30


def _config_file(tmp_path: Path, url: str, gw: GatewayUnderTest) -> Path:
    doc = make_config(
        sim_a_url="http://127.0.0.1:9/v1", sim_b_url="http://127.0.0.1:9/v1", llama_url="http://127.0.0.1:9/v1"
    )
    doc["policy"]["path"] = str(POLICY_DIR)
    doc["audit"] = {
        "url": url,
        "signing_key_file": gw.signing_key_file,
        "digest_secret_file": str(tmp_path / "digest.key"),
    }
    path = tmp_path / f"gateway-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_cli_push_refuses_an_unsupported_builtin_then_pushes_activates_explains_and_rolls_back(
    gw: GatewayUnderTest, tmp_path: Path
) -> None:
    config = _config_file(tmp_path, gw.audit_url, gw)
    runner = CliRunner()
    before = _active(gw)

    bad = tmp_path / "bad"
    shutil.copytree(POLICY_DIR, bad)
    (bad / "net.rego").write_text('package gateway.routing\n\nin_net if net.cidr_contains("10.0.0.0/8", input.ip)\n')
    out = runner.invoke(cli, ["policy", "push", str(bad), "--activate", "-c", str(config)])
    assert out.exit_code == 2 and "net.cidr_contains" in out.output
    assert _active(gw) == before

    tested = runner.invoke(cli, ["policy", "test", str(POLICY_DIR)])
    assert tested.exit_code == 0 and f"{len(CASES)} of {len(CASES)} policy tests passed" in tested.output

    strict = tmp_path / "strict"
    shutil.copytree(POLICY_DIR, strict)
    data = json.loads((strict / "data.json").read_text())
    data["data_handling"]["no_training_from"] = "public"
    (strict / "data.json").write_text(json.dumps(data))
    (strict / "data_handling_test.yaml").unlink()  # its thresholds changed on purpose
    pushed = runner.invoke(
        cli, ["policy", "push", str(strict), "--activate", "--description", "stricter", "-c", str(config)]
    )
    assert pushed.exit_code == 0, pushed.output
    new_rev = json.loads(pushed.output)["to"]
    deadline = time.monotonic() + 5
    while gw.client.get("/healthz").json()["policy_revision"] != new_rev:  # picked up by polling
        assert time.monotonic() < deadline
        time.sleep(0.1)
    r = gw.post(CHAT, json=EXTERNAL)
    assert r.status_code == 200 and gw.record(r.headers["x-request-id"])["policy_revision"] == new_rev

    explained = runner.invoke(cli, ["audit", "explain", r.headers["x-request-id"], "-c", str(config)])
    assert explained.exit_code == 0 and "reproduced: yes" in explained.output and new_rev in explained.output

    back = runner.invoke(cli, ["policy", "rollback", "-c", str(config)])
    assert back.exit_code == 0 and json.loads(back.output)["to"] == before
    cli_recs = [rec for rec in gw.records(limit=10_000) if rec["endpoint"].startswith("cli.policy.")]
    assert {rec["endpoint"] for rec in cli_recs} >= {"cli.policy.push", "cli.policy.rollback"}
    gw.sent += len(cli_recs)  # the CLI's own records (the invariant counts every record)
