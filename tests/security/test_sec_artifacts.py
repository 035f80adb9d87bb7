"""A model artifact is code: a scientist registers TorchScript modules that read or write files, save
tensors, print, or reach into storage, at ``candidate`` (which inference loads and warms up). Each is
refused at registration (INVALID_ARGUMENT naming the op), audited as ``artifact.refused`` with the
scientist's token id, leaves no version and no file behind, and never reaches inference; a clean module
is accepted."""

from __future__ import annotations

import io
from collections.abc import Callable

import grpc
import httpx
import pytest
import torch

from tests.integration import toy_model
from tests.security import support
from tests.security.conftest import SecureStack


class ReadsTheAdminToken(torch.nn.Module):
    """Adds the bytes of a file to its output (the issue's module returned the service token this way)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.from_file(self.path, False, 16, dtype=torch.uint8).float().sum()


class WritesAFile(torch.nn.Module):
    """Maps a file shared and fills it with chosen bytes."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        planted = torch.from_file(self.path, True, 16, dtype=torch.uint8)
        planted.fill_(65)
        return x + planted.float().sum()


class ReadsThroughOpsNamespace(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.ops.aten.from_file("/etc/hostname", False, 4, dtype=torch.uint8).float().sum()


class SavesTensors(torch.nn.Module):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.ops.aten.save(x, self.path)
        return x


class Prints(torch.nn.Module):
    """Writes what it sees (the features of every request) to the serving process's output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print("features", x)
        return x


class SetsStorage(torch.nn.Module):
    """Points a tensor at another's storage (``set_``): a way to read memory the model does not own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.empty(0)
        y.set_(x)
        return y


class StridesOutOfBounds(torch.nn.Module):
    """A view far past the end of its storage: reads the serving process's memory."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.as_strided(x, [1 << 20], [1])[-2:].reshape(1, 2)


class CleanForwardLeakyMethod(torch.nn.Module):
    """``forward`` is clean; an exported method reads a file (any method of a loaded module can be called)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=1)

    @torch.jit.export
    def leak(self, path: str) -> torch.Tensor:
        return torch.from_file(path, False, 16, dtype=torch.uint8)


def _archive(module: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    return buf.getvalue()


#: (case, the module given the stack's home, the op the refusal must name, a file that must never appear)
CASES: list[tuple[str, Callable[[str], torch.nn.Module], str, str | None]] = [
    ("read-file", lambda home: ReadsTheAdminToken(f"{home}/auth/admin.token"), "aten::from_file", None),
    ("write-file", lambda home: WritesAFile(f"{home}/planted-by-model"), "aten::from_file", "planted-by-model"),
    ("ops-namespace", lambda home: ReadsThroughOpsNamespace(), "aten::from_file", None),
    ("save", lambda home: SavesTensors(f"{home}/saved-by-model"), "aten::save", "saved-by-model"),
    ("print", lambda home: Prints(), "prim::Print", None),
    ("storage", lambda home: SetsStorage(), "aten::set_", None),
    ("strided", lambda home: StridesOutOfBounds(), "aten::as_strided", None),
    ("exported-method", lambda home: CleanForwardLeakyMethod(), "aten::from_file", None),
]


@pytest.mark.parametrize(("case", "build", "op", "planted"), CASES, ids=[c[0] for c in CASES])
def test_a_hostile_artifact_is_refused_naming_the_op_and_audited(
    secure: SecureStack, case: str, build: Callable[[str], torch.nn.Module], op: str, planted: str | None
) -> None:
    model = support.new_model(f"hostile-{case}")
    artifact = _archive(build(str(secure.home)))
    code, details = support.refused_code(lambda: support.register(secure, "scientist", model, artifact))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert op in details, details
    assert planted is None or not (secure.home / planted).exists(), "the model ran at registration"
    with secure.http("scientist") as http:
        assert http.get(secure.url("registry", f"/v1/models/{model}")).status_code == 404
    with secure.http("predictor") as http:
        ready = http.get(secure.url("inference", f"/v2/models/{model}/ready"))
        assert ready.status_code != 200, "inference knows a model whose artifact was refused"
    entries = support.audit_entries(secure, lambda e: bool(e), action="artifact.refused", target=model)
    assert entries[0]["actor_id"] == secure.token_id("scientist"), entries[0]
    assert op in entries[0]["reason"], entries[0]


def test_a_pickle_is_not_an_artifact(secure: SecureStack) -> None:
    buf = io.BytesIO()
    torch.save(torch.nn.Linear(2, 2).state_dict(), buf)  # a pickle zip: unpickling runs code
    model = support.new_model("hostile-pickle")
    code, details = support.refused_code(lambda: support.register(secure, "scientist", model, buf.getvalue()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)


def test_a_clean_module_is_accepted_at_candidate(secure: SecureStack) -> None:
    model = support.new_model("clean")
    version = support.register(secure, "scientist", model, toy_model.torchscript_bytes(2))
    assert version.stage == "candidate"
    assert support.version_stage(secure, model, version.version) == "candidate"
    with httpx.Client(timeout=30, headers=secure.headers("viewer")) as http:
        assert http.get(secure.url("registry", f"/v1/models/{model}")).status_code == 200
