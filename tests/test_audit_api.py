"""Auditors read decision records over HTTP (role auditor, own tenant only) and on the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from gateway.cli import app as cli
from tests.conftest import APP_KEY, AUDITOR_KEY, GLOBAL_AUDITOR_KEY, OTHER_TENANT_KEY, ROOT, GatewayUnderTest

CHAT = "/v1/chat/completions"
REQ = {"model": "external", "messages": [{"role": "user", "content": "hello"}]}


def _ids(rows: list[dict[str, object]]) -> list[object]:
    return [r["request_id"] for r in rows]


def test_auditor_lists_own_tenant_newest_first_with_cursor(gateway: GatewayUnderTest) -> None:
    sent = [gateway.post(CHAT, json=REQ).headers["x-request-id"] for _ in range(3)]
    foreign = gateway.post(CHAT, key=OTHER_TENANT_KEY, json=REQ).headers["x-request-id"]
    auth = {"authorization": f"Bearer {AUDITOR_KEY}"}

    page = gateway.client.get("/v1/audit/decisions", params={"limit": 2}, headers=auth).json()
    assert _ids(page["data"]) == sent[::-1][:2]
    rest = gateway.client.get(
        "/v1/audit/decisions", params={"limit": 2, "before_id": page["next_before_id"]}, headers=auth
    ).json()
    assert _ids(rest["data"])[0] == sent[0]
    everything = gateway.client.get("/v1/audit/decisions", params={"limit": 500}, headers=auth).json()["data"]
    assert foreign not in _ids(everything)
    assert all(r["tenant"] == "acme-eu" for r in everything)
    assert APP_KEY not in json.dumps(everything)


def test_audit_api_requires_the_auditor_role(gateway: GatewayUnderTest) -> None:
    assert gateway.client.get("/v1/audit/decisions").status_code == 401
    r = gateway.client.get("/v1/audit/decisions", headers={"authorization": f"Bearer {APP_KEY}"})
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    bad = gateway.client.get(
        "/v1/audit/decisions", params={"limit": 0}, headers={"authorization": f"Bearer {AUDITOR_KEY}"}
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"


def test_cli_audit_list_filters_by_tenant_and_status(gateway: GatewayUnderTest, monkeypatch: object) -> None:
    denied = gateway.post(CHAT, json=REQ, headers={"x-data-classification": "confidential"})
    assert denied.status_code == 403
    runner = CliRunner()
    env = {"GATEWAY_AUDIT_URL": gateway.audit_url}
    config = str(ROOT / "gateway.yaml")
    table = runner.invoke(cli, ["audit", "list", "--config", config, "--status", "denied"], env=env)
    assert table.exit_code == 0, table.output
    assert "denied" in table.output and "external" in table.output
    lines = runner.invoke(
        cli, ["audit", "list", "--config", config, "--json", "--tenant", "acme-eu", "--status", "denied"], env=env
    )
    rows = [json.loads(line) for line in lines.output.splitlines()]
    assert rows and {r["status"] for r in rows} == {"denied"} and {r["tenant"] for r in rows} == {"acme-eu"}
    assert rows[0]["request_id"] == denied.headers["x-request-id"]


def _list(gateway: GatewayUnderTest, key: str, **params: object) -> list[dict[str, object]]:
    r = gateway.client.get(
        "/v1/audit/decisions", params={"limit": 500, **params}, headers={"authorization": f"Bearer {key}"}
    )
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def test_filters_by_level_decision_deployment_jurisdiction_and_time(gateway: GatewayUnderTest) -> None:
    import datetime as dt

    start = dt.datetime.now(dt.UTC).isoformat()
    ok = gateway.post(CHAT, json=REQ, headers={"x-data-classification": "internal"}).headers["x-request-id"]
    denied = gateway.post(CHAT, json=REQ, headers={"x-data-classification": "restricted"}).headers["x-request-id"]
    us = gateway.post(CHAT, key=OTHER_TENANT_KEY, json=REQ).headers["x-request-id"]

    assert _ids(_list(gateway, AUDITOR_KEY, since=start)) == [denied, ok]
    assert _ids(_list(gateway, AUDITOR_KEY, since=start, level="restricted")) == [denied]
    assert _ids(_list(gateway, AUDITOR_KEY, since=start, decision="deny")) == [denied]
    assert _ids(_list(gateway, AUDITOR_KEY, since=start, deployment="ext-cheap")) == [ok]
    assert _ids(_list(gateway, AUDITOR_KEY, since=start, jurisdiction="EU")) == [ok]
    assert _list(gateway, AUDITOR_KEY, since=start, jurisdiction="US") == []
    assert _list(gateway, AUDITOR_KEY, until=start, since="2000-01-01T00:00:00") != []
    assert ok not in _ids(_list(gateway, AUDITOR_KEY, until=start))
    rec = _list(gateway, AUDITOR_KEY, since=start, deployment="ext-cheap")[0]
    assert rec["chosen_jurisdiction"] == "EU" and rec["chosen_locality"] == "external"

    # a tenant-bound auditor cannot ask for another tenant; an all-tenants auditor can
    r = gateway.client.get(
        "/v1/audit/decisions", params={"tenant": "globex-us"}, headers={"authorization": f"Bearer {AUDITOR_KEY}"}
    )
    assert r.status_code == 403 and r.json()["error"]["param"] == "tenant"
    assert _ids(_list(gateway, GLOBAL_AUDITOR_KEY, since=start)) == [us, denied, ok]
    assert _ids(_list(gateway, GLOBAL_AUDITOR_KEY, since=start, tenant="globex-us", jurisdiction="US")) == [us]


def test_cli_verify_export_csv_and_signed_evidence_report(gateway: GatewayUnderTest, tmp_path: Path) -> None:
    import base64
    import csv
    import datetime as dt

    import yaml

    from gateway.audit.ledger import Signer, canonical

    start = dt.datetime.now(dt.UTC)
    gateway.post(CHAT, json=REQ, headers={"x-data-classification": "confidential"})  # denied, not sent
    gateway.post(CHAT, json=REQ)  # public -> ext-cheap (EU)
    gateway.post(
        CHAT, json={**REQ, "model": "auto", "max_tokens": 4}, headers={"x-data-classification": "restricted"}
    )  # local
    end = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)

    # a config file pointing at the gateway's database and keys, as an auditor would have
    doc = yaml.safe_load((ROOT / "gateway.yaml").read_text())
    doc["audit"] = {"url": gateway.audit_url, "signing_key_file": gateway.signing_key_file}
    doc["policy"]["path"] = str(ROOT / "policies")
    doc["tenants"]["acme-eu"]["default_level"] = "public"
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(doc))
    runner = CliRunner()

    # the gateway is still running (its chain is open): verify checks what is committed so far
    verified = runner.invoke(cli, ["audit", "verify", "--config", str(config)])
    assert verified.exit_code == 0, verified.output

    out = tmp_path / "records.csv"
    exported = runner.invoke(cli, ["audit", "export", str(out), "--format", "csv", "--config", str(config)])
    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader(out.open()))
    assert rows and {"request_id", "chosen_jurisdiction", "labels"} <= set(rows[0])
    assert len({r["request_id"] for r in rows}) == len(rows)

    report_file = tmp_path / "report.json"
    result = runner.invoke(
        cli,
        [
            "audit",
            "report",
            "--since",
            start.isoformat(),
            "--until",
            end.isoformat(),
            "--config",
            str(config),
            "--out",
            str(report_file),
        ],
    )
    assert result.exit_code == 0, result.output
    signed = json.loads(report_file.read_text())
    report = signed["report"]
    assert report["requests"] == 3
    assert report["by_destination"]["EU"] == {"public": 1, "restricted": 1}
    assert report["by_destination"]["not-sent"] == {"confidential": 1}
    assert report["sensitive_left_allowed"] == 0 and report["served_outside_eligible"] == 0
    key = Signer.from_file(Path(gateway.signing_key_file), create=False).public_key
    key.verify(base64.b64decode(signed["signature"]), canonical(report).encode())


def test_savings_compare_actual_spend_with_the_reference_model(gateway: GatewayUnderTest) -> None:
    import datetime as dt

    start = dt.datetime.now(dt.UTC)
    for _ in range(2):
        assert gateway.post(CHAT, json=REQ).status_code == 200  # ext-cheap
    assert gateway.post(CHAT, json={**REQ, "model": "local-smollm2", "max_tokens": 4}).status_code == 200
    end = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    params = {"since": start.isoformat(), "until": end.isoformat()}

    r = gateway.client.get("/v1/savings", params=params, headers={"authorization": f"Bearer {AUDITOR_KEY}"})
    assert r.status_code == 200, r.text
    row = r.json()["tenants"]["acme-eu"]
    records = [x for x in _list(gateway, AUDITOR_KEY, since=start.isoformat()) if x["status"] == "ok"]
    assert row["requests"] == len(records) == 3
    actual = sum(x["cost_usd"] for x in records)
    reference = sum(x["prompt_tokens"] * 10.0 + x["completion_tokens"] * 30.0 for x in records) / 1_000_000
    assert abs(row["actual_usd"] - actual) < 1e-9 and abs(row["reference_usd"] - reference) < 1e-9
    assert row["saved_pct"] == round(100 * (reference - actual) / reference, 2)
    assert set(row["by_deployment"]) == {"ext-cheap", "local-smollm2"}
    forbidden = gateway.client.get("/v1/savings", params=params, headers={"authorization": f"Bearer {APP_KEY}"})
    assert forbidden.status_code == 403


def test_savings_and_report_reject_bad_or_reversed_periods(gateway: GatewayUnderTest) -> None:
    r = gateway.client.get(
        "/v1/savings",
        params={"since": "2026-12-01T00:00:00", "until": "2026-11-01T00:00:00"},
        headers={"authorization": f"Bearer {AUDITOR_KEY}"},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "until"
    runner = CliRunner()
    config = str(ROOT / "gateway.yaml")
    for command in ("savings", "audit report"):
        for since, until in (("bad", "2026-12-01"), ("2026-12-01", "2026-11-01")):
            result = runner.invoke(cli, [*command.split(), "--since", since, "--until", until, "--config", config])
            assert result.exit_code == 2, (command, result.output)
            assert "Traceback" not in result.output
        # durations back from now are accepted as in `policy whatif` (--since 24h)
        result = runner.invoke(cli, [*command.split(), "--since", "99999999d", "--until", "1h", "--config", config])
        assert result.exit_code == 2 and "calendar" in result.output and "Traceback" not in result.output
