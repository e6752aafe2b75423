"""Deployment artefacts checked offline (issue 10): the Helm chart rendered by Helm's own SDK
(``helm-python-sdk``, no helm binary, no cluster) and every manifest validated against the
Kubernetes OpenAPI schemas (``kubernetes-validate``, strict: unknown fields fail); the compose
file validated against the compose specification schema (vendored in ``check-jsonschema``) and
checked for what the stack needs; the gateway configurations in deploy/ and the one the chart
renders pass the same checks as ``gateway config check`` (load + policy compile); the image
built only where a container builder runs (``SGW_DOCKER_BUILD=1``; none runs here).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from importlib.resources import files
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import pytest
import yaml
from kubernetes_validate import utils as k8s

from gateway.config import load_config, parse_config
from gateway.errors import ConfigError
from gateway.policy import load_bundle
from gateway.policy.embedded import check_bundle
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "sovereign-gateway"
REQUIRED = {"audit": {"existingSecret": "gw-audit-db"}, "auditKeys": {"existingSecret": "gw-audit-keys"}}
# oldest supported by the chart (Chart.yaml kubeVersion is >=1.25), a middle one, the newest shipped
K8S_VERSIONS = ["1.25.0", "1.30.0", k8s.latest_version()]


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chart's manifests (every YAML document of every template) for ``values`` merged
    over the required Secret names."""
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(_merge(REQUIRED, values or {}), name="sg", namespace="llm")
    docs = []
    for name, text in sorted(out.items()):
        if not name.endswith(".yaml"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


# ---------------------------------------------------------------------------------------------
# Helm chart: rendered manifests against the Kubernetes schemas
# ---------------------------------------------------------------------------------------------

VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "opa-sidecar-fixed-replicas": {
        "opaSidecar": {"enabled": True},
        "autoscaling": {"enabled": False},
        "replicaCount": 3,
        "podDisruptionBudget": {"minAvailable": 2},
    },
    "secrets-and-extras": {
        "providerKeys": {
            "existingSecrets": ["provider-keys"],
            "env": [{"name": "MISTRAL_API_KEY", "secretName": "mistral", "secretKey": "key"}],
        },
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
        "policies": {"existingConfigMap": "my-policies"},
        "migrations": {"enabled": False},
        "serviceAccount": {"create": False, "name": "gw"},
        "podAnnotations": {"prometheus.io/scrape": "true"},
        "autoscaling": {"targetMemoryUtilizationPercentage": 80},
        "imagePullSecrets": [{"name": "regcred"}],
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_rendered_manifests_validate_against_the_kubernetes_schemas(variant: str, version: str) -> None:
    docs = render(VARIANTS[variant])
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap"} <= kinds
    for doc in docs:
        try:
            k8s.validate(doc, version, strict=True)
        except k8s.ValidationError as exc:  # pragma: no cover - the message is the point
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']} invalid for Kubernetes {version}: {exc.message}")


def test_the_validator_rejects_an_unknown_field() -> None:
    """The schema check is strict: a misspelt field in a container fails it."""
    deployment = one(render(), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"path": "/"}
    with pytest.raises(k8s.ValidationError):
        k8s.validate(deployment, K8S_VERSIONS[-1], strict=True)


def test_helm_lint_finds_no_error() -> None:
    result = helm.lint(str(CHART), values=REQUIRED, strict=True)
    assert result["errors"] == [], result
    assert not [m for m in result["messages"] if m["severity"] >= 2], result["messages"]  # 2 warning, 3 error


def test_the_audit_secrets_are_required() -> None:
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmError, match=r"audit\.existingSecret"):
        chart.render({"auditKeys": REQUIRED["auditKeys"]}, name="sg", namespace="llm")


def test_defaults_render_the_whole_set() -> None:
    docs = render()
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == [
        ("ConfigMap", "sg-sovereign-gateway-config"),
        ("ConfigMap", "sg-sovereign-gateway-migrate-config"),
        ("ConfigMap", "sg-sovereign-gateway-policies"),
        ("Deployment", "sg-sovereign-gateway"),
        ("HorizontalPodAutoscaler", "sg-sovereign-gateway"),
        ("Job", "sg-sovereign-gateway-migrate"),
        ("PodDisruptionBudget", "sg-sovereign-gateway"),
        ("Service", "sg-sovereign-gateway"),
        ("ServiceAccount", "sg-sovereign-gateway"),
    ]


def test_deployment_runs_the_gateway_non_root_with_health_probes_and_shared_secrets() -> None:
    docs = render({"providerKeys": {"existingSecrets": ["provider-keys"]}})
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    (gateway,) = pod["containers"]
    assert gateway["args"] == ["serve"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert gateway["securityContext"]["readOnlyRootFilesystem"] is True
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # a database outage must take pods out of rotation, not restart them
    assert "tcpSocket" in gateway["livenessProbe"] and "httpGet" not in gateway["livenessProbe"]
    env = {e["name"]: e for e in gateway["env"]}
    assert env["GATEWAY_AUDIT_URL"]["valueFrom"]["secretKeyRef"] == {"name": "gw-audit-db", "key": "url"}
    assert env["GATEWAY_CONFIG"]["value"] == "/etc/sovereign-gateway/gateway.yaml"
    assert env["GATEWAY_HOST"]["value"] == "0.0.0.0"
    assert gateway["envFrom"] == [{"secretRef": {"name": "provider-keys"}}]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["audit-keys"]["secret"]["secretName"] == "gw-audit-keys"
    assert volumes["policies"]["configMap"]["name"] == "sg-sovereign-gateway-policies"
    mounts = {m["mountPath"] for m in gateway["volumeMounts"]}
    assert {
        "/etc/sovereign-gateway/policies",
        "/etc/sovereign-gateway/audit-keys",
        "/var/lib/gateway",
        "/tmp",
    } <= mounts
    assert "checksum/config" in deployment["spec"]["template"]["metadata"]["annotations"]


def test_service_pdb_and_hpa_select_the_gateway_pods() -> None:
    docs = render()
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for selector in (
        one(docs, "Service")["spec"]["selector"],
        one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ):
        assert selector and selector.items() <= pod_labels.items()
    assert one(docs, "Service")["spec"]["ports"][0]["targetPort"] == "http"
    hpa = one(docs, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sg-sovereign-gateway"}
    assert hpa["minReplicas"] >= 2, "one replica alone would make the PDB block every drain"


def test_migrations_job_runs_gateway_migrate_as_a_hook_with_its_own_config() -> None:
    docs = render()
    job = one(docs, "Job")
    hook_cm = one(docs, "ConfigMap", "sg-sovereign-gateway-migrate-config")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(hook_cm["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"]
    ), "the hook ConfigMap must exist before the Job"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == hook_cm["metadata"]["name"]
    assert hook_cm["data"] == one(docs, "ConfigMap", "sg-sovereign-gateway-config")["data"]
    env = {e["name"]: e for e in container["env"]}
    assert env["GATEWAY_AUDIT_URL"]["valueFrom"]["secretKeyRef"]["name"] == "gw-audit-db"
    assert not [d for d in render({"migrations": {"enabled": False}}) if d["kind"] == "Job"]


def test_opa_sidecar_listens_on_loopback_and_the_gateway_uses_it() -> None:
    docs = render({"opaSidecar": {"enabled": True}})
    containers = {c["name"]: c for c in one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]}
    assert set(containers) == {"gateway", "opa"}
    assert "--addr=127.0.0.1:8181" in containers["opa"]["args"]
    config = yaml.safe_load(one(docs, "ConfigMap", "sg-sovereign-gateway-config")["data"]["gateway.yaml"])
    assert config["policy"]["engine"] == "opa" and config["policy"]["url"] == "http://127.0.0.1:8181"
    assert config["policy"]["opa_push"] is True
    without = yaml.safe_load(one(render(), "ConfigMap", "sg-sovereign-gateway-config")["data"]["gateway.yaml"])
    assert without["policy"]["engine"] == "embedded"


@pytest.mark.parametrize("variant", ["defaults", "opa-sidecar-fixed-replicas"])
def test_the_rendered_gateway_yaml_and_policies_pass_config_check(variant: str, tmp_path: Path) -> None:
    """What the pods mount: gateway.yaml from the ConfigMap loads, and the policies ConfigMap
    holds the repository's policies/ and compiles (as `gateway config check` does)."""
    docs = render(VARIANTS[variant])
    config_text = one(docs, "ConfigMap", "sg-sovereign-gateway-config")["data"]["gateway.yaml"]
    policies = one(docs, "ConfigMap", "sg-sovereign-gateway-policies")["data"]
    shipped = {p.name for p in (ROOT / "policies").iterdir() if p.is_file() and p.suffix in (".rego", ".json", ".yaml")}
    assert set(policies) == shipped
    for name, text in policies.items():
        assert text == (ROOT / "policies" / name).read_text(encoding="utf-8"), name
    (tmp_path / "policies").mkdir()
    for name, text in policies.items():
        (tmp_path / "policies" / name).write_text(text, encoding="utf-8")
    document = yaml.safe_load(config_text)
    assert document["policy"]["path"] == "/etc/sovereign-gateway/policies"
    assert document["audit"]["signing_key_file"] == "/etc/sovereign-gateway/audit-keys/audit-signing-key.pem"
    document["policy"]["path"] = str(tmp_path / "policies")
    config = parse_config(document, source="rendered gateway.yaml")
    assert config.limits_store.kind == "redis", "several replicas need shared limits"
    bundle = load_bundle(Path(config.policy.path))
    check_bundle(bundle)
    assert bundle.revision == load_bundle(ROOT / "policies").revision


def test_a_bad_gateway_yaml_in_values_is_caught_by_config_check() -> None:
    docs = render({"config": {"deployments": [{"id": "x", "adapter": "openai_compat", "model": "m"}]}})
    document = yaml.safe_load(one(docs, "ConfigMap", "sg-sovereign-gateway-config")["data"]["gateway.yaml"])
    with pytest.raises(ConfigError, match=r"deployments\.0\."):
        parse_config(document, source="rendered gateway.yaml")


def test_every_value_is_documented() -> None:
    """values.yaml: a comment right above every top-level key; the chart README explains the
    values an install cannot do without."""
    lines = (CHART / "values.yaml").read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[A-Za-z]\w*:", line):
            assert i and lines[i - 1].startswith("#"), f"values.yaml line {i + 1} ({line}) has no comment above it"
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    for key in ("audit.existingSecret", "auditKeys.existingSecret", "opaSidecar.enabled", "providerKeys", "migrations"):
        assert key in readme, f"chart README does not explain {key}"


# ---------------------------------------------------------------------------------------------
# compose
# ---------------------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8")))


def _compose_schema() -> dict[str, Any]:
    text = (files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json").read_text(encoding="utf-8")
    return dict(json.loads(text))


def test_compose_file_matches_the_compose_specification() -> None:
    schema = _compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(_compose())]
    assert errors == []
    broken = _compose()
    broken["services"]["gateway-1"]["helthcheck"] = {}
    assert list(validator.iter_errors(broken)), "the schema must reject an unknown service key"


def test_compose_stack_has_two_replicas_behind_the_balancer_and_the_shared_services() -> None:
    services = _compose()["services"]
    assert {"gateway-1", "gateway-2", "lb", "postgres", "redis", "opa", "otel-collector", "init"} <= set(services)
    profiles = {name: s.get("profiles", []) for name, s in services.items()}
    assert "local-model" in profiles["local-model"] and "ollama" in profiles["ollama"]
    assert all(not profiles[n] for n in ("gateway-1", "gateway-2", "lb", "postgres", "redis", "opa"))
    assert services["lb"]["ports"] == ["8080:8080"]
    for name in ("gateway-1", "gateway-2"):
        gw = services[name]
        assert gw["image"] == services["init"]["image"] and "build" in services["init"]
        assert "build" not in gw and gw["pull_policy"] == "never", "the image is built once, by init"
        assert "gateway-keys:/var/lib/gateway/keys" in gw["volumes"], "replicas share one audit signing key"
        assert gw["depends_on"]["init"] == {"condition": "service_completed_successfully"}
        assert gw["depends_on"]["postgres"] == {"condition": "service_healthy"}
        assert gw["depends_on"]["redis"] == {"condition": "service_healthy"}
        assert "healthz" in " ".join(gw["healthcheck"]["test"])
        assert gw["environment"]["GATEWAY_CONFIG"] == "/app/deploy/gateway.compose.yaml"
        assert "ports" not in gw, "replicas are reached through the balancer only"
    for name in ("postgres", "redis", "lb", "local-model"):
        assert services[name]["healthcheck"]["test"], name
    assert services["init"]["command"] == ["gateway migrate && gateway config check"]
    # the balancer's upstreams are the replicas, on the port they listen on
    nginx = (DEPLOY / "nginx.conf").read_text(encoding="utf-8")
    upstreams = re.findall(r"^\s*server\s+([\w-]+):(\d+)", nginx, re.M)
    assert upstreams == [("gateway-1", "8080"), ("gateway-2", "8080")]
    assert "proxy_buffering off" in nginx, "SSE streams must pass through"


def test_compose_references_resolve() -> None:
    """What `docker compose config` would refuse: depends_on naming no service, a named volume
    not declared, a profiled service that an always-on one depends on."""
    document = _compose()
    services = document["services"]
    declared = set(document.get("volumes", {}))
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            if not service.get("profiles"):
                assert not services[dependency].get("profiles"), f"{name} needs {dependency}, which is in a profile"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_compose_bind_mounts_exist() -> None:
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
    assert (DEPLOY / "otel-collector.yaml").exists()
    otel = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text(encoding="utf-8"))
    assert otel["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")


def test_compose_gateway_config_passes_config_check() -> None:
    config = load_config(DEPLOY / "gateway.compose.yaml")
    assert config.policy.engine == "opa" and config.policy.url == "http://opa:8181"
    assert config.limits_store.kind == "redis" and config.audit.url.startswith("postgresql+asyncpg://")
    assert config.telemetry.endpoint == "http://otel-collector:4318"
    services = _compose()["services"]
    for dep in config.deployments:  # each local backend is a service of the stack
        host = (dep.api_base or "").split("//")[1].split(":")[0]
        assert dep.locality == "external" or host in services, dep.id
    policy_dir = (DEPLOY / config.policy.path).resolve()
    assert policy_dir == (ROOT / "policies").resolve(), "the same relative path the container mounts"
    check_bundle(load_bundle(policy_dir))
    gateway_env = services["gateway-1"]["environment"]
    assert "postgres:5432/gateway" in gateway_env["GATEWAY_AUDIT_URL"]


def test_every_gateway_config_in_deploy_passes_config_check() -> None:
    found = [p for p in DEPLOY.glob("gateway*.yaml")]
    assert found
    for path in found:
        config = load_config(path)
        check_bundle(load_bundle((path.parent / config.policy.path).resolve()))


# ---------------------------------------------------------------------------------------------
# Dockerfile
# ---------------------------------------------------------------------------------------------


def test_dockerfile_is_slim_non_root_with_a_healthcheck_and_an_optional_local_extra() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(froms) == 2 and all("slim" in f for f in froms), "multi-stage on a slim base"
    assert re.search(r"^USER\s+10001", text, re.M)
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, re.M)
    assert 'ARG EXTRAS=""' in text and "${EXTRAS:+[$EXTRAS]}" in text
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    for needed in ("pyproject.toml", "alembic.ini", "gateway/**", "adapters/**", "migrations/**", "policies/**"):
        assert f"!{needed}" in ignore, needed
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for src in copied.split():
            assert (ROOT / src).exists(), f"Dockerfile copies {src}, which does not exist"


@pytest.mark.skipif(os.environ.get("SGW_DOCKER_BUILD") != "1", reason="set SGW_DOCKER_BUILD=1 where docker can build")
def test_the_image_builds_runs_as_non_root_and_has_a_healthcheck() -> None:  # pragma: no cover - needs a builder
    docker = shutil.which("docker")
    assert docker, "docker not installed"
    tag = "sovereign-gateway:deploy-test"
    subprocess.run([docker, "build", "-f", str(DEPLOY / "Dockerfile"), "-t", tag, str(ROOT)], check=True)
    inspect = json.loads(subprocess.run([docker, "image", "inspect", tag], capture_output=True, check=True).stdout)
    config = inspect[0]["Config"]
    assert config["User"] == "10001:10001"
    assert "/healthz" in " ".join(config["Healthcheck"]["Test"])
    out = subprocess.run([docker, "run", "--rm", tag, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "serve" in out.stdout


def test_the_deployment_guide_example_is_a_valid_configuration() -> None:
    """docs/deploy.md's one-entry-per-model example loads (with a tenant and the external
    deployment its alias names), and the jurisdictions it sets match a rule it explains."""
    text = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if b.startswith("deployments:")]
    assert len(blocks) == 1
    document = yaml.safe_load(blocks[0])
    external = load_config(DEPLOY / "gateway.compose.yaml").deployment("mistral-small-eu")
    document["deployments"].append(external.model_dump(exclude_none=True))
    document["tenants"] = {"acme-eu": {"home_region": "eu", "allowed": {"internal": {"jurisdictions": ["EU"]}}}}
    config = parse_config(document, source="docs/deploy.md")
    local = [d for d in config.deployments if d.locality == "local"]
    assert len(local) == 4 and {d.jurisdiction for d in local} == {"EU"}
    assert all(d.price.input_per_mtok > 0 for d in local), "local models are priced at their amortised cost"


def _config_check(document: dict[str, Any], policy_dir: Path, tmp_path: Path) -> str:
    """Run the real ``gateway config check`` on ``document`` with its side effects kept in
    ``tmp_path``: the audit keys it creates, no telemetry export, ``policy_dir`` as the policy.
    The databases, Redis and OPA it names are not reachable here; the check reports and goes on."""
    from typer.testing import CliRunner

    from gateway.cli import app as cli

    document = copy.deepcopy(document)
    document["policy"]["path"] = str(policy_dir)
    document["audit"]["signing_key_file"] = str(tmp_path / "keys" / "signing.pem")
    document["audit"]["digest_secret_file"] = str(tmp_path / "keys" / "digest.key")
    document["telemetry"] = {**document.get("telemetry", {}), "traces": "off", "metrics": "off"}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    result = CliRunner().invoke(cli, ["config", "check", "-c", str(path)])
    assert result.exit_code == 0, result.output
    return result.output


def test_gateway_config_check_passes_on_the_compose_config(tmp_path: Path) -> None:
    document = yaml.safe_load((DEPLOY / "gateway.compose.yaml").read_text(encoding="utf-8"))
    out = _config_check(document, ROOT / "policies", tmp_path)
    assert "ok (3 deployments, 1 tenants, policy sha256:" in out


def test_gateway_config_check_passes_on_the_chart_config(tmp_path: Path) -> None:
    docs = render({"opaSidecar": {"enabled": True}})
    document = yaml.safe_load(one(docs, "ConfigMap", "sg-sovereign-gateway-config")["data"]["gateway.yaml"])
    out = _config_check(document, ROOT / "policies", tmp_path)
    assert f"policy {load_bundle(ROOT / 'policies').revision}" in out


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"opaSidecar": {"enabeld": True}}, "/opaSidecar"),
        ({"replicaCount": 0}, "/replicaCount"),
        ({"config": {"deployments": [], "tenants": {"t": {}}}}, "/config/deployments"),
        ({"providerKeys": {"env": [{"name": "X"}]}}, "/providerKeys/env/0"),
    ],
    ids=["typo", "zero-replicas", "no-deployments", "env-without-secret"],
)
def test_values_schema_refuses_mistakes_before_anything_renders(values: dict[str, Any], where: str) -> None:
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmError, match=where):
        chart.render(_merge(REQUIRED, values), name="sg", namespace="llm")
