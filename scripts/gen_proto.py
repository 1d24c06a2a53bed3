"""Regenerate the Python gRPC code under ``sdk/sedna/api`` from ``proto/``.

Run through ``make proto``. The output (``*_pb2.py``, ``*_pb2_grpc.py`` and ``.pyi`` stubs from
mypy-protobuf) is committed; CI regenerates it and fails when the result differs. ``--out DIR``
writes the tree somewhere else instead (the drift test compares such a copy with the committed
one).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
DEFAULT_OUT_ROOT = ROOT / "sdk"
# The proto packages all live under sedna/api, so that is the generated subpackage.
GENERATED_SUBDIR = Path("sedna") / "api"
# mypy-protobuf's plugins are installed beside the interpreter that runs this script.
BIN_DIR = Path(sys.executable).parent
MARKER = '"""Generated from proto/ by `make proto`. Do not edit."""\n'


def generate(out_root: Path) -> list[str]:
    """Generate the code for every ``.proto`` under ``proto/`` into ``out_root/sedna/api``.

    Parameters
    ----------
    out_root
        Folder that receives the ``sedna/api`` tree; anything already there is replaced.

    Returns
    -------
    list of str
        The proto files, relative to ``proto/``.
    """
    protos = sorted(p.relative_to(PROTO_ROOT).as_posix() for p in PROTO_ROOT.rglob("*.proto"))
    package_dir = out_root / GENERATED_SUBDIR
    if package_dir.exists():
        shutil.rmtree(package_dir)
    package_dir.mkdir(parents=True)
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--plugin=protoc-gen-mypy={BIN_DIR / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={BIN_DIR / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    # mypy-protobuf announces every file it writes on stderr; only failures matter here.
    result = subprocess.run(command, cwd=PROTO_ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"protoc failed:\n{result.stderr}")
    # protoc writes modules, not packages: every folder under sedna/api becomes a package.
    folders = [package_dir, *sorted(p for p in package_dir.rglob("*") if p.is_dir())]
    for folder in folders:
        (folder / "__init__.py").write_text(MARKER)
    (package_dir / "py.typed").write_text("")
    return protos


def main() -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_ROOT, help="output root folder")
    args = parser.parse_args()
    try:
        protos = generate(args.out)
    except RuntimeError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"generated {len(protos)} proto files into {args.out / GENERATED_SUBDIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
