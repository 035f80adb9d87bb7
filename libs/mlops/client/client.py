"""A small synchronous client over the platform's REST APIs (router, feedback, ingest), with retries on
transient failures and the platform's typed errors for everything else."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from mlops import errors
from mlops.settings import PlatformSettings
from mlops.stack import locate

_BY_STATUS: dict[int, type[errors.MlopsError]] = {
    400: errors.InvalidArgument,
    401: errors.Unauthenticated,
    403: errors.PermissionDenied,
    404: errors.NotFound,
    409: errors.Conflict,
    422: errors.InvalidArgument,
    503: errors.Unavailable,
}
_RETRYABLE = {502, 503, 504}


@dataclass(frozen=True)
class Prediction:
    prediction_id: str
    model: str
    version: str
    outputs: list[float]
    variant: str | None = None


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    rejected: list[dict[str, Any]] = field(default_factory=list)


def _error(resp: httpx.Response) -> errors.MlopsError:
    try:
        body = resp.json().get("error", {})
    except ValueError:
        body = {}
    message = body.get("message") if isinstance(body, dict) else str(body)
    field_name = body.get("field") if isinstance(body, dict) else None
    cls = _BY_STATUS.get(resp.status_code, errors.MlopsError)
    return cls(message or f"HTTP {resp.status_code}: {resp.text[:300]}", field=field_name)


class Client:
    """One client per app; thread-safe like the ``httpx.Client`` underneath. Close it, or use ``with``.

    Without arguments it finds the stack as the ``mlops`` CLI does (:mod:`mlops.stack.locate`): addresses from
    this shell's ``MLOPS_*`` settings, else from the stack ``mlops up`` started under ``$MLOPS_HOME``; the token
    from ``MLOPS_TOKEN``, else the local admin token ``$MLOPS_HOME/auth/admin.token``. ``token=""`` sends none.
    :attr:`kafka_bootstrap` is the stack's broker, for apps that produce to ``events.raw`` themselves.
    """

    def __init__(
        self,
        *,
        router: str | None = None,
        feedback: str | None = None,
        ingest: str | None = None,
        token: str | None = None,
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.1,
    ) -> None:
        settings = PlatformSettings()
        self._urls = {
            "bandit-router": router or locate.http_url("bandit-router", settings),
            "feedback": feedback or locate.http_url("feedback", settings),
            "ingest": ingest or locate.http_url("ingest", settings),
        }
        #: Kafka bootstrap servers of the stack (``MLOPS_KAFKA_BOOTSTRAP``, else the running stack's broker).
        self.kafka_bootstrap = locate.kafka_bootstrap(settings)
        token = locate.local_token(settings) if token is None else token
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(timeout=timeout_s, headers=headers)
        self._retries = retries
        self._backoff_s = backoff_s

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, service: str, path: str, body: Any) -> Any:
        url = self._urls[service] + path
        for attempt in range(self._retries + 1):
            try:
                resp = self._http.request(method, url, json=body)
            except (httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError) as exc:
                if attempt == self._retries:
                    raise errors.Unavailable(f"{service} unreachable at {url}: {exc}") from exc
            else:
                if resp.status_code < 400:
                    return resp.json()
                if resp.status_code not in _RETRYABLE or attempt == self._retries:
                    raise _error(resp)
            # Exponential backoff with jitter, so many clients do not retry in step.
            time.sleep(self._backoff_s * (2**attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def predict(
        self,
        endpoint: str,
        *,
        features: dict[str, Any] | None = None,
        entity_id: str | None = None,
        unit_id: str | None = None,
    ) -> Prediction:
        """A prediction from the router's ``endpoint``; features from ``features`` and/or the online store."""
        body: dict[str, Any] = {}
        if features is not None:
            body["features"] = features
        if entity_id is not None:
            body["entity_id"] = entity_id
        if unit_id is not None:
            body["unit_id"] = unit_id
        data = self._request("POST", "bandit-router", f"/v1/endpoints/{endpoint}/predict", body)
        return Prediction(prediction_id=data["prediction_id"], model=data["model"], version=str(data["version"]),
                          outputs=list(data["outputs"]), variant=data.get("variant"))

    def feedback(
        self,
        prediction_id: str,
        *,
        label: int | None = None,
        reward: float | None = None,
        value: float | None = None,
    ) -> None:
        """The outcome of a prediction: a label, a reward, and/or a business value."""
        item: dict[str, Any] = {"prediction_id": prediction_id}
        for key, v in (("label", label), ("reward", reward), ("value", value)):
            if v is not None:
                item[key] = v
        self._request("POST", "feedback", "/v1/feedback", item)

    def send_events(self, stream: str, events: list[dict[str, Any]]) -> IngestResult:
        """Events for ``stream``; give each an ``event_id`` to make retries safe (repeats are dropped)."""
        data = self._request("POST", "ingest", f"/v1/streams/{stream}/events", events)
        return IngestResult(accepted=data["accepted"], duplicates=data.get("duplicates", 0),
                            rejected=data.get("rejected", []))
