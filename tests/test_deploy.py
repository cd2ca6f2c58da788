"""The files under ``deploy/``: alert rules and the dashboard query metrics that exist, and the
Kubernetes manifests keep the invariants the bridge's defaults need."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from bridge.config import PipelineSettings, Settings, environment_variables
from bridge.ops.metrics import sample_names

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
_METRIC = re.compile(r"\bworkflows_bridge_[a-z0-9_]+")


def _exprs() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "workflows-bridge.rules.yaml").read_text())
    found = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((DEPLOY / "grafana" / "workflows-bridge.json").read_text())
    found += [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    return found


def test_every_queried_metric_exists() -> None:
    known = sample_names()
    expressions = _exprs()
    assert len(expressions) > 20
    used = {name for expr in expressions for name in _METRIC.findall(expr)}
    assert used, "no workflows_bridge metric queried"
    assert used <= known, f"unknown metrics: {sorted(used - known)}"
    # Every metric family shows somewhere: an alert or a panel.
    families = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in known}
    shown = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in used}
    assert families <= shown, f"never shown: {sorted(families - shown)}"


def test_every_metric_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in sample_names():
        family = re.sub(r"_(bucket|count|sum)$", "", name)
        assert f"`{family}" in readme, f"{family} is not in the README's metrics table"


def _manifest(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((K8S / name).read_text())
    return document


def test_kustomization_lists_every_manifest() -> None:
    kustomization = _manifest("kustomization.yaml")
    resources = kustomization["resources"]
    assert set(resources) == {"deployment.yaml", "pdb.yaml", "service.yaml", "servicemonitor.yaml"}
    for resource in resources:
        assert (K8S / resource).is_file()


def test_deployment_matches_the_bridge_defaults() -> None:
    deployment = _manifest("deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    [container] = pod["containers"]
    env = {item["name"]: item for item in container["env"]}
    defaults = Settings.model_fields["health_port"].default
    health_port = (
        int(env["BRIDGE_HEALTH_PORT"]["value"]) if "BRIDGE_HEALTH_PORT" in env else defaults
    )
    assert health_port == defaults
    [port] = container["ports"]
    assert port["containerPort"] == health_port
    # The drain finishes before the kubelet's SIGKILL, with room for the commit and close.
    drain = PipelineSettings().drain_timeout_seconds
    assert pod["terminationGracePeriodSeconds"] >= drain + 10
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in (port["name"], port["containerPort"])
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]
    # Every variable is one the bridge knows (an unknown one would stop it with exit 2).
    known = set(environment_variables())
    assert set(env) <= known, sorted(set(env) - known)
    # The token comes from a Secret mounted as a file, never from a plain variable.
    assert "BRIDGE_CLOUDFLARE__API_TOKEN" not in env
    token_path = Path(env["BRIDGE_CLOUDFLARE__API_TOKEN_FILE"]["value"])
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    [mount] = [m for m in mounts.values() if token_path.parent == Path(m["mountPath"])]
    assert "secret" in volumes[mount["name"]]
    # Static membership from the pod name: rolling restarts do not rebalance.
    instance = env["BRIDGE_KAFKA__GROUP_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert instance == "metadata.name"


def test_pdb_service_and_monitor_select_the_pods() -> None:
    labels = _manifest("deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    pdb = _manifest("pdb.yaml")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    service = _manifest("service.yaml")
    assert service["spec"]["selector"].items() <= labels.items()
    [service_port] = service["spec"]["ports"]
    monitor = _manifest("servicemonitor.yaml")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service_port["name"]
    assert endpoint["path"] == "/metrics"


def test_license_file_matches_pyproject() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
