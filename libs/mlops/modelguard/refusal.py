"""The one error a refused artifact raises: 400 / INVALID_ARGUMENT, naming what was found and where."""

from __future__ import annotations

from dataclasses import dataclass

from mlops.errors import InvalidArgument

#: Most findings named in one message; the rest are counted.
MAX_NAMED = 8


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the inspector refuses: an op (``aten::from_file``) or a construct (``__setstate__``), and where."""

    op: str
    where: str
    why: str

    def describe(self) -> str:
        return f"{self.op} in {self.where} ({self.why})"


class ArtifactRefused(InvalidArgument):
    """A model artifact that would run something outside the allowlist; nothing of it has run."""

    def __init__(self, findings: list[Finding], field: str = "artifact") -> None:
        self.findings = findings
        self.ops = sorted({f.op for f in findings})
        named = "; ".join(f.describe() for f in findings[:MAX_NAMED])
        more = f"; and {len(findings) - MAX_NAMED} more" if len(findings) > MAX_NAMED else ""
        super().__init__(f"model artifact refused: {named}{more}", field=field)


class ArtifactUnreadable(InvalidArgument):
    """Bytes that are not a TorchScript archive the inspector can read (or that it could not finish inspecting)."""

    def __init__(self, detail: str, field: str = "artifact") -> None:
        self.detail = detail
        super().__init__(f"model artifact refused: {detail}", field=field)
