#!/usr/bin/env bash
# Builds .venv-flower: Flower (`flwr==1.41.0`) in a virtual environment of its own, for the
# side-by-side federated-learning benchmark (`python -m bench.federated_learning`). Flower needs
# protobuf < 7, which conflicts with Sedna's protobuf 7, and pulls ~50 distributions (FastAPI,
# SQLAlchemy, uv...), so it is not part of `make install` nor of .venv. 1.41.0 is pinned because
# 1.42.0 is not installable from every index (it needs certifi>=2026.10.19).
#
# Idempotent: does nothing when the venv already holds the pinned versions. Override the
# interpreter with PYTHON=..., the location with FLOWER_VENV=....
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${FLOWER_VENV:-.venv-flower}
PINS=("flwr==1.41.0" "numpy>=1.26")
STAMP="$VENV/.installed"
wanted="${PINS[*]}"

if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$wanted" ]; then
  exit 0
fi
rm -f "$STAMP"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}"
# Fail here, not in the benchmark: the deployment engine's entry points must be there.
"$VENV/bin/python" -c 'import numpy, flwr; assert flwr.__version__ == "1.41.0", flwr.__version__'
for tool in flower-superlink flower-supernode; do
  [ -x "$VENV/bin/$tool" ] || { echo "$VENV/bin/$tool missing" >&2; exit 1; }
done
printf '%s' "$wanted" >"$STAMP"
echo "built $VENV (${PINS[*]})"
