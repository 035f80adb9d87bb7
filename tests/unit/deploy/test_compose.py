"""The container deployment: docker-compose.yml validates, runs the eight services on their contract ports,
and the observability files it mounts (collector, Prometheus, alerts, Grafana) are well formed and agree.

No Docker engine is needed: ``docker-compose config`` validates offline; the rest is structure checks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mlops.settings import DEFAULT_PORTS

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"

#: The contract's port table (../shared/CONTRACT.md): service -> (HTTP, gRPC).
CONTRACT_PORTS: dict[str, tuple[int, int]] = {
    "ingest": (8101, 9101),
    "feature": (8102, 9102),
    "trainer": (8103, 9103),
    "registry": (8104, 9104),
    "inference": (8105, 9105),
    "feedback": (8106, 9106),
    "drift": (8107, 9107),
    "bandit-router": (8108, 9108),
}
REQUIRED_METRICS = (
    "mlops_requests_total",
    "mlops_request_duration_seconds_bucket",
    "mlops_records_consumed_total",
    "mlops_consumer_lag",
    "mlops_dead_letters_total",
)


def _load_yaml(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


@pytest.fixture(scope="module")
def compose() -> dict:
    return _load_yaml(COMPOSE)


def _published(ports: list) -> set[tuple[int, int]]:
    """``"8101:8101"`` (or the long form) -> {(host, container)}."""
    out: set[tuple[int, int]] = set()
    for p in ports:
        if isinstance(p, dict):
            out.add((int(p["published"]), int(p["target"])))
        else:
            host, _, container = str(p).rpartition(":")
            out.add((int(host.rpartition(":")[2]), int(container.split("/")[0])))
    return out


def test_contract_ports_match_settings_defaults() -> None:
    assert DEFAULT_PORTS == CONTRACT_PORTS


@pytest.fixture(scope="module")
def secrets_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment compose renders in once ``scripts/compose-secrets`` made its tokens (a clean clone has
    none, and compose refuses to render without them: auth is never off by omission)."""
    env = {**os.environ, "MLOPS_SECRETS_DIR": str(tmp_path_factory.mktemp("compose-secrets"))}
    subprocess.run([str(ROOT / "scripts" / "compose-secrets")], env=env, check=True, capture_output=True,
                   timeout=120)
    return env


def test_docker_compose_config_is_valid(secrets_env: dict[str, str]) -> None:
    exe = shutil.which("docker-compose")
    # scripts/bootstrap installs it: a missing binary is a broken set-up, not a reason to skip.
    assert exe is not None, "docker-compose is not installed; run ./scripts/bootstrap"
    proc = subprocess.run(
        [exe, "-f", str(COMPOSE), "config", "-q"],
        cwd=ROOT,
        env=secrets_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr or proc.stdout


def test_docker_compose_resolved_config_has_every_service(secrets_env: dict[str, str]) -> None:
    exe = shutil.which("docker-compose")
    # scripts/bootstrap installs it: a missing binary is a broken set-up, not a reason to skip.
    assert exe is not None, "docker-compose is not installed; run ./scripts/bootstrap"
    proc = subprocess.run([exe, "-f", str(COMPOSE), "config"], cwd=ROOT, env=secrets_env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout)
    for name in CONTRACT_PORTS:
        svc = resolved["services"][name]
        assert svc["network_mode"] == "service:netns"
        assert svc["environment"]["MLOPS_KAFKA_BOOTSTRAP"] == "kafka:9092"


def test_infrastructure_services(compose: dict) -> None:
    services = compose["services"]
    for name in ("netns", "kafka", "redis", "otel-collector", "jaeger", "prometheus", "grafana"):
        assert name in services, name
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and "broker" in env["KAFKA_PROCESS_ROLES"]
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert str(services["redis"]["image"]).startswith("redis:7")
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"


@pytest.mark.parametrize("name", list(CONTRACT_PORTS))
def test_service_definition(compose: dict, name: str) -> None:
    svc = compose["services"][name]
    http, _grpc = CONTRACT_PORTS[name]
    pkg = name.replace("-", "_")
    assert svc["build"] == "."
    assert svc["command"] == ["python", "-m", f"services.{pkg}"]
    assert svc["network_mode"] == "service:netns"
    assert "ports" not in svc, "ports are published by the netns container the services share"
    env = svc["environment"]
    assert env["MLOPS_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["MLOPS_REDIS_URL"] == "redis://redis:6379/0"
    assert env["MLOPS_HOST"] == "0.0.0.0"
    assert env["MLOPS_HOME"] == "/data"
    assert str(env["MLOPS_KAFKA_IDEMPOTENCE"]).lower() == "true"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"
    assert env["OTEL_SERVICE_NAME"] == f"mlops-{name}"
    assert "mlops-data:/data" in svc["volumes"]
    health = " ".join(svc["healthcheck"]["test"])
    assert f"127.0.0.1:{http}/healthz" in health
    assert svc["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert svc["depends_on"]["redis"]["condition"] == "service_healthy"


def test_every_contract_port_is_published(compose: dict) -> None:
    published = _published(compose["services"]["netns"]["ports"])
    for name, (http, grpc) in CONTRACT_PORTS.items():
        assert (http, http) in published, f"{name} HTTP {http}"
        assert (grpc, grpc) in published, f"{name} gRPC {grpc}"


def test_all_services_share_one_image(compose: dict) -> None:
    images = {compose["services"][n].get("image") for n in CONTRACT_PORTS}
    assert len(images) == 1


def test_mounted_files_exist(compose: dict) -> None:
    for svc in compose["services"].values():
        for vol in svc.get("volumes", []):
            source = str(vol).split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), vol


def test_dockerfile_install_order() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    torch = text.index("torch==2.13.0")
    assert "https://download.pytorch.org/whl/cpu" in text[text.rfind("RUN", 0, torch) : torch + 20]
    lock = text.index("pip install -r requirements.lock")
    editable = text.index("pip install --no-deps -e .")
    protogen = text.index("python -m mlops.protogen /app")
    assert torch < lock < editable < protogen


def test_prometheus_scrapes_every_service() -> None:
    cfg = _load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    assert cfg["rule_files"] == ["/etc/prometheus/alerts.yml"]
    jobs = {job["job_name"]: job for job in cfg["scrape_configs"]}
    job = jobs["mlops-services"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"netns:{http}" for http, _ in CONTRACT_PORTS.values()}


def test_alert_rules_are_well_formed() -> None:
    rules = _load_yaml(DEPLOY / "prometheus" / "alerts.yml")
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    assert all(isinstance(g["name"], str) for g in rules["groups"])
    names = set()
    for rule in alerts:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, rule
        assert rule["alert"] and rule["expr"].strip()
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["for"]
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        names.add(rule["alert"])
    assert len(names) == len(alerts), "duplicate alert names"
    exprs = {r["alert"]: r["expr"] for r in alerts}
    assert any("up{" in e for e in exprs.values()), "service-down rule"
    assert any("histogram_quantile(0.99" in e and "mlops_request_duration_seconds_bucket" in e for e in exprs.values())
    assert any("mlops_requests_total" in e and "code=~" in e for e in exprs.values()), "error-rate rule"
    assert any("mlops_consumer_lag" in e for e in exprs.values()), "consumer-lag rule"


def test_otel_collector_exports_traces_to_jaeger() -> None:
    cfg = _load_yaml(DEPLOY / "otel-collector.yaml")
    assert cfg["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":4317")
    pipeline = cfg["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"]
    for exporter in pipeline["exporters"]:
        assert exporter in cfg["exporters"]
    for processor in pipeline.get("processors", []):
        assert processor in cfg["processors"]
    jaeger = [cfg["exporters"][e] for e in pipeline["exporters"] if "jaeger" in e]
    assert jaeger and jaeger[0]["endpoint"] == "jaeger:4317"


def _panels(dashboard: dict) -> list[dict]:
    out: list[dict] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def test_grafana_provisioning_and_dashboard() -> None:
    ds = _load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "datasource.yml")
    uids = {d["uid"]: d for d in ds["datasources"]}
    assert uids["prometheus"]["url"] == "http://prometheus:9090"
    providers = _load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yml")
    assert providers["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"

    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "platform-overview.json").read_text())
    assert dashboard["uid"] and dashboard["title"]
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    exprs = []
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in uids
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
            exprs.append(target["expr"])
    for metric in REQUIRED_METRICS:
        assert any(metric in e for e in exprs), metric
