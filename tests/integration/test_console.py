"""The web console in headless Chromium: pages load, show the models and an endpoint's live state, and the
browser logs no console errors."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By

from tests.integration import toy_model
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


def _browser() -> webdriver.Chrome:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--no-first-run", "--disable-component-update",
                 "--disable-sync"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=ChromeService(executable_path=driver_path), options=options)


async def test_console_pages_in_headless_chromium(stack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    model, endpoint = f"console-{run}", f"console-{run}"
    version = (await asyncio.to_thread(toy_model.register, stack.grpc("registry"), model, ["a", "b"])).version
    await asyncio.to_thread(toy_model.wait_ready, stack.url("inference"), model, version)
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.put(stack.url("bandit-router", f"/v1/endpoints/{endpoint}"), json={
            "variants": [{"name": "main", "model": model, "alias": "production", "weight": 1.0}],
            "policy": {"type": "fixed"}})
        assert r.status_code == 200, r.text
        for i in range(5):
            r = await http.post(stack.url("bandit-router", f"/v1/endpoints/{endpoint}/predict"),
                                json={"features": {"a": float(i), "b": 1.0}})
            assert r.status_code == 200, r.text

    def browse() -> None:
        browser = _browser()
        try:
            base = stack.url("registry", "/ui")
            browser.get(base)
            assert "Overview" in browser.title
            assert model in browser.page_source
            browser.find_element(By.LINK_TEXT, model).click()
            assert f"Model {model}" in browser.find_element(By.TAG_NAME, "h1").text
            assert "production" in browser.page_source
            browser.find_element(By.LINK_TEXT, f"v{version}").click()
            assert "Model card" in browser.page_source
            browser.get(stack.url("registry", f"/ui/endpoints/{endpoint}"))
            cells = browser.find_element(By.TAG_NAME, "table").text
            assert "main" in cells and "100%" in cells, cells
            for path in ("/ui/models", "/ui/endpoints", "/ui/drift", "/ui/audit"):
                browser.get(stack.url("registry", path))
                assert browser.find_element(By.TAG_NAME, "h1").text
            for _ in range(40):  # the audit store is fed through audit.log, a moment behind
                if f"endpoints/{endpoint}" in browser.page_source:
                    break
                time.sleep(0.25)
                browser.get(stack.url("registry", "/ui/audit"))
            assert model in browser.page_source, "the audit trail shows the registration"
            assert f"/v1/endpoints/{endpoint}" in browser.page_source, "the audit trail shows the endpoint change"
            errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
            assert not errors, errors
        finally:
            browser.quit()

    await asyncio.to_thread(browse)
