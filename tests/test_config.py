"""A bad configuration stops start-up naming the file, the path inside it and the reason."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gateway.cli import app as cli
from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.main import build_gateway
from tests.conftest import ROOT


def _example() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "gateway.yaml").read_text())
    doc["policy"]["path"] = str(ROOT / "policies")
    return doc


def _write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def test_example_config_is_valid() -> None:
    config = load_config(ROOT / "gateway.yaml")
    assert {"auto", "chat", "local"} <= set(config.aliases)
    assert all(k.hash.startswith("sha256:") for k in config.keys)


@pytest.mark.parametrize(
    ("mutate", "path", "reason"),
    [
        (
            lambda d: d["deployments"][1]["price"].update(input_per_mtok=-1),
            "deployments.1.price.input_per_mtok",
            "greater than or equal to 0",
        ),
        (lambda d: d["deployments"][0].update(locality="moon"), "deployments.0.locality", "'local' or 'external'"),
        (lambda d: d["deployments"][0].update(colour="red"), "deployments.0.colour", "Extra inputs"),
        (lambda d: d["deployments"][2].update(adapter="carrier-pigeon"), "deployments.2.adapter", "unknown adapter"),
        (lambda d: d["deployments"][1].pop("api_base"), "deployments.1.api_base", "required for adapter"),
        (lambda d: d["deployments"][1].update(id="local-smollm2"), "deployments.1.id", "duplicate deployment id"),
        (
            lambda d: d["aliases"]["auto"]["deployments"].append("nope"),
            "aliases.auto.deployments.5",
            "unknown deployment 'nope'",
        ),
        (lambda d: d["aliases"]["auto"].update(strategy="fastest"), "aliases.auto.strategy", "'cost'"),
        (lambda d: d["keys"][0].update(tenant="nobody"), "keys.0.tenant", "unknown tenant 'nobody'"),
        (lambda d: d["keys"][0].update(hash="plaintext-key"), "keys.0.hash", "should match pattern"),
        (
            lambda d: d["tenants"]["acme-eu"].update(default_level="secret"),
            "tenants.acme-eu.default_level",
            "unknown data level",
        ),
        (
            lambda d: d["tenants"]["acme-eu"]["allowed"].update(topsecret={"any": True}),
            "tenants.acme-eu.allowed",
            "unknown data level",
        ),
        (
            lambda d: d["tenants"]["acme-eu"]["allowed"].update(restricted={}),
            "tenants.acme-eu.allowed.restricted",
            "a residency rule needs",
        ),
        (lambda d: d["keys"][0].update(allowed_models=["gpt-9"]), "keys.0.allowed_models.0", "unknown model 'gpt-9'"),
        (lambda d: d.pop("tenants"), "tenants", "Field required"),
    ],
)
def test_bad_config_names_file_path_and_reason(tmp_path: Path, mutate: Any, path: str, reason: str) -> None:
    doc = _example()
    mutate(doc)
    file = _write(tmp_path, doc)
    with pytest.raises(ConfigError) as info:
        load_config(file)
    assert info.value.file == str(file)
    assert info.value.path == path
    assert reason in info.value.reason
    assert str(info.value).startswith(f"{file}: {path}: ")


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"line 3, column 1: not valid YAML"):
        load_config(_write(tmp_path, "deployments:\n  - id: [unclosed\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="<root>: expected a mapping"):
        load_config(_write(tmp_path, "- just\n- a list\n"))


def test_policy_that_cannot_load_fails_start_up(tmp_path: Path) -> None:
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    (policy_dir / "routing.rego").write_text(
        'package gateway.routing\n\ndecision := {"allow": net.cidr_contains("10.0.0.0/8", "10.1.1.1")}\n'
    )
    doc = _example()
    doc["policy"]["path"] = str(policy_dir)
    config = load_config(_write(tmp_path, doc))
    with pytest.raises(ConfigError) as info:
        asyncio.run(build_gateway(config))
    assert info.value.path == "policy.path" and "net.cidr_contains" in info.value.reason


def test_cli_reports_config_errors_without_a_traceback(tmp_path: Path) -> None:
    doc = _example()
    doc["deployments"][0]["context_window"] = 0
    file = _write(tmp_path, doc)
    runner = CliRunner()
    for args in (["config", "check", "--config", str(file)], ["serve", "--config", str(file)]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, result.output
        assert "deployments.0.context_window" in result.output and str(file) in result.output.replace("\n", "")
        assert "Traceback" not in result.output
    ok = runner.invoke(cli, ["config", "check", "--config", str(_write(tmp_path, _example()))])
    assert ok.exit_code == 0 and "ok (5 deployments" in ok.output


def test_keys_create_checks_tenant_and_role_and_prints_only_a_hash_entry() -> None:
    runner = CliRunner()
    config = str(ROOT / "gateway.yaml")
    static = ["keys", "create", "--static"]  # database keys: tests/test_keys.py
    bad = runner.invoke(cli, [*static, "--tenant", "nobody", "--id", "k1", "--config", config])
    assert bad.exit_code == 2 and "not in" in bad.output
    bad_role = runner.invoke(cli, [*static, "--tenant", "acme-eu", "--id", "k1", "--role", "root"])
    assert bad_role.exit_code == 2
    ok = runner.invoke(cli, [*static, "--tenant", "acme-eu", "--id", "k1", "--config", config])
    assert ok.exit_code == 0
    key = ok.output.split("API key (shown once): ")[1].split()[0]
    from gateway.auth import hash_key

    assert f"hash: {hash_key(key)}" in ok.output
