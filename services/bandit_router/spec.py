"""Endpoint specs: variants (a model version or alias with a weight) and the traffic policy.

Domain objects convert at the edge: ``from_dict``/``to_dict`` for REST and Redis, ``from_proto``/
``to_proto`` for gRPC. :func:`validate` normalises a spec (default names, default alias) and raises
:class:`InvalidArgument` naming the offending field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any

from google.protobuf import json_format, struct_pb2

from mlops import names
from mlops.errors import InvalidArgument
from mlops.v1 import bandit_router_pb2 as pb

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
DEFAULT_ALIAS = "production"


@dataclass(frozen=True, slots=True)
class VariantSpec:
    """One arm: a registry model pinned to a version, or following an alias (e.g. production)."""

    name: str
    model: str
    version: str = ""
    alias: str = ""
    weight: float = 1.0

    @property
    def target(self) -> tuple[str, str, str]:
        return (self.model, self.version, self.alias)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "version": self.version or None,
            "alias": self.alias or None,
            "weight": self.weight,
        }


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """The traffic policy: a registered ``type`` and its parameters (see policies/)."""

    type: str = "fixed"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    endpoint: str
    variants: tuple[VariantSpec, ...]
    policy: PolicySpec = field(default_factory=PolicySpec)
    #: Filled in by the store: bumped on every change, for compare-and-set updates (never set by users).
    revision: int = 0

    # -- dicts (REST bodies, Redis) ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "variants": [v.to_dict() for v in self.variants],
            "policy": {"type": self.policy.type, "params": dict(self.policy.params)},
            "revision": self.revision,
        }

    @classmethod
    def from_dict(cls, endpoint: str, body: dict[str, Any]) -> EndpointSpec:
        variants = tuple(
            VariantSpec(
                name=str(v.get("name") or ""),
                model=str(v.get("model") or ""),
                version=_str(v.get("version")),
                alias=str(v.get("alias") or ""),
                weight=float(v["weight"]) if v.get("weight") is not None else 1.0,
            )
            for v in body.get("variants") or ()
        )
        policy = body.get("policy") or {}
        return cls(
            endpoint=endpoint,
            variants=variants,
            policy=PolicySpec(type=str(policy.get("type") or "fixed"), params=dict(policy.get("params") or {})),
            revision=int(body.get("revision") or 0),
        )

    # -- protobuf ------------------------------------------------------------------------------------
    def to_proto(self) -> pb.EndpointSpec:
        params = struct_pb2.Struct()
        params.update(self.policy.params)
        return pb.EndpointSpec(
            endpoint=self.endpoint,
            variants=[
                pb.Variant(name=v.name, model=v.model, version=v.version, alias=v.alias, weight=v.weight)
                for v in self.variants
            ],
            policy=pb.Policy(type=self.policy.type, params=params),
        )

    @classmethod
    def from_proto(cls, msg: pb.EndpointSpec) -> EndpointSpec:
        return cls(
            endpoint=msg.endpoint,
            variants=tuple(
                VariantSpec(name=v.name, model=v.model, version=v.version, alias=v.alias, weight=v.weight)
                for v in msg.variants
            ),
            policy=PolicySpec(type=msg.policy.type or "fixed", params=json_format.MessageToDict(msg.policy.params)),
        )


def _str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def check_name(value: str, field_name: str) -> str:
    if not NAME_RE.match(value):
        raise InvalidArgument(
            f"{field_name} '{value}' must be 1-128 characters of letters, digits and . _ : @ -", field=field_name
        )
    return value


def validate(spec: EndpointSpec) -> EndpointSpec:
    """The spec with defaults filled in (names, alias ``production``); InvalidArgument if it is unusable."""
    names.check_name(spec.endpoint, "endpoint")  # the one name rule: it becomes keys, labels, paths
    if not spec.variants:
        raise InvalidArgument("an endpoint needs at least one variant", field="variants")
    variants: list[VariantSpec] = []
    seen: set[str] = set()
    for i, v in enumerate(spec.variants):
        where = f"variants.{i}"
        if not v.model:
            raise InvalidArgument(f"{where}: model is required", field=f"{where}.model")
        if v.version and v.alias:
            raise InvalidArgument(f"{where}: give version or alias, not both", field=f"{where}.alias")
        alias = v.alias if (v.alias or v.version) else DEFAULT_ALIAS
        if not math.isfinite(v.weight) or v.weight < 0:
            raise InvalidArgument(f"{where}: weight must be a finite number >= 0", field=f"{where}.weight")
        name = v.name or (f"{v.model}:{v.version}" if v.version else f"{v.model}@{alias}")
        check_name(name, f"{where}.name")
        if name in seen:
            raise InvalidArgument(f"{where}: duplicate variant name '{name}'", field=f"{where}.name")
        seen.add(name)
        variants.append(replace(v, name=name, alias=alias))
    if sum(v.weight for v in variants) <= 0:
        raise InvalidArgument("at least one variant needs a weight > 0", field="variants")
    return replace(spec, variants=tuple(variants))
