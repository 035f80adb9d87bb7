"""The set of loaded model versions, kept in step with the model source (the registry, or a directory).

A sync lists the versions in serving stages and starts a background load for each one not loaded yet:
fetch the artifact, check its sha256 against the version's, deserialize, warm up, then swap in. Readers
see a new mapping only once it is complete: the mapping (and each model's default version) is rebuilt
and assigned in one step on the event loop, so a request never sees a half-loaded version.

Versions that left the serving stages (archived) are unloaded, but never before their replacement is
in: while a model still has a version loading, an outgoing version keeps serving (``retiring``), and
requests without a version keep going to it until the new one is installed. That is what makes a
promotion lose no request. Unloading closes the version's batcher, which finishes what it has queued.

Syncs are triggered by ``models.lifecycle`` events and a periodic timer; triggers that arrive during a
sync coalesce into one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import Counter

from mlops.errors import Conflict, NotFound, Unavailable
from mlops.modelguard import ModelPolicy, default_policy
from mlops.v1 import registry_pb2
from services.inference import metrics
from services.inference.batcher import DynamicBatcher
from services.inference.registry_client import ModelSource
from services.inference.runtime import Runtime, pick_device, set_threads
from services.inference.settings import InferenceSettings
from services.inference.triton import TritonBackend

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
    #: left the serving stages, kept serving until its model's next version is in.
    retiring: bool = False
    ok: Counter = field(init=False, repr=False)
    failed: Counter = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Children resolved once: ``labels()`` per request would cost a lock and a dict lookup each time.
        self.ok = metrics.INFER_REQUESTS.labels(self.model, self.version, "ok")
        self.failed = metrics.INFER_REQUESTS.labels(self.model, self.version, "error")

    @property
    def n_features(self) -> int | None:
        return len(self.features) or None


def default_version(versions: dict[str, LoadedVersion]) -> LoadedVersion:
    """What a request without a version gets: the production version (the highest if several), else the
    highest version; versions still serving (not retiring) first."""
    live = [v for v in versions.values() if not v.retiring] or list(versions.values())
    production = [v for v in live if v.stage == "production"]
    return max(production or live, key=lambda v: version_order(v.version))


class ModelRepository:
    """Loaded versions by model and version, plus the loop that keeps them in step with the source."""

    def __init__(self, source: ModelSource, settings: InferenceSettings, triton: TritonBackend | None = None,
                 models: ModelPolicy | None = None) -> None:
        self._source = source
        self._settings = settings
        self._triton = triton
        #: What a model may run: checked before anything of an artifact runs, here or in Triton.
        self._models = models or default_policy()
        self.device = pick_device(settings.device)
        if settings.torch_threads:
            set_threads(settings.torch_threads)
        self._versions: dict[str, dict[str, LoadedVersion]] = {}
        self._defaults: dict[str, LoadedVersion] = {}
        self._wanted: dict[Key, registry_pb2.ModelVersion] = {}
        self._loading: dict[Key, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._wake.set()
        self.synced = asyncio.Event()
        self._closed = False

    # -- reads (the request path: dict lookups only) -------------------------------------------------
    def get(self, model: str, version: str | None = None) -> LoadedVersion:
        """The loaded version; no version: the model's default (see :func:`default_version`)."""
        if version:
            versions = self._versions.get(model)
            if versions is not None:
                loaded = versions.get(version)
                if loaded is not None:
                    return loaded
            if (model, version) in self._loading:
                raise Unavailable(f"model '{model}' version '{version}' is loading")
            raise NotFound(f"model '{model}' version '{version}' is not loaded", field="model_version")
        loaded = self._defaults.get(model)
        if loaded is not None:
            return loaded
        if any(key[0] == model for key in self._loading):
            raise Unavailable(f"model '{model}' is loading")
        raise NotFound(f"model '{model}' is not loaded", field="model_name")

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
                log.warning("model source sync failed (retry in %.1fs): %r", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                self._wake.set()

    async def sync(self) -> None:
        """One resync with the source. The first one waits for its loads, so readiness means loaded."""
        versions = await self._source.serving_versions(self._settings.serving_stages)
        self._wanted = {(v.model, v.version): v for v in versions}
        started: list[asyncio.Task[None]] = []
        for key, mv in self._wanted.items():
            loaded = self._versions.get(key[0], {}).get(key[1])
            if loaded is not None:
                loaded.stage = mv.stage
                loaded.retiring = False
            elif key not in self._loading:
                task = asyncio.create_task(self._load(mv), name=f"load-{key[0]}:{key[1]}")
                self._loading[key] = task
                started.append(task)
        self._publish(self._versions)
        await self._reap()
        if not self.synced.is_set():
            await asyncio.gather(*started, return_exceptions=True)
            self.synced.set()
            log.info("initial sync done: %d version(s) loaded on %s", len(self.loaded()), self.device)

    async def _reap(self) -> None:
        """Unload versions that left the serving stages, unless their model's next version is not in yet."""
        for v in self.loaded():
            if (v.model, v.version) in self._wanted:
                continue
            model_wanted = any(k[0] == v.model for k in self._wanted)
            pending = any(k[0] == v.model for k in self._loading)
            successor_in = any((v.model, other) in self._wanted for other in self._versions.get(v.model, {}))
            if not model_wanted or (successor_in and not pending):
                await self._unload(v)
            elif not v.retiring:
                # Its successor is loading (or failed to load): keep serving until one is in.
                v.retiring = True
                self._publish(self._versions)
                log.info("%s:%s left the serving stages; serving until its successor is loaded", v.model, v.version)

    async def _load(self, mv: registry_pb2.ModelVersion) -> None:
        key = (mv.model, mv.version)
        try:
            data = await self._source.artifact(mv)
            digest = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
            if mv.artifact_sha256 and digest != mv.artifact_sha256:
                raise Conflict(
                    f"artifact of {mv.model}:{mv.version} has sha256 {digest}, expected {mv.artifact_sha256}"
                )
            batching = self._settings.batching(mv.model)
            runtime_cls = Runtime.for_format(mv.artifact_format)  # refuses formats no runtime knows
            # A model artifact is code: cleared before it is deserialized here or exported to Triton (whose
            # libtorch backend would run the same graphs). The registry refused it already at registration;
            # this holds for versions registered before, and for a local model repository.
            await asyncio.to_thread(self._models.check_artifact, mv.artifact_format, data)
            if self._triton is not None:
                runtime: Runtime = await asyncio.to_thread(
                    self._triton.load, mv, data, max_batch_size=batching.max_batch_size,
                    max_queue_delay_us=batching.max_queue_delay_us,
                )
            else:
                runtime = await asyncio.to_thread(runtime_cls.load, data, self.device, self._models)
            features = tuple(mv.signature.features)
            n_outputs = await asyncio.to_thread(self._warm_up, runtime, len(features))
            batcher = DynamicBatcher(
                runtime.forward,
                max_batch_size=batching.max_batch_size,
                max_queue_delay_s=batching.max_queue_delay_us / 1e6,
                adaptive=batching.adaptive,
                max_queue_rows=batching.max_queue_rows,
                inline=self._settings.forward_executor == "inline",
                auto_inline_max_s=self._auto_inline_max_s(runtime),
                labels=(mv.model, mv.version),
            )
            batcher.start()
            loaded = LoadedVersion(
                model=mv.model,
                version=mv.version,
                stage=mv.stage,
                sha256=digest,
                input_name=mv.signature.input_name or "input",
                output_name=mv.signature.output_name or "output",
                features=features,
                classes=tuple(mv.signature.classes),
                n_outputs=n_outputs,
                runtime=runtime,
                batcher=batcher,
            )
            wanted = self._wanted.get(key)
            if wanted is None or self._closed:
                await batcher.close()
                await asyncio.to_thread(runtime.close)
                return
            loaded.stage = wanted.stage
            self._install(loaded)
            metrics.LOADS.labels("ok").inc()
            log.info(
                "loaded %s:%s (%s, %s) on %s", mv.model, mv.version, loaded.stage, digest[:12], runtime.device
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            metrics.LOADS.labels("failed").inc()
            log.error("loading %s:%s failed: %r", mv.model, mv.version, exc)
        finally:
            self._loading.pop(key, None)
        if not self._closed:
            await self._reap()

    def _auto_inline_max_s(self, runtime: Runtime) -> float | None:
        """``forward_executor=auto``: the inline limit for ``runtime``; None (always the thread) for a model on
        CUDA (its passes must stay off the event loop) or behind Triton (a network call)."""
        if self._settings.forward_executor != "auto" or self._triton is not None or runtime.device != "cpu":
            return None
        return self._settings.inline_max_us / 1e6

    def _warm_up(self, runtime: Runtime, n_features: int) -> int | None:
        """Run each warm-up batch size once; returns the number of outputs per row."""
        if not n_features:
            return None
        if self._settings.optimize:
            probe = np.random.default_rng(0).standard_normal((8, n_features)).astype(np.float32)
            runtime.optimize(probe)
        n_outputs = None
        for rows in self._settings.warmup_rows:
            out = runtime.forward(np.zeros((rows, n_features), dtype=np.float32))
            if out.ndim != 2 or out.shape[0] != rows:
                raise ValueError(f"warm-up: expected [{rows}, C] output, got {list(out.shape)}")
            n_outputs = int(out.shape[1])
        return n_outputs

    # -- the mapping: rebuilt, then assigned in one step ----------------------------------------------
    def _publish(self, versions: dict[str, dict[str, LoadedVersion]]) -> None:
        self._versions = {m: vs for m, vs in versions.items() if vs}
        self._defaults = {m: default_version(vs) for m, vs in self._versions.items()}
        metrics.LOADED.set(len(self.loaded()))

    def _install(self, loaded: LoadedVersion) -> None:
        versions = {m: dict(vs) for m, vs in self._versions.items()}
        versions.setdefault(loaded.model, {})[loaded.version] = loaded
        self._publish(versions)

    async def _unload(self, loaded: LoadedVersion) -> None:
        versions = {m: dict(vs) for m, vs in self._versions.items()}
        versions.get(loaded.model, {}).pop(loaded.version, None)
        self._publish(versions)
        log.info("unloaded %s:%s", loaded.model, loaded.version)
        await loaded.batcher.close()
        await asyncio.to_thread(loaded.runtime.close)

    async def close(self) -> None:
        """Stop syncing and loading; let every batcher finish what it has queued."""
        self._closed = True
        self._wake.set()
        for task in list(self._loading.values()):
            task.cancel()
        await asyncio.gather(*self._loading.values(), return_exceptions=True)
        for loaded in self.loaded():
            await loaded.batcher.close()
