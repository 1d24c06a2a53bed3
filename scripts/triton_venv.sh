#!/usr/bin/env bash
# Builds .venv-triton: NVIDIA's standard OIP client, `tritonclient[grpc]`, in a virtual
# environment of its own. It needs protobuf < 7, which conflicts with Sedna's protobuf 7, so
# it cannot live in .venv; tests/e2e/test_tritonclient.py runs a client script under it
# against a real `sedna-inference`.
#
# Idempotent: does nothing when the venv already holds the pinned version. Override the
# interpreter with PYTHON=..., the location with TRITON_VENV=....
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${TRITON_VENV:-.venv-triton}
PINS=("tritonclient[grpc]==2.73.0" "numpy>=1.26")
STAMP="$VENV/.installed"
wanted="${PINS[*]}"

if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$wanted" ]; then
  exit 0
fi
rm -f "$STAMP"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}"
"$VENV/bin/python" -c 'import numpy, tritonclient.grpc'  # fail here, not in the test
printf '%s' "$wanted" >"$STAMP"
echo "built $VENV (${PINS[*]})"
