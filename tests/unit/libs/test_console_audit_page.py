"""The console's audit page reads the registry a fixed number of times however many models and versions
there are (it made one request per model and per version, in sequence: 184 s with 28 models)."""

from __future__ import annotations

from typing import Any

import pytest

from mlops.console import routes


@pytest.mark.parametrize("models", [0, 3, 40])
async def test_the_audit_page_makes_two_upstream_reads(models: int, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    transitions = [{"model": f"m{i}", "version": "1", "from_stage": "", "to_stage": "candidate",
                    "actor": "ann", "reason": "trained", "time": f"2026-01-01T00:00:{i % 60:02d}+00:00"}
                   for i in range(models)]

    async def registry(service: str, path: str) -> tuple[Any, str | None]:
        asked.append(path)
        if path.startswith("/v1/transitions"):
            return {"transitions": transitions}, None
        if path.startswith("/v1/audit"):
            return {"entries": []}, None
        return {"models": [{"name": f"m{i}"} for i in range(models)], "versions": [{"version": "1"}]}, None

    monkeypatch.setattr(routes, "_get", registry)
    html = await routes.audit_page()
    assert len(asked) == 2, asked
    assert all(f"m{i} v1" in html for i in range(models))


async def test_a_registry_that_cannot_answer_costs_its_panel_only(monkeypatch: pytest.MonkeyPatch) -> None:
    async def down(service: str, path: str) -> tuple[Any, str | None]:
        return None, "registry unreachable: ConnectError"

    monkeypatch.setattr(routes, "_get", down)
    html = await routes.audit_page()
    assert html.count("registry unreachable") == 2
