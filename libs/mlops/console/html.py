"""HTML building blocks for the console: escaping, a page frame, tables from JSON, SVG charts."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from typing import Any

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#222}
header{background:#1f3b57;color:#fff;padding:10px 24px}
header a{color:#fff;margin-right:18px;text-decoration:none;font-weight:600}
main{padding:16px 24px}
table{border-collapse:collapse;margin:8px 0 18px}
td,th{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left;vertical-align:top;font-size:14px}
th{background:#f4f6f8}
.muted{color:#777}.ok{color:#1a7f37}.bad{color:#b42318}
code{background:#f4f6f8;padding:1px 4px}
"""

#: Headers of every console page. The pages run no script; their one inline stylesheet is allowed by its
#: hash, so an injected <script> or <style> does nothing; no framing (clickjacking), no referrer (a page
#: opened as /ui?token=... must not pass its URL on).
PAGE_HEADERS: dict[str, str] = {
    "content-security-policy": (
        "default-src 'self'; script-src 'none'; "
        f"style-src 'sha256-{base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()}'; "
        "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def page(title: str, body: str, refresh_s: int | None = None) -> str:
    refresh = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)} · mlops console</title>{refresh}
<link rel="icon" href="data:,"><style>{STYLE}</style></head>
<body><header><a href="/ui">Overview</a><a href="/ui/models">Models</a><a href="/ui/endpoints">Endpoints</a>
<a href="/ui/drift">Drift</a><a href="/ui/audit">Audit</a></header>
<main><h1>{esc(title)}</h1>{body}</main></body></html>"""


def link(href: str, text: Any) -> str:
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Rows are already-escaped HTML cells."""
    if not rows:
        return '<p class="muted">nothing yet</p>'
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def value_html(value: Any, depth: int = 0) -> str:
    """Any JSON value as readable HTML: objects as key/value tables, lists of objects as tables."""
    if isinstance(value, dict):
        if not value:
            return '<span class="muted">-</span>'
        rows = [[f"<b>{esc(k)}</b>", value_html(v, depth + 1)] for k, v in value.items()]
        return table(["", ""], rows) if depth < 4 else f"<code>{esc(json.dumps(value))}</code>"
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value) and depth < 3:
            keys = list(dict.fromkeys(k for v in value for k in v))[:12]
            return table(keys, [[value_html(v.get(k), depth + 1) for k in keys] for v in value])
        return esc(", ".join(str(v) for v in value)) if value else '<span class="muted">-</span>'
    if isinstance(value, float):
        return esc(f"{value:.4g}")
    return esc(value)


def line_chart(series: dict[str, list[tuple[float, float]]], width: int = 560, height: int = 220,
               title: str = "") -> str:
    """An inline SVG line chart of ``name -> [(x, y), ...]``."""
    points = [p for s in series.values() for p in s if math.isfinite(p[0]) and math.isfinite(p[1])]
    if not points:
        return '<p class="muted">no data</p>'
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    pad = 30
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]

    def sx(x: float) -> float:
        return pad + (x - x0) / (x1 - x0) * (width - 2 * pad)

    def sy(y: float) -> float:
        return height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)

    lines, legend = [], []
    for i, (name, s) in enumerate(sorted(series.items())):
        color = colors[i % len(colors)]
        pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s if math.isfinite(x) and math.isfinite(y))
        lines.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>')
        legend.append(f'<text x="{pad + 110 * i}" y="14" fill="{color}" font-size="12">{esc(name)}</text>')
    axes = (f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#999"/>'
            f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#999"/>'
            f'<text x="2" y="{pad}" font-size="11">{y1:.3g}</text>'
            f'<text x="2" y="{height - pad}" font-size="11">{y0:.3g}</text>')
    return (f'<figure><figcaption>{esc(title)}</figcaption><svg width="{width}" height="{height}" '
            f'role="img" aria-label="{esc(title)}">{axes}{"".join(lines)}{"".join(legend)}</svg></figure>')


def interval_bar(mean: float | None, low: float | None, high: float | None, width: int = 200) -> str:
    """A reward mean with its 95% interval on a 0..1 scale (values outside are clipped)."""
    if mean is None or not isinstance(mean, int | float) or not math.isfinite(mean):
        return '<span class="muted">no rewards yet</span>'

    def sx(v: float) -> float:
        return 5 + max(0.0, min(1.0, v)) * (width - 10)

    lo = low if isinstance(low, int | float) and math.isfinite(low) else mean
    hi = high if isinstance(high, int | float) and math.isfinite(high) else mean
    return (f'<svg width="{width}" height="18" role="img" aria-label="reward {mean:.3f}">'
            f'<line x1="{sx(lo):.1f}" y1="9" x2="{sx(hi):.1f}" y2="9" stroke="#555" stroke-width="2"/>'
            f'<circle cx="{sx(mean):.1f}" cy="9" r="4" fill="#1f77b4"/></svg> '
            f'{mean:.3f} [{lo:.3f}, {hi:.3f}]')


def share_bar(share: float, width: int = 160) -> str:
    share = max(0.0, min(1.0, float(share or 0.0)))
    return (f'<svg width="{width}" height="14" role="img" aria-label="traffic {share:.0%}">'
            f'<rect width="{width}" height="14" fill="#eef"/><rect width="{share * width:.1f}" height="14" '
            f'fill="#1f77b4"/></svg> {share:.0%}')
