#!/usr/bin/env bash
# Installs the JS tooling (if needed) and builds the addon (release) and the TS surface.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d node_modules/@napi-rs/cli ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run --silent build
