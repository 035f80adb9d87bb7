"""Kubernetes manifests: every object validates against the Kubernetes schemas (strict), and every service
has a Deployment, a Service, probes on /healthz and /readyz; inference and the router autoscale; as
kustomize renders them, every pod reaches its peers at their Service names (each pod has its own loopback)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from mlops.settings import DEFAULT_PORTS, SERVICES, is_loopback, peer_address

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


def _rendered() -> list[dict]:
    """The objects ``kubectl apply -k deploy/k8s`` would create, as kustomize renders them."""
    proc = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _pod_env(deployment: dict, config_maps: dict[str, dict]) -> dict[str, str]:
    """A pod's plain environment: its ConfigMaps, then its own values (secret references left out)."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config_maps[source["configMapRef"]["name"]]["data"])
    env.update({e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e})
    return env


def test_every_pod_dials_its_peers_at_their_service_names(monkeypatch: pytest.MonkeyPatch) -> None:
    objs = _rendered()
    config_maps = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ConfigMap"}
    services = {(o["metadata"]["name"], o["metadata"]["namespace"]): {p["port"] for p in o["spec"]["ports"]}
                for o in objs if o["kind"] == "Service"}
    deployments = [o for o in objs if o["kind"] == "Deployment"]
    assert len(deployments) == len(SERVICES)
    for deployment in deployments:
        for var in [v for v in os.environ if v.startswith("MLOPS_")]:
            monkeypatch.delenv(var)
        for name, value in _pod_env(deployment, config_maps).items():
            monkeypatch.setenv(name, value)
        for peer in SERVICES:
            for kind in ("grpc", "http"):
                address = peer_address(peer, kind)
                host, _, port = address.rpartition(":")
                where = f"{deployment['metadata']['name']} -> {peer} {kind}: {address}"
                assert not is_loopback(host) and host not in ("0.0.0.0", "::"), where
                name, _, rest = host.partition(".")
                namespace = rest.split(".")[0] if rest else deployment["metadata"]["namespace"]
                assert int(port) in services.get((name, namespace), set()), f"no Service answers {where}"


def test_every_service_that_calls_a_peer_gets_its_own_token_from_the_secret() -> None:
    from mlops.auth.policy import SERVICE_ROLES

    for deployment in [o for o in _rendered() if o["kind"] == "Deployment"]:
        service = deployment["metadata"]["name"].removeprefix("mlops-")
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])}
        token = env.get("MLOPS_SERVICE_TOKEN")
        if service in SERVICE_ROLES:
            assert token is not None, f"{service} calls peers but gets no token of its own"
            ref = token["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == ("mlops-secrets", f"{service}.token"), service
        else:
            assert token is None, f"{service} calls no peer and needs no token"
