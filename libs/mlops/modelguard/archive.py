"""Static checks of a TorchScript archive's bytes, before any deserializer sees them (no torch import).

``torch.jit.load`` is not inert: while it unpickles a module it calls the ``__setstate__`` of every
scripted class (and module) that defines one, so a class whose ``__setstate__`` calls
``torch.from_file(path, shared=True)`` writes a file the moment it is loaded. This module reads the
zip as data and refuses, before anything loads it:

- anything but one zip archive with ``data.pkl`` and ``code/`` under one top directory (pickles, tar
  files, encrypted or absurdly large entries);
- a ``__setstate__`` anywhere in the serialized code (it would run at load time);
- any reference to a custom C++ class (``torch.classes``): their ``__setstate__`` is native code;
- any op the serialized code names (``torch.X(...)``, ``ops.ns.X(...)``, ``print(...)``) that is not on
  the allowlist;
- pickle globals outside the few TorchScript's own unpickler uses (tensor rebuilding, storages,
  ``OrderedDict``, the ``__torch__`` types of the archive itself).

The graph inspection (:mod:`mlops.modelguard.graphs`) is the authoritative check of what runs; this one
decides whether loading the archive to inspect its graphs is safe at all.
"""

from __future__ import annotations

import io
import pickletools
import re
import zipfile
from dataclasses import dataclass, field

from mlops.modelguard.ops import why_refused
from mlops.modelguard.refusal import ArtifactRefused, ArtifactUnreadable, Finding

#: Bounds on what is read of an archive's code and pickles (real models: kilobytes to a few MB of code).
MAX_ENTRIES = 100_000
MAX_TEXT_BYTES = 64 * 1024 * 1024

_STRING = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'')
#: Between tokens the TorchScript lexer skips spaces, newlines and line continuations.
_GAP = r"[ \t\r\n\\]*"
#: The name anywhere in code, not only after ``def``: nothing else may spell it.
_SETSTATE = re.compile(r"\b__setstate__\b")
_CUSTOM_CLASS = re.compile(rf"\btorch{_GAP}\.{_GAP}classes\b[\w. \t\\]*")
_TORCH_CALL = re.compile(rf"(?<![\w.])torch{_GAP}\.{_GAP}([A-Za-z_]\w*){_GAP}\(")
_OPS_CALL = re.compile(rf"(?<![\w.])(?:torch{_GAP}\.{_GAP})?ops{_GAP}\.{_GAP}([A-Za-z_]\w*){_GAP}\.{_GAP}"
                       r"([A-Za-z_]\w*)")
_BARE_CALL = {"print": "prim::Print", "fork": "prim::fork", "wait": "aten::wait",
              "rpc_async": "prim::rpc_async", "rpc_sync": "prim::rpc_sync", "rpc_remote": "prim::rpc_remote"}
_BARE = re.compile(r"(?<![\w.])(" + "|".join(_BARE_CALL) + r")" + _GAP + r"\(")
#: Pickle opcodes that name a class or build one from names the opcode list does not show.
_OPAQUE_OPCODES = frozenset({"STACK_GLOBAL", "INST", "OBJ", "EXT1", "EXT2", "EXT4"})


@dataclass(slots=True)
class ArchiveReport:
    """What the static pass saw: the archive's top directory, code files and the ops the code names."""

    root: str
    code_files: list[str] = field(default_factory=list)
    named_ops: set[str] = field(default_factory=set)


def _allowed_global(module: str, name: str) -> bool:
    if module == "__torch__" or module.startswith("__torch__."):
        return not module.startswith("__torch__.torch.classes")
    return ((module == "torch" and name.endswith("Storage"))
            or (module == "torch._utils" and name.startswith("_rebuild_"))
            or module == "torch.jit._pickle"
            or (module == "collections" and name == "OrderedDict"))


def _check_pickle(name: str, data: bytes, findings: list[Finding]) -> None:
    try:
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name in _OPAQUE_OPCODES:
                findings.append(Finding(f"pickle {opcode.name}", name, "an opcode TorchScript archives never use"))
            elif opcode.name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
                if not _allowed_global(module, attr):
                    findings.append(Finding(f"{module}.{attr}", name, "a pickle global outside TorchScript's own"))
    except Exception as exc:  # truncated or not a pickle
        raise ArtifactUnreadable(f"{name} is not a readable pickle: {exc}") from None


def _check_code(name: str, text: str, allowed: frozenset[str], report: ArchiveReport,
                findings: list[Finding]) -> None:
    code = _STRING.sub('""', text)  # an op named inside a string literal is not a call
    if _SETSTATE.search(code):
        findings.append(Finding("__setstate__", name, "runs while the archive is loaded"))
    for match in _CUSTOM_CLASS.finditer(code):
        findings.append(Finding(re.sub(r"[\s\\]", "", match.group(0)), name, "a custom C++ class"))
    named = {f"aten::{m.group(1)}" for m in _TORCH_CALL.finditer(code)}
    named |= {f"{m.group(1)}::{m.group(2)}" for m in _OPS_CALL.finditer(code)}
    named |= {_BARE_CALL[m.group(1)] for m in _BARE.finditer(code)}
    report.named_ops |= named
    for op in sorted(named):
        why = why_refused(op, allowed)
        if why is not None:
            findings.append(Finding(op, name, why))


def inspect_archive(data: bytes, allowed: frozenset[str]) -> ArchiveReport:
    """Check ``data`` without loading it; raises :class:`ArtifactRefused` (naming what was found) or
    :class:`ArtifactUnreadable`."""
    if not data:
        raise ArtifactUnreadable("the artifact is empty")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ArtifactUnreadable(f"not a TorchScript archive (torch.jit.save's zip format): {exc}") from None
    if not infos or len(infos) > MAX_ENTRIES:
        raise ArtifactUnreadable(f"a TorchScript archive has 1 to {MAX_ENTRIES} entries, this one {len(infos)}")
    roots = {info.filename.split("/", 1)[0] for info in infos}
    if len(roots) != 1:
        raise ArtifactUnreadable(f"a TorchScript archive has one top directory, this one {len(roots)}")
    root = roots.pop()
    names = {info.filename for info in infos}
    if len(names) != len(infos):
        # Two entries of one name: which one a reader takes is up to the reader (torch's is not this one).
        raise ArtifactUnreadable("a TorchScript archive names each entry once; this one repeats a name")
    if f"{root}/data.pkl" not in names or not any(n.startswith(f"{root}/code/") for n in names):
        raise ArtifactUnreadable("not a TorchScript archive: no data.pkl and code/ (was it saved with "
                                 "torch.save instead of torch.jit.save?)")
    report = ArchiveReport(root=root)
    findings: list[Finding] = []
    budget = MAX_TEXT_BYTES
    for info in infos:
        if info.flag_bits & 0x1:
            raise ArtifactUnreadable(f"{info.filename} is encrypted")
        name = info.filename
        is_pickle = name.endswith((".pkl", ".debug_pkl"))
        is_code = name.startswith(f"{root}/code/") and not is_pickle
        if not (is_code or is_pickle) or name.endswith("/"):
            continue  # tensor data, version, byteorder, extra files: bytes nothing executes
        budget -= info.file_size
        if budget < 0:
            raise ArtifactUnreadable(f"more than {MAX_TEXT_BYTES} bytes of code and pickles")
        try:
            raw = archive.read(info)
        except Exception as exc:
            raise ArtifactUnreadable(f"{name} cannot be read: {exc}") from None
        inner = name[len(root) + 1:]
        if is_code:
            report.code_files.append(inner)
            _check_code(inner, raw.decode("utf-8", errors="replace"), allowed, report, findings)
        else:
            _check_pickle(inner, raw, findings)
    if findings:
        raise ArtifactRefused(findings)
    return report
