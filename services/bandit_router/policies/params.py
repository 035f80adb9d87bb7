"""Typed reading of a policy's ``params`` (a JSON object): each getter checks one value and names it in
the error (``policy.params.<name>``); :meth:`ParamReader.finish` rejects names nobody asked for, so a typo
in a parameter fails the PUT instead of being silently ignored."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mlops.errors import InvalidArgument

_UNSET: Any = object()


class ParamReader:
    """Reads params once each; ``finish()`` raises for the ones left over."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        for key in params:
            if not isinstance(key, str) or not key:
                raise InvalidArgument(f"policy parameter names must be strings, got {key!r}", field="policy.params")
        self._params = dict(params)
        self._used: set[str] = set()

    @staticmethod
    def field(name: str) -> str:
        return f"policy.params.{name}"

    def has(self, name: str) -> bool:
        return self._params.get(name) is not None

    def raw(self, name: str, default: Any = None) -> Any:
        self._used.add(name)
        value = self._params.get(name)
        return default if value is None else value

    def number(
        self,
        name: str,
        default: float | None,
        *,
        low: float | None = None,
        high: float | None = None,
        low_open: bool = False,
    ) -> float | None:
        value = self.raw(name, _UNSET)
        if value is _UNSET:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidArgument(f"{name} must be a finite number, got {value!r}", field=self.field(name))
        value = float(value)
        if low is not None and (value < low or (low_open and value == low)):
            raise InvalidArgument(f"{name} must be {'>' if low_open else '>='} {low:g}", field=self.field(name))
        if high is not None and value > high:
            raise InvalidArgument(f"{name} must be <= {high:g}", field=self.field(name))
        return value

    def required_number(self, name: str, default: float, **limits: Any) -> float:
        value = self.number(name, default, **limits)
        assert value is not None
        return value

    def integer(self, name: str, default: int, *, low: int = 0) -> int:
        value = self.number(name, float(default), low=float(low))
        assert value is not None
        if not float(value).is_integer():
            raise InvalidArgument(f"{name} must be a whole number", field=self.field(name))
        return int(value)

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name, _UNSET)
        if value is _UNSET:
            return default
        if not isinstance(value, bool):
            raise InvalidArgument(f"{name} must be true or false, got {value!r}", field=self.field(name))
        return value

    def string(self, name: str, default: str | None) -> str | None:
        value = self.raw(name, _UNSET)
        if value is _UNSET:
            return default
        if not isinstance(value, str) or not value:
            raise InvalidArgument(f"{name} must be a non-empty string", field=self.field(name))
        return value

    def choice(self, name: str, default: str, options: tuple[str, ...]) -> str:
        value = self.string(name, default)
        if value not in options:
            raise InvalidArgument(f"{name} must be one of {', '.join(options)}, got {value!r}", field=self.field(name))
        return value

    def names(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.raw(name, _UNSET)
        if value is _UNSET:
            return default
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
            raise InvalidArgument(f"{name} must be a list of names", field=self.field(name))
        if len(set(value)) != len(value):
            raise InvalidArgument(f"{name} lists a name twice", field=self.field(name))
        return tuple(value)

    def mapping(self, name: str) -> dict[str, Any] | None:
        value = self.raw(name, _UNSET)
        if value is _UNSET:
            return None
        if not isinstance(value, dict):
            raise InvalidArgument(f"{name} must be an object", field=self.field(name))
        return dict(value)

    def finish(self, policy_type: str) -> None:
        unknown = sorted(set(self._params) - self._used)
        if unknown:
            raise InvalidArgument(
                f"unknown parameter '{unknown[0]}' for policy '{policy_type}'", field=self.field(unknown[0])
            )
