"""Which permission each API method needs, and which roles hold which permissions: one table for REST
and gRPC across all services. Reads need ``read``; anything not listed that changes state needs ``admin``.

A method whose request names a registry stage (a stage change, a registration, a training job) needs, on
top of its own permission, what the stage needs (:data:`STAGE_PERMISSION`). The stage is normalised first,
with the registry's own :func:`mlops.stages.normalize_stage`, in one function (:func:`permissions_for`)
that REST and gRPC share: the decision is made on the value the registry will store, never on the raw
string (``"Production "`` needs ``promote`` like ``production``), and a stage that does not normalise is
refused as bad input before anything runs."""

from __future__ import annotations

import functools
import re
from typing import Any

from mlops.stages import ARCHIVED, CANARY, CANDIDATE, PRODUCTION, SHADOW, normalize_stage

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset({"read"}),
    "predictor": frozenset({"read", "predict", "feedback"}),
    "producer": frozenset({"read", "events"}),
    "scientist": frozenset({"read", "predict", "feedback", "train", "register", "stage", "schema"}),
    "admin": frozenset({"read", "predict", "feedback", "events", "train", "register", "stage", "schema",
                        "promote", "endpoints", "tokens", "admin"}),
    # The services' own roles (least privilege: each holds what its calls to its peers need, nothing more).
    # Inference, drift and the console read the registry, the feedback service and the router.
    "service-reader": frozenset({"read"}),
    # The trainer builds datasets, tracks runs and registers versions, at ``candidate`` only: a stage above
    # it needs ``stage``/``promote``, which the trainer does not hold; a requester's authorised stage comes
    # with a grant the registry issued to the requester (services/registry/grants.py).
    "service-trainer": frozenset({"read", "train", "register"}),
    # The router reads versions and features, calls inference, and promotes or archives versions when an
    # experiment concludes or a canary breaches its guardrails.
    "service-router": frozenset({"read", "predict", "stage", "promote"}),
}

#: The role each service's own token has (services that call no peer get no token at all).
SERVICE_ROLES: dict[str, str] = {
    "trainer": "service-trainer",
    "registry": "service-reader",  # the console's pages
    "inference": "service-reader",
    "drift": "service-reader",
    "ingest": "service-reader",  # asks the registry which serving versions read a field a schema change drops
    "bandit-router": "service-router",
}

#: Permissions whose successful use is a state change recorded in the audit trail.
AUDITED = frozenset({"train", "register", "stage", "schema", "promote", "endpoints", "tokens", "admin"})

#: Stages only an admin may set.
ADMIN_STAGES = frozenset({PRODUCTION, ARCHIVED})

#: What a target stage needs beyond the method's own permission (``None``: nothing more).
STAGE_PERMISSION: dict[str, str | None] = {
    CANDIDATE: None, SHADOW: "stage", CANARY: "stage", PRODUCTION: "promote", ARCHIVED: "promote",
}

#: Requests that name a stage: REST (method, path) and gRPC methods, each with the stage an empty value
#: means (``None``: the stage is required, as in a stage change).
_STAGED_REST: list[tuple[str, re.Pattern[str], str | None]] = [
    ("POST", re.compile(r"^/v1/models/[^/]+/versions/[^/]+/stage$"), None),
    ("POST", re.compile(r"^/v1/models/[^/]+/stage-grants$"), None),
    ("POST", re.compile(r"^/v1/training-jobs$"), CANDIDATE),
]
_STAGED_GRPC: dict[str, str | None] = {
    "/mlops.v1.RegistryService/SetStage": None,
    "/mlops.v1.RegistryService/RegisterModelVersion": CANDIDATE,
    "/mlops.v1.TrainerService/SubmitJob": CANDIDATE,
}
_UNSTAGED = object()

_REST: list[tuple[str, re.Pattern[str], str]] = [
    (m, re.compile(p), perm)
    for m, p, perm in [
        ("POST", r"^/v1/features/online$", "read"),
        ("POST", r"^/v1/datasets$", "train"),
        ("POST", r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$", "predict"),
        ("POST", r"^/v1/endpoints/[^/]+/predict$", "predict"),
        ("PUT", r"^/v1/endpoints/[^/]+$", "endpoints"),
        ("POST", r"^/v1/feedback$", "feedback"),
        ("POST", r"^/v1/streams/[^/]+/events$", "events"),
        ("PUT", r"^/v1/streams/[^/]+/schema$", "schema"),
        ("POST", r"^/v1/models/[^/]+/versions/[^/]+/stage$", "stage"),
        ("POST", r"^/v1/models/[^/]+/stage-grants$", "register"),
        ("POST", r"^/v1/models/[^/]+/rollback$", "promote"),
        ("POST", r"^/v1/runs$", "register"),
        ("PATCH", r"^/v1/runs/[^/]+$", "register"),
        ("POST", r"^/v1/runs/[^/]+/metrics$", "register"),
        ("PUT", r"^/v1/runs/[^/]+/files/[^/]+$", "register"),
        ("POST", r"^/v1/training-jobs$", "train"),
    ]
]

_GRPC: dict[str, str] = {
    "/mlops.v1.IngestService/SendEvents": "events",
    "/mlops.v1.IngestService/StreamEvents": "events",
    "/mlops.v1.IngestService/PutSchema": "schema",
    "/mlops.v1.FeatureService/GetOnlineFeatures": "read",
    "/mlops.v1.FeatureService/BuildDataset": "train",
    "/mlops.v1.TrainerService/SubmitJob": "train",
    "/mlops.v1.RegistryService/RegisterModelVersion": "register",
    "/mlops.v1.RegistryService/SetStage": "stage",
    "/mlops.v1.RegistryService/Rollback": "promote",
    "/inference.GRPCInferenceService/ModelInfer": "predict",
    "/inference.GRPCInferenceService/ModelStreamInfer": "predict",
    "/mlops.v1.BanditRouterService/Predict": "predict",
    "/mlops.v1.BanditRouterService/PutEndpoint": "endpoints",
    "/mlops.v1.FeedbackService/SendFeedback": "feedback",
}

OPEN_PATHS = re.compile(r"^/(healthz|readyz|metrics|docs|redoc|openapi\.json|v2/health/(live|ready))(/.*)?$")
OPEN_GRPC = re.compile(r"^/grpc\.health\.v1\.Health/|^/inference\.GRPCInferenceService/Server(Live|Ready)$")


@functools.lru_cache(maxsize=4096)  # every request asks; most ask about the same few paths
def rest_permission(method: str, path: str) -> str:
    for m, pattern, perm in _REST:
        if m == method and pattern.match(path):
            return perm
    return "read" if method in ("GET", "HEAD", "OPTIONS") else "admin"


@functools.lru_cache(maxsize=4096)
def rest_stage_default(method: str, path: str) -> object:
    """For a request whose JSON body names a stage: the stage an empty one means (``None``: required);
    for any other request a sentinel that :func:`is_staged` tells apart."""
    for m, pattern, default in _STAGED_REST:
        if m == method and pattern.match(path):
            return default
    return _UNSTAGED


def is_staged(default: object) -> bool:
    return default is not _UNSTAGED


def grpc_stage_default(full_method: str) -> object:
    return _STAGED_GRPC.get(full_method, _UNSTAGED)


def permissions_for(permission: str, stage: object, default: str | None) -> tuple[str, ...]:
    """Every permission a request needs: the method's own and what its stage needs, the stage normalised
    with the registry's own function first. InvalidArgument when the stage does not normalise."""
    needed = STAGE_PERMISSION[normalize_stage(stage, default=default)]
    return (permission,) if needed is None or needed == permission else (permission, needed)


def grpc_permission(full_method: str, request: Any = None) -> str:
    """The method's own permission (without what a stage in its request adds: :func:`grpc_permissions`)."""
    perm = _GRPC.get(full_method)
    if perm is None:
        name = full_method.rsplit("/", 1)[-1]
        perm = "read" if name.startswith(("Get", "List", "Resolve", "Read", "Model", "Server")) else "admin"
    return perm


def grpc_permissions(full_method: str, request: Any) -> tuple[str, ...]:
    """Every permission a unary call needs, given its request (its stage normalised)."""
    permission = grpc_permission(full_method)
    default = grpc_stage_default(full_method)
    if not is_staged(default) or request is None:
        return (permission,)
    return permissions_for(permission, getattr(request, "stage", ""), default)  # type: ignore[arg-type]


def allowed(role: str, permission: str) -> bool:
    return permission in ROLE_PERMISSIONS.get(role, frozenset())


def missing(role: str, permissions: tuple[str, ...]) -> str | None:
    """The first of ``permissions`` that ``role`` lacks, or None when it holds them all."""
    held = ROLE_PERMISSIONS.get(role, frozenset())
    return next((p for p in permissions if p not in held), None)


def audited(permissions: tuple[str, ...]) -> bool:
    return any(p in AUDITED for p in permissions)
