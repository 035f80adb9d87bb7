"""Generates Python code from ``proto/mlops/v1/*.proto`` into ``libs/mlops/v1`` (gitignored).

Run by ``scripts/bootstrap``; it regenerates only when a .proto changed since the last run.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from grpc_tools import protoc


def _digest(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def generate(root: Path) -> bool:
    """Compile the protos under ``root/proto``; returns True when code was (re)generated."""
    proto_dir = root / "proto"
    out_dir = root / "libs"
    gen_dir = out_dir / "mlops" / "v1"
    files = sorted((proto_dir / "mlops" / "v1").glob("*.proto"))
    stamp = gen_dir / ".stamp"
    digest = _digest(files)
    if stamp.exists() and stamp.read_text() == digest:
        return False
    gen_dir.mkdir(parents=True, exist_ok=True)
    for old in gen_dir.glob("*_pb2*.py*"):
        old.unlink()
    well_known = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(f.relative_to(proto_dir)) for f in files],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (gen_dir / "__init__.py").write_text('"""Generated from proto/mlops/v1 by scripts/bootstrap. Do not edit."""\n')
    stamp.write_text(digest)
    return True


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    changed = generate(root)
    print(f"[bootstrap] protobuf code {'generated' if changed else 'up to date'}")


if __name__ == "__main__":
    main()
