"""Score the federated job's global models on the held-out test set.

Usage, after the job finished (``--out`` as given to ``prepare.py``)::

    .venv/bin/python examples/federated_learning/evaluate.py --out /tmp/sedna-federated-learning

reads the per-round global weights the trainers kept (``output/<worker>/round-<r>.npz``) and
prints, as JSON on the last line: ``rounds`` (round -> test accuracy), ``final_round``,
``final_accuracy``, ``workers`` (which trainers' snapshots were found) and ``consistent``
(whether every trainer holds the same final global model, as FedAvg promises).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from digits_fl import accuracy, build_model, load_weights, read_csv

__all__ = ["evaluate", "main"]

ROUND_FILE = re.compile(r"^round-(\d+)\.npz$")


def _snapshots(folder: Path) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for path in folder.iterdir():
        match = ROUND_FILE.match(path.name)
        if match:
            found[int(match.group(1))] = path
    return found


def evaluate(out: Path) -> dict[str, Any]:
    """The test accuracy of every round's global model (see the module docstring).

    Raises
    ------
    FileNotFoundError
        No trainer kept a snapshot.
    """
    test_x, test_y = read_csv(out / "data" / "test.csv")
    output = out / "output"
    per_worker = (
        {d.name: _snapshots(d) for d in sorted(output.iterdir()) if d.is_dir()}
        if output.is_dir()
        else {}
    )
    per_worker = {k: v for k, v in per_worker.items() if v}
    if not per_worker:
        raise FileNotFoundError(f"no round-<r>.npz snapshot under {output}")
    rounds: dict[int, Path] = {}
    for snaps in per_worker.values():
        for number, path in snaps.items():
            rounds.setdefault(number, path)
    model = build_model(0)
    keys = list(model.state_dict())
    scores: dict[int, float] = {}
    for number in sorted(rounds):
        weights = load_weights(rounds[number])
        model.load_state_dict({k: torch.as_tensor(w) for k, w in zip(keys, weights, strict=True)})
        scores[number] = accuracy(model, test_x, test_y)
    final = max(scores)
    finals = [load_weights(s[final]) for s in per_worker.values() if final in s]
    consistent = all(
        all(np.allclose(a, b) for a, b in zip(finals[0], other, strict=True))
        for other in finals[1:]
    )
    return {
        "rounds": {str(k): v for k, v in scores.items()},
        "final_round": final,
        "final_accuracy": scores[final],
        "workers": sorted(per_worker),
        "consistent": consistent,
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints the result as JSON on the last line."""
    parser = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="prepare.py's --out")
    args = parser.parse_args(argv)
    try:
        result = evaluate(args.out.resolve())
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
