"""The console's session cookie counts only for its own page reads, and a cross-site state change without
the bearer header is refused (pure request logic; tests/security/test_sec_console.py attacks a real stack)."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from mlops.console.html import PAGE_HEADERS, STYLE
from mlops.http_middleware import cookie_token, cross_site_without_bearer


def _scope(method: str, path: str, headers: dict[str, str] | None = None, query: str = "") -> dict:
    return {"type": "http", "method": method, "path": path, "query_string": query.encode(),
            "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()]}


COOKIE = {"cookie": "mlops_token=secret"}


@pytest.mark.parametrize(("method", "path"), [("GET", "/ui"), ("GET", "/ui/models/m"), ("HEAD", "/ui/")])
def test_cookie_authenticates_console_page_reads(method: str, path: str) -> None:
    assert cookie_token(Request(_scope(method, path, COOKIE))) == "Bearer secret"


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/models"), ("POST", "/v1/models/m/versions/1/stage"), ("POST", "/v1/models/m/rollback"),
    ("PUT", "/v1/endpoints/e"), ("POST", "/ui"), ("GET", "/uix"), ("GET", "/v2/models/m/ready"),
])
def test_cookie_counts_for_nothing_else(method: str, path: str) -> None:
    assert cookie_token(Request(_scope(method, path, COOKIE))) is None
    assert cookie_token(Request(_scope(method, path, query="token=secret"))) is None


def test_query_token_opens_a_console_session() -> None:
    assert cookie_token(Request(_scope("GET", "/ui", query="token=t1"))) == "Bearer t1"


@pytest.mark.parametrize("headers", [
    {"origin": "http://127.0.0.1:9999", "host": "127.0.0.1:8104"},
    {"origin": "null", "host": "127.0.0.1:8104"},
    {"sec-fetch-site": "same-site", "host": "127.0.0.1:8104"},
    {"sec-fetch-site": "cross-site"},
    {"sec-fetch-site": "cross-site", "cookie": "mlops_token=secret"},
])
def test_cross_site_state_changes_without_bearer_are_refused(headers: dict[str, str]) -> None:
    assert cross_site_without_bearer(_scope("POST", "/v1/models/m/rollback", headers))


@pytest.mark.parametrize(("method", "headers"), [
    ("POST", {}),  # a client that is no browser
    ("POST", {"origin": "http://127.0.0.1:8104", "host": "127.0.0.1:8104"}),
    ("POST", {"sec-fetch-site": "same-origin"}),
    ("POST", {"origin": "http://evil.example", "authorization": "Bearer x"}),
    ("GET", {"sec-fetch-site": "cross-site"}),
])
def test_other_requests_pass(method: str, headers: dict[str, str]) -> None:
    assert not cross_site_without_bearer(_scope(method, "/v1/models/m/rollback", headers))


def test_page_csp_allows_exactly_the_inline_stylesheet_and_no_script() -> None:
    import base64
    import hashlib

    csp = PAGE_HEADERS["content-security-policy"]
    digest = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in csp
    for directive in ("script-src 'none'", "frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'"):
        assert directive in csp
    assert "unsafe-inline" not in csp
    assert PAGE_HEADERS["x-frame-options"] == "DENY"
