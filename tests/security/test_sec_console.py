"""Console session attacks on the auth-on stack: a page on another origin makes the browser send the
console's cookie with a form POST (CSRF); the cookie is tried on API routes; pages must forbid script,
framing and sniffing. The registry serves the console."""

from __future__ import annotations

import uuid

import httpx

from tests.integration import toy_model
from tests.security.conftest import SecureStack

PAGE_HEADERS = {"x-frame-options": "DENY", "x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}


def _two_production_versions(secure: SecureStack) -> tuple[str, str, str]:
    """A model whose production alias moved from v1 to v2: a rollback would move it back."""
    model = f"csrf-{uuid.uuid4().hex[:8]}"
    metadata = (("authorization", f"Bearer {secure.admin}"),)
    first = toy_model.register(secure.grpc("registry"), model, ["a", "b"], metadata=metadata).version
    second = toy_model.register(secure.grpc("registry"), model, ["a", "b"], metadata=metadata).version
    return model, first, second


def _production(secure: SecureStack, model: str) -> str:
    with secure.http("admin") as http:
        r = http.get(secure.url("registry", f"/v1/models/{model}/aliases/production"))
    assert r.status_code == 200, r.text
    return str(r.json()["version"])


def _console_cookie(secure: SecureStack) -> httpx.Cookies:
    """The cookie a browser holds after opening the console as /ui?token=<admin token>."""
    with httpx.Client(timeout=30) as browser:
        r = browser.get(secure.url("registry", "/ui"), params={"token": secure.admin})
        assert r.status_code == 200, r.text
        set_cookie = r.headers["set-cookie"].lower()
        for attribute in ("path=/ui", "httponly", "samesite=strict"):
            assert attribute in set_cookie, set_cookie
        return browser.cookies


def test_cross_origin_form_post_with_the_cookie_rolls_nothing_back(secure: SecureStack) -> None:
    model, _first, second = _two_production_versions(secure)
    assert _production(secure, model) == second
    cookie = f"mlops_token={secure.admin}"
    registry = secure.url("registry")
    attacker = f"http://127.0.0.1:{int(registry.rsplit(':', 1)[1]) + 1}"  # another port: same site, other origin
    browser_form = {"cookie": cookie, "origin": attacker, "referer": f"{attacker}/", "sec-fetch-site": "same-site",
                    "sec-fetch-mode": "navigate", "content-type": "application/x-www-form-urlencoded"}
    with httpx.Client(timeout=30) as http:
        for headers, body in ((browser_form, "reason=pwned"), ({"cookie": cookie}, "")):
            for path, data in ((f"/v1/models/{model}/rollback", body),
                               (f"/v1/models/{model}/versions/{second}/stage", '{"stage": "archived"}')):
                r = http.post(f"{registry}{path}", headers=headers, content=data)
                assert r.status_code in (401, 403), (path, headers, r.status_code, r.text)
    assert _production(secure, model) == second, "a refused request changed the production version"


def test_the_cookie_opens_console_pages_but_no_api_route(secure: SecureStack) -> None:
    cookies = _console_cookie(secure)
    token = cookies.get("mlops_token")
    assert token == secure.admin
    with httpx.Client(timeout=30) as http:
        page = http.get(secure.url("registry", "/ui/models"), headers={"cookie": f"mlops_token={token}"})
        assert page.status_code == 200 and "Models" in page.text
        for service, path in (("registry", "/v1/models"), ("registry", "/v1/audit"),
                              ("bandit-router", "/v1/endpoints"), ("drift", "/v1/alerts")):
            r = http.get(secure.url(service, path), headers={"cookie": f"mlops_token={token}"})
            assert r.status_code == 401, (service, path, r.status_code)
            r = http.get(secure.url(service, path), params={"token": token})
            assert r.status_code == 401, (service, path, "query token", r.status_code)


def test_console_pages_forbid_script_framing_and_sniffing(secure: SecureStack) -> None:
    with secure.http("viewer") as http:
        for path in ("/ui", "/ui/models", "/ui/endpoints", "/ui/drift", "/ui/audit"):
            r = http.get(secure.url("registry", path))
            assert r.status_code == 200, (path, r.status_code)
            for name, value in PAGE_HEADERS.items():
                assert r.headers.get(name) == value, (path, name, r.headers.get(name))
            csp = r.headers["content-security-policy"]
            for directive in ("default-src 'self'", "script-src 'none'", "frame-ancestors 'none'",
                              "object-src 'none'", "base-uri 'none'"):
                assert directive in csp, (path, csp)
            assert "unsafe-inline" not in csp and "<script" not in r.text.lower()


def test_api_responses_and_refusals_are_nosniff(secure: SecureStack) -> None:
    with secure.http("viewer") as http:
        assert http.get(secure.url("registry", "/v1/models")).headers.get("x-content-type-options") == "nosniff"
    with httpx.Client(timeout=30) as anonymous:
        refused = anonymous.get(secure.url("bandit-router", "/v1/endpoints"))
        assert refused.status_code == 401
        assert refused.headers.get("x-content-type-options") == "nosniff"
