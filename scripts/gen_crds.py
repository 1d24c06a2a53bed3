"""Write the Sedna CustomResourceDefinitions generated from ``sdk/sedna/resources``.

Usage: ``python scripts/gen_crds.py [--out DIR] [--check]`` (``make crds`` runs it with no
arguments, writing ``crds/``). ``--check`` writes nothing and exits 1 when the files on disk
differ from what the models give, listing the files at fault.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sedna.resources.schema import render_crds

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "crds"
# Only files this script owns are compared or deleted; anything else in the folder stays.
PATTERN = "sedna.io_*.yaml"


def stale_files(out: Path, rendered: dict[str, str]) -> list[str]:
    """Return the CRD files under ``out`` that differ from ``rendered``, are missing or extra.

    Parameters
    ----------
    out
        Folder holding the CRD files.
    rendered
        The expected files: name to YAML text.

    Returns
    -------
    list of str
        File names, sorted.
    """
    names = {path.name for path in out.glob(PATTERN)} | set(rendered)
    stale = []
    for name in sorted(names):
        path = out / name
        expected = rendered.get(name)
        actual = path.read_text(encoding="utf-8") if path.exists() else None
        if actual != expected:
            stale.append(name)
    return stale


def write(out: Path, rendered: dict[str, str]) -> list[str]:
    """Write ``rendered`` into ``out`` and delete CRD files no kind produces any more.

    Parameters
    ----------
    out
        Folder to write into (created if needed).
    rendered
        File name to YAML text.

    Returns
    -------
    list of str
        Names of the files that changed.
    """
    out.mkdir(parents=True, exist_ok=True)
    changed = stale_files(out, rendered)
    for name in changed:
        path = out / name
        if name in rendered:
            path.write_text(rendered[name], encoding="utf-8")
        else:
            path.unlink()
    return changed


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (crds/)")
    parser.add_argument(
        "--check", action="store_true", help="compare with the files on disk, write nothing"
    )
    args = parser.parse_args(argv)
    rendered = render_crds()
    if args.check:
        stale = stale_files(args.out, rendered)
        for name in stale:
            print(f"{args.out / name} is out of date: run 'make crds'", file=sys.stderr)
        return 1 if stale else 0
    changed = write(args.out, rendered)
    print(f"{len(rendered)} CRDs in {args.out} ({len(changed)} changed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
