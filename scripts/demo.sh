#!/usr/bin/env bash
# The main job on the embedded store: builds everything, then runs examples/basic.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
node examples/basic/index.js
