"""Generates the Python stubs and their mypy stubs from proto/ into libs/contracts (make proto)."""

from __future__ import annotations

import shutil
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc


def generate(root: Path) -> None:
    proto_dir = root / "proto"
    out = root / "libs" / "contracts"
    shutil.rmtree(out / "dmp", ignore_errors=True)
    files = sorted(str(p.relative_to(proto_dir)) for p in proto_dir.rglob("*.proto"))
    well_known = str(resources.files("grpc_tools") / "_proto")
    venv_bin = Path(sys.executable).parent
    args = [
        "protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={venv_bin / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={venv_bin / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for pkg in {(out / f).parent for f in files} | {out / "dmp"}:
        d = pkg
        while d != out:
            (d / "__init__.py").touch()
            (d / "py.typed").touch()
            d = d.parent


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd())
