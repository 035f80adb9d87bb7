"""Kubernetes manifests: every object validates against the Kubernetes schemas (strict), and every service
has a Deployment, a Service, probes on /healthz and /readyz; inference and the router autoscale."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from mlops.settings import DEFAULT_PORTS

K8S = Path(__file__).resolve().parents[3] / "deploy" / "k8s"
VERSION = "1.33.0"


def _objects() -> list[dict]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        out.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return out


@pytest.mark.parametrize("obj", _objects(), ids=lambda o: f"{o['kind']}/{o['metadata']['name']}")
def test_manifest_validates_strictly(obj: dict) -> None:
    kubernetes_validate.validate(obj, VERSION, strict=True)


def test_kustomization_lists_every_file() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == files


def test_every_service_is_deployed_with_probes_and_ports() -> None:
    objs = _objects()
    deployments = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Deployment"}
    services = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Service"}
    for svc, (http, grpc) in DEFAULT_PORTS.items():
        name = f"mlops-{svc}"
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["python", "-m", f"services.{svc.replace('-', '_')}"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert {p["containerPort"] for p in container["ports"]} == {http, grpc}
        assert {p["port"] for p in services[name]["spec"]["ports"]} == {http, grpc}


def test_inference_and_router_autoscale_and_keep_one_pod_during_disruptions() -> None:
    objs = _objects()
    hpas = {o["spec"]["scaleTargetRef"]["name"] for o in objs if o["kind"] == "HorizontalPodAutoscaler"}
    pdbs = {o["metadata"]["name"] for o in objs if o["kind"] == "PodDisruptionBudget"}
    assert {"mlops-inference", "mlops-bandit-router"} <= hpas
    assert {"mlops-inference", "mlops-bandit-router"} <= pdbs
