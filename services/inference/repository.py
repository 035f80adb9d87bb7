"""The set of loaded model versions, kept in step with the registry.

A sync lists the versions in serving stages, starts a background load for each one not loaded yet
(GetArtifact, sha256 check, deserialize, warm-up, then swap in) and unloads the ones that left the
serving stages (archived). Readers see a new mapping only once it is complete: the mapping is rebuilt
and assigned in one step, so a request never sees a half-loaded version. Syncs are triggered by
``models.lifecycle`` events and a periodic timer; triggers that arrive during a sync coalesce into one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import numpy as np

from mlops.errors import NotFound, Unavailable
from mlops.v1 import registry_pb2
from services.inference import metrics
from services.inference.batcher import DynamicBatcher
from services.inference.registry_client import RegistryClient
from services.inference.runtime import Runtime, pick_device
from services.inference.settings import InferenceSettings

log = logging.getLogger(__name__)

Key = tuple[str, str]


def version_order(version: str) -> tuple[int, int | str]:
    """Sort key: numeric versions by value, after any non-numeric ones."""
    return (1, int(version)) if version.isdigit() else (0, version)


@dataclass(slots=True)
class LoadedVersion:
    """A model version ready to serve."""

    model: str
    version: str
    stage: str
    sha256: str
    input_name: str
    output_name: str
    features: tuple[str, ...]
    classes: tuple[str, ...]
    n_outputs: int | None
    runtime: Runtime
    batcher: DynamicBatcher = field(repr=False)

    @property
    def n_features(self) -> int | None:
        return len(self.features) or None


class ModelRepository:
    """Loaded versions by model and version, plus the loop that keeps them in step with the registry."""

    def __init__(self, registry: RegistryClient, settings: InferenceSettings) -> None:
        self._registry = registry
        self._settings = settings
        self.device = pick_device(settings.device)
        self._versions: dict[str, dict[str, LoadedVersion]] = {}
        self._wanted: dict[Key, registry_pb2.ModelVersion] = {}
        self._loading: dict[Key, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._wake.set()
        self.synced = asyncio.Event()
        self._closed = False

    # -- reads ---------------------------------------------------------------------------------------
    def get(self, model: str, version: str | None = None) -> LoadedVersion:
        """The loaded version; no version: the production one if loaded, else the highest loaded."""
        versions = self._versions.get(model)
        if version:
            if versions and version in versions:
                return versions[version]
            if (model, version) in self._loading:
                raise Unavailable(f"model '{model}' version '{version}' is loading")
            raise NotFound(f"model '{model}' version '{version}' is not loaded", field="model_version")
        if not versions:
            if any(key[0] == model for key in self._loading):
                raise Unavailable(f"model '{model}' is loading")
            raise NotFound(f"model '{model}' is not loaded", field="model_name")
        production = [v for v in versions.values() if v.stage == "production"]
        if production:
            return max(production, key=lambda v: version_order(v.version))
        return versions[max(versions, key=version_order)]

    def loaded(self) -> list[LoadedVersion]:
        return [v for versions in self._versions.values() for v in versions.values()]

    def versions_of(self, model: str) -> list[str]:
        return sorted(self._versions.get(model, {}), key=version_order)

    def is_loading(self, model: str, version: str | None) -> bool:
        return any(k[0] == model and (not version or k[1] == version) for k in self._loading)

    # -- syncing -------------------------------------------------------------------------------------
    def request_sync(self) -> None:
        """Ask for a resync soon; many requests during one sync make one more sync, not many."""
        self._wake.set()

    async def run(self) -> None:
        """Background task: sync on request or every ``resync_interval_s``; retry with backoff on errors."""
        backoff = 0.5
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.resync_interval_s)
            self._wake.clear()
            if self._closed:
                return
            try:
                await self.sync()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("registry sync failed (retry in %.1fs): %r", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                self._wake.set()

    async def sync(self) -> None:
        """One resync with the registry. The first one waits for its loads, so readiness means loaded."""
        versions = await self._registry.serving_versions(self._settings.serving_stages)
        self._wanted = {(v.model, v.version): v for v in versions}
        started: list[asyncio.Task[None]] = []
        for key, mv in self._wanted.items():
            loaded = self._versions.get(key[0], {}).get(key[1])
            if loaded is not None:
                loaded.stage = mv.stage
            elif key not in self._loading:
                task = asyncio.create_task(self._load(mv), name=f"load-{key[0]}:{key[1]}")
                self._loading[key] = task
                started.append(task)
        stale = [v for v in self.loaded() if (v.model, v.version) not in self._wanted]
        for v in stale:
            await self._unload(v)
        if not self.synced.is_set():
            await asyncio.gather(*started, return_exceptions=True)
            self.synced.set()
            log.info("initial sync done: %d version(s) loaded on %s", len(self.loaded()), self.device)

    async def _load(self, mv: registry_pb2.ModelVersion) -> None:
        key = (mv.model, mv.version)
        try:
            data = await self._registry.artifact(mv)
            runtime_cls = Runtime.for_format(mv.artifact_format)
            runtime = await asyncio.to_thread(runtime_cls.load, data, self.device)
            features = tuple(mv.signature.features)
            n_outputs = await asyncio.to_thread(self._warm_up, runtime, len(features))
            batcher = DynamicBatcher(
                runtime.forward,
                max_batch_size=self._settings.max_batch_size,
                max_queue_delay_s=self._settings.max_queue_delay_us / 1e6,
                adaptive=self._settings.adaptive_batching,
                labels=(mv.model, mv.version),
            )
            batcher.start()
            loaded = LoadedVersion(
                model=mv.model,
                version=mv.version,
                stage=mv.stage,
                sha256=mv.artifact_sha256,
                input_name=mv.signature.input_name or "input",
                output_name=mv.signature.output_name or "output",
                features=features,
                classes=tuple(mv.signature.classes),
                n_outputs=n_outputs,
                runtime=runtime,
                batcher=batcher,
            )
            wanted = self._wanted.get(key)
            if wanted is None:
                await batcher.close()
                return
            loaded.stage = wanted.stage
            self._install(loaded)
            metrics.LOADS.labels("ok").inc()
            log.info(
                "loaded %s:%s (%s, %s) on %s", mv.model, mv.version, mv.stage, mv.artifact_sha256[:12], runtime.device
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            metrics.LOADS.labels("failed").inc()
            log.error("loading %s:%s failed: %r", mv.model, mv.version, exc)
        finally:
            self._loading.pop(key, None)

    def _warm_up(self, runtime: Runtime, n_features: int) -> int | None:
        """Run each warm-up batch size once; returns the number of outputs per row."""
        if not n_features:
            return None
        n_outputs = None
        for rows in self._settings.warmup_rows:
            out = runtime.forward(np.zeros((rows, n_features), dtype=np.float32))
            if out.ndim != 2 or out.shape[0] != rows:
                raise ValueError(f"warm-up: expected [{rows}, C] output, got {list(out.shape)}")
            n_outputs = int(out.shape[1])
        return n_outputs

    def _install(self, loaded: LoadedVersion) -> None:
        versions = {m: dict(vs) for m, vs in self._versions.items()}
        versions.setdefault(loaded.model, {})[loaded.version] = loaded
        self._versions = versions
        metrics.LOADED.set(len(self.loaded()))

    async def _unload(self, loaded: LoadedVersion) -> None:
        versions = {m: dict(vs) for m, vs in self._versions.items()}
        versions.get(loaded.model, {}).pop(loaded.version, None)
        self._versions = {m: vs for m, vs in versions.items() if vs}
        metrics.LOADED.set(len(self.loaded()))
        log.info("unloaded %s:%s", loaded.model, loaded.version)
        await loaded.batcher.close()

    async def close(self) -> None:
        """Stop syncing and loading; let every batcher finish what it has queued."""
        self._closed = True
        self._wake.set()
        for task in list(self._loading.values()):
            task.cancel()
        await asyncio.gather(*self._loading.values(), return_exceptions=True)
        for loaded in self.loaded():
            await loaded.batcher.close()
