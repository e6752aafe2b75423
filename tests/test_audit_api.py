"""Auditors read decision records over HTTP (role auditor, own tenant only) and on the CLI."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from gateway.cli import app as cli
from tests.conftest import APP_KEY, AUDITOR_KEY, OTHER_TENANT_KEY, ROOT, GatewayUnderTest

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
