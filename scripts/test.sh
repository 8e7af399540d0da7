#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls `npm test`, which calls this).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== setup: npm ci, release build of the addon, tsc"
bash scripts/setup.sh
echo "== generated files are committed and current"
git diff --exit-code -- native.js native.d.ts || { echo "native.js/native.d.ts drifted from the Rust binding: commit the regenerated files"; exit 1; }
echo "== rust: fmt, clippy, tests"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
echo "== types"
npx tsc --noEmit -p tsconfig.json
npx tsc --noEmit -p tests/types/tsconfig.json
echo "== node tests"
node --test --test-timeout=300000 tests/
