"""The graph inspection: every op every method of a loaded TorchScript module can run, against the allowlist.

Walked: every method of the module and of every submodule (not only ``forward``: any exported method can
be called), their forward hooks and pre-hooks, each graph copied and inlined (calls to other methods,
functions and class methods become the callee's nodes), with the blocks of ``if`` and loops and any
subgraph attribute. Refused: an op not on the allowlist or never allowed, a call the inliner could not
resolve (``prim::CallFunction``, ``prim::CallMethod`` on anything but a submodule interface), a value of
a custom C++ class type (``torch.classes``), and a ``__setstate__`` on any module or class met.

Only this module imports torch; callers that must not (the registry) run it in a subprocess
(:mod:`mlops.modelguard.worker`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from mlops.modelguard.ops import why_refused
from mlops.modelguard.refusal import ArtifactRefused, Finding


@dataclass(slots=True)
class GraphReport:
    """What was walked: ``Type.method`` names, and every op seen with how often."""

    methods: list[str] = field(default_factory=list)
    ops: dict[str, int] = field(default_factory=dict)


def _modules(module: torch.jit.ScriptModule) -> Iterator[tuple[str, Any]]:
    """``(path, C++ module)`` for the module and every submodule, depth first."""
    stack: list[tuple[str, Any]] = [("", module)]
    while stack:
        path, mod = stack.pop()
        yield path or "<root>", mod._c if hasattr(mod, "_c") else mod
        children = list(mod.named_children())
        stack.extend((f"{path}.{name}" if path else name, child) for name, child in reversed(children))


def _graphs(module: torch.jit.ScriptModule) -> Iterator[tuple[str, torch.Graph]]:
    """Every callable graph: methods and hooks of every module, named ``path:Type.method``."""
    seen: set[tuple[str, str]] = set()
    for path, c in _modules(module):
        type_name = c._type().qualified_name()
        for name in c._method_names():
            if (type_name, name) not in seen:  # modules of one type share their methods
                seen.add((type_name, name))
                yield f"{path}:{type_name}.{name}", c._get_method(name).graph
        for kind, hooks in (("forward_hook", c._get_forward_hooks()), ("forward_pre_hook", c._get_forward_pre_hooks())):
            for hook in hooks:
                yield f"{path}:{type_name}.{kind}:{hook.name}", hook.graph


def _type_names(value: torch.Value) -> str:
    return str(value.type())


class _Walker:
    def __init__(self, allowed: frozenset[str], module_types: set[str]) -> None:
        self.allowed = allowed
        self.module_types = module_types
        self.findings: list[Finding] = []
        self.report = GraphReport()
        self._refused: set[tuple[str, str]] = set()

    def refuse(self, op: str, where: str, why: str) -> None:
        if (op, where) not in self._refused:  # one finding per op and method, however often it appears
            self._refused.add((op, where))
            self.findings.append(Finding(op, where, why))

    def graph(self, where: str, graph: torch.Graph) -> None:
        inlined = graph.copy()
        torch._C._jit_pass_inline(inlined)
        for value in inlined.inputs():
            self._check_type(value, where)
        self._block(where, inlined.block())

    def _block(self, where: str, block: torch.Block) -> None:
        for node in block.nodes():
            self._node(where, node)
            for inner in node.blocks():
                self._block(where, inner)
            for attr in node.attributeNames():
                if node.kindOf(attr) == "g":  # prim::fork and friends keep their body as a subgraph
                    self.graph(f"{where} ({node.kind()} body)", node.g(attr))

    def _node(self, where: str, node: torch.Node) -> None:
        op = node.kind()
        self.report.ops[op] = self.report.ops.get(op, 0) + 1
        for value in node.outputs():
            self._check_type(value, where)
        if op == "prim::CallMethod":
            if not self._submodule_call(node):
                self.refuse(f"{op}[{node.s('name')}]", where, "a call the inspector cannot follow; never allowed")
        else:
            why = why_refused(op, self.allowed)
            if why is not None:
                self.refuse(op, where, why)

    def _submodule_call(self, node: torch.Node) -> bool:
        """A method call through a module interface (``self.encoder.forward`` where ``encoder`` is typed by an
        interface): its target is one of the submodules, whose methods are all walked."""
        target = node.inputsAt(0).node()
        return target.kind() == "prim::GetAttr" and _qualified(target.inputsAt(0).type()) in self.module_types

    def _check_type(self, value: torch.Value, where: str) -> None:
        text = _type_names(value)
        if "torch.classes." in text:
            self.refuse(text, where, "a custom C++ class")
        t = value.type()
        if isinstance(t, torch.ClassType) and "__setstate__" in t.method_names():
            self.refuse(f"{t.qualified_name()}.__setstate__", where, "runs while the archive is loaded")


def _qualified(t: Any) -> str:
    try:
        return t.qualified_name()
    except Exception:
        return str(t)


def inspect_module(module: torch.jit.ScriptModule, allowed: frozenset[str]) -> GraphReport:
    """Walk every graph of ``module``; raises :class:`ArtifactRefused` naming each op outside ``allowed``."""
    modules = list(_modules(module))
    walker = _Walker(allowed, {c._type().qualified_name() for _, c in modules})
    for path, c in modules:
        if "__setstate__" in c._method_names():
            walker.refuse("__setstate__", f"{path}:{c._type().qualified_name()}", "runs while the archive is loaded")
    for where, graph in _graphs(module):
        walker.report.methods.append(where)
        walker.graph(where, graph)
    if walker.findings:
        raise ArtifactRefused(walker.findings)
    return walker.report
