"""The model-artifact policy against real scripted modules: a plain MLP passes; every module that reads or
writes a file, prints, reaches a custom class or would run code at load time is refused, naming the op,
and nothing of it runs (no file appears). Most cases run in this process (``isolate=False``: same checks,
no subprocess per case); the subprocess path has its own cases."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from mlops.errors import InvalidArgument
from mlops.modelguard import ArtifactRefused, ArtifactUnreadable, ModelPolicy
from mlops.modelguard.archive import inspect_archive
from mlops.modelguard.graphs import inspect_module
from mlops.modelguard.ops import PURE_TENSOR_OPS, parse_extra_ops
from mlops.modelguard.policy import worker_env
from mlops.settings import PlatformSettings


class Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Dropout(0.1),
                                       torch.nn.Linear(8, 2), torch.nn.Softmax(dim=1))
        self.norm = torch.nn.LayerNorm(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x))


class ReadsAFile(torch.nn.Module):
    """Returns the bytes of a file in its output (as the issue's module returned a token)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        leaked = torch.from_file(self.path, False, 8, dtype=torch.uint8)
        return x + leaked.float().sum()


class WritesAFile(torch.nn.Module):
    """Maps a file shared and writes chosen bytes into it."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        target = torch.from_file(self.path, True, 8, dtype=torch.uint8)
        target.fill_(65)
        return x + target.float().sum()


class OpsNamespace(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        leaked = torch.ops.aten.from_file("/etc/hostname", False, 8, dtype=torch.uint8)
        return x + leaked.float().sum()


class Saves(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.ops.aten.save(x, "/tmp/modelguard-save-test.pt")
        return x


class OtherMethod(torch.nn.Module):
    """``forward`` is clean; an exported method is not (any method can be called)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @torch.jit.export
    def leak(self, path: str) -> torch.Tensor:
        return torch.from_file(path, False, 8, dtype=torch.uint8)


class HasHostileChild(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.clean = torch.nn.Linear(3, 3)
        self.child = OpsNamespace()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.child(self.clean(x))


class Prints(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print("rows", x.shape)
        return x


class Branches(torch.nn.Module):
    """The op hides in a loop inside a branch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.sum() > 1e9):
            for _ in range(2):
                x = x + torch.from_file("/etc/hostname", False, 1, dtype=torch.uint8).float()
        return x


@torch.jit.script
class Loaded:
    """Its ``__setstate__`` runs inside ``torch.jit.load``: it writes a file before any method is called."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __getstate__(self) -> str:
        return self.path

    def __setstate__(self, path: str) -> None:
        written = torch.from_file(path, True, 4, dtype=torch.uint8)
        written.fill_(66)
        self.path = path


class CarriesSetstate(torch.nn.Module):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.box = Loaded(path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@torch.jit.script
class Scope:
    def __init__(self) -> None:
        self.depth = 0

    def __enter__(self) -> None:
        self.depth += 1

    def __exit__(self, kind: Any, value: Any, trace: Any) -> None:
        self.depth -= 1


class WithBlock(torch.nn.Module):
    """Pure ops only, but ``with`` calls ``__enter__``/``__exit__`` the inliner leaves as calls: only the graph
    walk sees it, so this one is refused by the worker."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with Scope():
            y = x * 2
        return y


def _archive(module: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    return buf.getvalue()


def _hooked() -> torch.jit.ScriptModule:
    module = torch.nn.Linear(3, 2)
    module.register_forward_hook(_print_hook)
    return module


def _print_hook(module: torch.nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> torch.Tensor:
    print("output", output.shape)
    return output


@pytest.fixture(scope="module")
def here() -> ModelPolicy:
    return ModelPolicy(isolate=False)


def _walk_refuses(module: torch.nn.Module) -> ArtifactRefused:
    """The graph walk alone (the static pass would refuse these first, naming the code file instead)."""
    loaded = torch.jit.load(io.BytesIO(_archive(module)))
    with pytest.raises(ArtifactRefused) as caught:
        inspect_module(loaded, PURE_TENSOR_OPS)
    return caught.value


def _refused(policy: ModelPolicy, data: bytes) -> ArtifactRefused:
    with pytest.raises(ArtifactRefused) as caught:
        policy.check(data)
    assert isinstance(caught.value, InvalidArgument)  # 400 / INVALID_ARGUMENT at every adapter
    return caught.value


def test_a_plain_mlp_passes_and_loads(here: ModelPolicy) -> None:
    data = _archive(Mlp().eval())
    here.check(data)
    module = here.load(data)
    assert module(torch.zeros(4, 3)).shape == (4, 2)


def test_the_standard_layers_pass(here: ModelPolicy) -> None:
    nn = torch.nn
    for layer in (nn.Conv1d(2, 2, 3), nn.BatchNorm1d(4), nn.Embedding(10, 4), nn.LSTM(4, 4), nn.GRU(4, 4),
                  nn.MultiheadAttention(4, 2), nn.TransformerEncoderLayer(4, 2, 8), nn.GELU(), nn.LogSoftmax(1)):
        here.check(_archive(layer))


def test_reading_a_file_is_refused_naming_the_op(here: ModelPolicy, tmp_path: Path) -> None:
    secret = tmp_path / "service.token"
    secret.write_text("admin-token-bytes")
    refusal = _refused(here, _archive(ReadsAFile(str(secret))))
    assert "aten::from_file" in refusal.ops and "aten::from_file" in refusal.message


def test_writing_a_file_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    target = tmp_path / "planted"
    data = _archive(WritesAFile(str(target)))
    for policy in (ModelPolicy(isolate=False), ModelPolicy()):  # in this process, and through the worker
        refusal = _refused(policy, data)
        assert "aten::from_file" in refusal.message
    assert not target.exists()


def test_ops_namespace_and_save_are_refused(here: ModelPolicy) -> None:
    assert "aten::from_file" in _refused(here, _archive(OpsNamespace())).ops
    assert "aten::save" in _refused(here, _archive(Saves())).ops


def test_every_method_every_submodule_every_branch_is_walked(here: ModelPolicy) -> None:
    for module in (OtherMethod(), HasHostileChild(), Branches()):
        assert _refused(here, _archive(module)).ops == ["aten::from_file"]
    other = _walk_refuses(OtherMethod())
    assert other.ops == ["aten::from_file"] and "OtherMethod.leak" in other.message
    child = _walk_refuses(HasHostileChild())
    assert child.ops == ["aten::from_file"] and "child:" in child.message and "OpsNamespace.forward" in child.message
    assert _walk_refuses(Branches()).ops == ["aten::from_file"]


def test_print_is_refused_by_default_and_allowed_when_an_operator_adds_it(here: ModelPolicy) -> None:
    data = _archive(Prints())
    refusal = _refused(here, data)
    assert refusal.ops == ["prim::Print"] and "MLOPS_MODEL_OPS_ALLOW" in refusal.message
    ModelPolicy(frozenset({"prim::Print"}), isolate=False).check(data)


def test_a_hook_is_walked(here: ModelPolicy) -> None:
    assert "prim::Print" in _refused(here, _archive(_hooked())).ops
    assert "forward_hook" in _walk_refuses(_hooked()).message


def test_setstate_is_refused_before_anything_loads(tmp_path: Path) -> None:
    planted = tmp_path / "from-setstate"
    data = _archive(CarriesSetstate(str(planted)))
    with pytest.raises(ArtifactRefused) as caught:
        inspect_archive(data, PURE_TENSOR_OPS)  # the static pass alone refuses it
    assert "__setstate__" in caught.value.ops
    for policy in (ModelPolicy(isolate=False), ModelPolicy()):
        with pytest.raises(ArtifactRefused):
            policy.load(data)
    assert not planted.exists()  # torch.jit.load never ran on it


def test_custom_classes_are_refused(here: ModelPolicy) -> None:
    quantized = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(3, 4)),
                                                      {torch.nn.Linear}, dtype=torch.qint8)
    refusal = _refused(here, _archive(quantized))
    assert any("torch.classes" in op for op in refusal.ops)


def test_an_op_hidden_in_the_code_of_a_tampered_archive_is_refused(here: ModelPolicy) -> None:
    """Serialized code edited by hand (line continuations, odd spacing) is read like the compiler reads it."""
    original = _archive(Mlp())
    src, out = zipfile.ZipFile(io.BytesIO(original)), io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            raw = src.read(info)
            if "/code/" in info.filename and info.filename.endswith(".py") and b"class Mlp" in raw:
                raw = raw.replace(b"def forward", b"def __setstate__(self, s: int) -> None:\n"
                                  b"    _x = torch .\\\n  from_file('/tmp/x', True, 1)\n    return None\n  def forward")
            dst.writestr(info, raw)
    refusal = _refused(here, out.getvalue())
    assert {"__setstate__", "aten::from_file"} <= set(refusal.ops)


def test_what_is_not_an_archive_is_refused(here: ModelPolicy) -> None:
    buf = io.BytesIO()
    torch.save(Mlp().state_dict(), buf)  # a pickle zip: no code/
    for data in (b"", b"not a zip", buf.getvalue()):
        with pytest.raises(ArtifactUnreadable):
            here.check(data)


def test_the_worker_refuses_what_only_the_graph_shows() -> None:
    data = _archive(WithBlock())
    inspect_archive(data, PURE_TENSOR_OPS)  # nothing for the static pass to see
    refusal = _refused(ModelPolicy(), data)
    assert refusal.ops == ["prim::Enter", "prim::Exit"] and "WithBlock.forward" in refusal.message


def test_the_worker_inherits_no_token_or_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLOPS_SERVICE_TOKEN", "secret")
    monkeypatch.setenv("MLOPS_HOME", "/somewhere")
    env = worker_env(str(tmp_path))
    assert not [k for k in env if k.startswith("MLOPS_")] and env["HOME"] == str(tmp_path)


def test_a_verdict_is_remembered_by_content() -> None:
    policy = ModelPolicy()
    data = _archive(Mlp())
    policy.check(data)
    policy.isolate, policy.timeout_s = True, 1e-9  # a second subprocess could not finish in time
    policy.check(data)


def test_the_setting_adds_ops_but_never_the_forbidden_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_extra_ops("aten::_print, prim::Print\nmyns::op") == {"aten::_print", "prim::Print", "myns::op"}
    for bad in ("aten::from_file", "prim::PythonOp", "c10d::broadcast", "from_file", "aten::x;rm"):
        with pytest.raises(ValueError):
            parse_extra_ops(bad)
    monkeypatch.setenv("MLOPS_MODEL_OPS_ALLOW", "prim::Print")
    assert "prim::Print" in ModelPolicy.from_settings(PlatformSettings()).allowed


def test_unknown_formats_are_refused(here: ModelPolicy) -> None:
    with pytest.raises(InvalidArgument, match="onnx"):
        here.check_artifact("onnx", b"bytes")
