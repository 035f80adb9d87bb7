"""A small REST client for the demo and operators: one method per platform call, errors made readable."""

from __future__ import annotations

import time
from typing import Any

import httpx

from mlops.auth.local import local_token
from mlops.settings import PlatformSettings, service_settings


class PlatformError(RuntimeError):
    pass


class Platform:
    def __init__(self, settings: PlatformSettings | None = None, timeout_s: float = 30.0) -> None:
        self._settings = settings or PlatformSettings()
        token = local_token(self._settings)
        self._http = httpx.Client(timeout=timeout_s, headers={"authorization": f"Bearer {token}"} if token else {})

    def close(self) -> None:
        self._http.close()

    def url(self, service: str, path: str) -> str:
        host = "127.0.0.1" if self._settings.host in ("0.0.0.0", "::") else self._settings.host
        return f"http://{host}:{service_settings(service).http_port}{path}"

    def call(self, method: str, service: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201, 202)
             ) -> Any:
        resp = self._http.request(method, self.url(service, path), json=body)
        if resp.status_code not in ok:
            raise PlatformError(f"{method} {service}{path} -> {resp.status_code}: {resp.text[:500]}")
        return resp.json()

    # -- the calls the demo makes ----------------------------------------------------------------------
    def put_schema(self, stream: str, schema: dict[str, Any]) -> Any:
        return self.call("PUT", "ingest", f"/v1/streams/{stream}/schema", schema)

    def send_events(self, stream: str, events: list[dict[str, Any]]) -> Any:
        return self.call("POST", "ingest", f"/v1/streams/{stream}/events", events)

    def stream_stats(self, stream: str) -> Any:
        return self.call("GET", "ingest", f"/v1/streams/{stream}/stats")

    def online(self, entities: list[str], features: list[str] | None = None) -> Any:
        return self.call("POST", "feature", "/v1/features/online", {"entities": entities, "features": features or []})

    def train(self, spec: dict[str, Any]) -> Any:
        return self.call("POST", "trainer", "/v1/training-jobs", spec)

    def job(self, job_id: str) -> Any:
        return self.call("GET", "trainer", f"/v1/training-jobs/{job_id}")

    def models(self) -> Any:
        return self.call("GET", "registry", "/v1/models")

    def put_endpoint(self, endpoint: str, spec: dict[str, Any]) -> Any:
        return self.call("PUT", "bandit-router", f"/v1/endpoints/{endpoint}", spec)

    def endpoint(self, endpoint: str) -> Any:
        return self.call("GET", "bandit-router", f"/v1/endpoints/{endpoint}")

    def predict(self, endpoint: str, body: dict[str, Any]) -> Any:
        return self.call("POST", "bandit-router", f"/v1/endpoints/{endpoint}/predict", body)

    def feedback(self, items: list[dict[str, Any]]) -> Any:
        return self.call("POST", "feedback", "/v1/feedback", items)

    def drift(self, model: str, version: str) -> Any:
        return self.call("GET", "drift", f"/v1/drift/{model}/{version}")

    def model_ready(self, model: str, version: str) -> bool:
        resp = self._http.get(self.url("inference", f"/v2/models/{model}/versions/{version}/ready"))
        return resp.status_code == 200

    def wait(self, what: str, check: Any, timeout_s: float = 120.0, every_s: float = 0.5) -> Any:
        """Poll ``check()`` until it returns something truthy; raise naming ``what`` on timeout."""
        deadline = time.time() + timeout_s
        last_error: Exception | None = None
        while time.time() < deadline:
            try:
                result = check()
                if result:
                    return result
            except (PlatformError, httpx.HTTPError) as exc:
                last_error = exc
            time.sleep(every_s)
        raise PlatformError(f"timed out after {timeout_s:.0f}s waiting for {what}" +
                            (f" (last error: {last_error})" if last_error else ""))
