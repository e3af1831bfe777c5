#!/usr/bin/env bash
# Builds {{name}}.wasm with componentize-py (PyPI), pinned to the version phiwatch tests with.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/componentize-py ] || { python3 -m venv .venv && .venv/bin/pip install -q componentize-py=={{componentize_py}}; }
rm -rf .bindings && .venv/bin/componentize-py -d wit/detector.wit -w detector bindings .bindings
.venv/bin/componentize-py -d wit/detector.wit -w detector componentize -p . -p .bindings app -o {{name}}.wasm
echo "{{name}}.wasm"
