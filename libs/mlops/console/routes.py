"""The console's pages. Each page reads the platform's public REST APIs (registry, router, drift), so the
console shows exactly what any other client would see, and a service that is down costs one panel only."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import HTMLResponse

from mlops.auth.local import service_headers
from mlops.console.html import (
    PAGE_HEADERS,
    esc,
    interval_bar,
    line_chart,
    link,
    page,
    share_bar,
    table,
    value_html,
)
from mlops.settings import peer_address


def _page_headers(response: Response) -> None:
    """The console's security headers on every page (FastAPI merges them into the page's response)."""
    response.headers.update(PAGE_HEADERS)


router = APIRouter(prefix="/ui", tags=["console"], include_in_schema=False, dependencies=[Depends(_page_headers)])


async def _get(service: str, path: str) -> tuple[Any, str | None]:
    """``(json, None)`` or ``(None, reason)`` when the service cannot answer."""
    url = f"http://{peer_address(service, 'http')}{path}"
    try:
        async with httpx.AsyncClient(timeout=5.0, headers=service_headers()) as client:
            resp = await client.get(url)
    except httpx.HTTPError as exc:
        return None, f"{service} unreachable: {exc.__class__.__name__}"
    if resp.status_code >= 400:
        return None, f"{service} answered {resp.status_code}"
    return resp.json(), None


def _problem(reason: str) -> str:
    return f'<p class="bad">{esc(reason)}</p>'


def _models(data: Any) -> list[dict[str, Any]]:
    return data.get("models", []) if isinstance(data, dict) else list(data or [])


def _endpoints(data: Any) -> list[dict[str, Any]]:
    return data.get("endpoints", []) if isinstance(data, dict) else list(data or [])


@router.get("", response_class=HTMLResponse)
@router.get("/", response_class=HTMLResponse)
async def overview() -> str:
    models, err_m = await _get("registry", "/v1/models")
    endpoints, err_e = await _get("bandit-router", "/v1/endpoints")
    alerts, err_a = await _get("drift", "/v1/alerts")
    body = "<h2>Models</h2>" + (_problem(err_m) if err_m else table(
        ["model", "latest version", "aliases"],
        [[link(f"/ui/models/{m.get('name')}", m.get("name")), esc(m.get("latest_version")),
          value_html(m.get("aliases"))] for m in _models(models)]))
    body += "<h2>Endpoints</h2>" + (_problem(err_e) if err_e else table(
        ["endpoint", "policy", "variants"],
        [[link(f"/ui/endpoints/{e.get('endpoint')}", e.get("endpoint")), esc((e.get("policy") or {}).get("type")),
          esc(len(e.get("variants", [])))] for e in _endpoints(endpoints)]))
    alert_list = alerts.get("alerts", []) if isinstance(alerts, dict) else (alerts or [])
    body += "<h2>Recent drift alerts</h2>" + (_problem(err_a) if err_a else value_html(alert_list[:10]))
    return page("Overview", body)


@router.get("/models", response_class=HTMLResponse)
async def models_page() -> str:
    models, err = await _get("registry", "/v1/models")
    if err:
        return page("Models", _problem(err))
    rows = [[link(f"/ui/models/{m.get('name')}", m.get("name")), esc(m.get("latest_version")),
             value_html(m.get("aliases"))] for m in _models(models)]
    return page("Models", table(["model", "latest version", "aliases"], rows))


@router.get("/models/{name}", response_class=HTMLResponse)
async def model_page(name: str) -> str:
    versions, err = await _get("registry", f"/v1/models/{name}/versions")
    if err:
        return page(f"Model {name}", _problem(err))
    items = versions.get("versions", []) if isinstance(versions, dict) else versions
    rows = []
    for v in items:
        version = v.get("version")
        run_id = v.get("run_id", "")
        rows.append([
            link(f"/ui/models/{name}/versions/{version}", f"v{version}"), esc(v.get("stage")),
            link(f"/ui/runs/{run_id}", run_id) if run_id else "", esc(v.get("dataset_id")),
            esc(v.get("created_at")),
        ])
    compare = ""
    run_ids = [v.get("run_id") for v in items if v.get("run_id")]
    if len(run_ids) >= 2:
        compare = f'<p>{link(f"/ui/runs/compare?a={run_ids[-2]}&b={run_ids[-1]}", "compare the last two runs")}</p>'
    return page(f"Model {name}", table(["version", "stage", "run", "dataset", "created"], rows) + compare)


@router.get("/models/{name}/versions/{version}", response_class=HTMLResponse)
async def version_page(name: str, version: str) -> str:
    card, err = await _get("registry", f"/v1/models/{name}/versions/{version}/card")
    detail, err_d = await _get("registry", f"/v1/models/{name}/versions/{version}")
    body = "<h2>Model card</h2>" + (_problem(err) if err else value_html(card))
    body += "<h2>Version and lineage</h2>" + (_problem(err_d) if err_d else value_html(detail))
    drift, err_r = await _get("drift", f"/v1/drift/{name}/{version}")
    body += "<h2>Drift</h2>" + (_problem(err_r) if err_r else value_html(drift))
    return page(f"{name} v{version}", body)


def _history(run: dict[str, Any]) -> dict[str, list[tuple[float, float]]]:
    series: dict[str, list[tuple[float, float]]] = {}
    for point in run.get("history", []) or run.get("metric_history", []) or []:
        series.setdefault(str(point.get("key")), []).append((float(point.get("step", 0)), float(point["value"])))
    return series


@router.get("/runs/compare", response_class=HTMLResponse)
async def compare_runs(a: str = Query(...), b: str = Query(...)) -> str:
    run_a, err_a = await _get("registry", f"/v1/runs/{a}")
    run_b, err_b = await _get("registry", f"/v1/runs/{b}")
    if err_a or err_b:
        return page("Compare runs", _problem(err_a or err_b or ""))
    rows = []
    for section in ("params", "metrics"):
        keys = sorted(set(run_a.get(section, {})) | set(run_b.get(section, {})))
        for k in keys:
            va, vb = run_a.get(section, {}).get(k), run_b.get(section, {}).get(k)
            mark = "" if va == vb else ' class="bad"'
            rows.append([esc(section), esc(k), f"<span{mark}>{value_html(va)}</span>",
                         f"<span{mark}>{value_html(vb)}</span>"])
    charts = ""
    ha, hb = _history(run_a), _history(run_b)
    for key in sorted(set(ha) | set(hb)):
        charts += line_chart({f"{a[:8]}": ha.get(key, []), f"{b[:8]}": hb.get(key, [])}, title=key)
    return page("Compare runs", table(["", "key", a, b], rows) + "<h2>Metric history</h2>" + charts)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
async def run_page(run_id: str) -> str:
    run, err = await _get("registry", f"/v1/runs/{run_id}")
    if err:
        return page(f"Run {run_id}", _problem(err))
    charts = "".join(line_chart({k: v}, title=k) for k, v in sorted(_history(run).items()))
    shown = {k: v for k, v in run.items() if k not in ("history", "metric_history", "pip_freeze")}
    return page(f"Run {run_id}", value_html(shown) + "<h2>Metric history</h2>" + charts)


@router.get("/endpoints", response_class=HTMLResponse)
async def endpoints_page() -> str:
    endpoints, err = await _get("bandit-router", "/v1/endpoints")
    if err:
        return page("Endpoints", _problem(err))
    rows = [[link(f"/ui/endpoints/{e.get('endpoint')}", e.get("endpoint")), esc((e.get("policy") or {}).get("type")),
             esc(", ".join(str(v.get("name")) for v in e.get("variants", [])))] for e in _endpoints(endpoints)]
    return page("Endpoints", table(["endpoint", "policy", "variants"], rows))


@router.get("/endpoints/{endpoint}", response_class=HTMLResponse)
async def endpoint_page(endpoint: str) -> str:
    state, err = await _get("bandit-router", f"/v1/endpoints/{endpoint}")
    if err:
        return page(f"Endpoint {endpoint}", _problem(err), refresh_s=5)
    rows = []
    for v in state.get("variants", []):
        target = v.get("version") or v.get("alias") or ""
        prob = v.get("prob_best")
        rows.append([
            esc(v.get("name")), esc(f"{v.get('model')} {target}"), esc(v.get("decisions")),
            share_bar(v.get("traffic_share", 0.0)), esc(v.get("rewards")),
            interval_bar(v.get("reward_mean"), v.get("reward_ci_low"), v.get("reward_ci_high")),
            esc(f"{prob:.3f}") if isinstance(prob, int | float) else '<span class="muted">-</span>',
        ])
    body = f"<p>policy: <code>{esc((state.get('policy') or {}).get('type'))}</code> · refreshes every 5 s</p>"
    body += table(["variant", "model", "decisions", "traffic share", "rewards", "reward (95% interval)",
                   "P(best)"], rows)
    if state.get("events"):
        body += "<h2>Events</h2>" + value_html(state["events"])
    return page(f"Endpoint {endpoint}", body, refresh_s=5)


@router.get("/drift", response_class=HTMLResponse)
async def drift_page() -> str:
    alerts, err = await _get("drift", "/v1/alerts")
    if err:
        return page("Drift", _problem(err))
    alert_list = alerts.get("alerts", []) if isinstance(alerts, dict) else alerts
    versions = sorted({(a.get("model"), a.get("version")) for a in alert_list if a.get("model")})
    links = "".join(f"<li>{link(f'/ui/models/{m}/versions/{v}', f'{m} v{v}')}</li>" for m, v in versions)
    return page("Drift", "<h2>Alerts</h2>" + value_html(alert_list) + (f"<ul>{links}</ul>" if links else ""))


#: Rows per table on the audit page (the newest).
AUDIT_ROWS = 200


@router.get("/audit", response_class=HTMLResponse)
async def audit_page() -> str:
    trail, err = await _get("registry", f"/v1/audit?limit={AUDIT_ROWS}")
    body = "<h2>Audit trail</h2><p>Every state change, with who, when and why.</p>"
    body += _problem(err) if err else table(
        ["time", "actor", "action", "target", "reason"],
        [[esc(e.get("time")), esc(e.get("actor")), esc(e.get("action")), esc(e.get("target")),
          esc(e.get("reason"))] for e in (trail or {}).get("entries", [])])
    # One request for every model's stage changes (the registry joins them), not one per model and version.
    changes, err_t = await _get("registry", f"/v1/transitions?limit={AUDIT_ROWS}")
    transitions = [] if err_t else (changes or {}).get("transitions", [])
    rows = [[esc(t.get("time")), esc(t.get("actor")), esc(f"{t.get('from_stage') or ''} -> {t.get('to_stage')}"),
             esc(f"{t.get('model')} v{t.get('version')}"), esc(t.get("reason"))] for t in transitions]
    body += "<h2>Stage changes</h2>" + (_problem(err_t) if err_t else table(
        ["time", "actor", "stage", "model version", "reason"], rows))
    return page("Audit trail", body)
