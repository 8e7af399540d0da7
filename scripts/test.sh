#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls `npm test`, which calls this).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== services (not needed by these tests; the peer benchmarks and the Postgres store will use them)"
svc() { # name host port how-to-start
  if (exec 3<>"/dev/tcp/$2/$3") 2>/dev/null; then echo "   $1 on $2:$3: up"; else echo "   $1 on $2:$3: DOWN — start it with: $4"; fi
}
svc Postgres 127.0.0.1 5432 "pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start"
svc Redis 127.0.0.1 6379 "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no"
echo "== setup: npm ci, release build of the addon, tsc"
bash scripts/setup.sh
echo "== generated files are committed and current"
git diff --exit-code -- native.js native.d.ts || { echo "native.js/native.d.ts drifted from the Rust binding: commit the regenerated files"; exit 1; }
echo "== rust: fmt, clippy, tests (incl. the deterministic simulation: 30 seeds)"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
echo "== fuzzing: a short run of every target (scripts/fuzz.sh; FUZZ_SECONDS to lengthen)"
FUZZ_SECONDS="${FUZZ_SECONDS:-12}" bash scripts/fuzz.sh
echo "== types"
npx tsc --noEmit -p tsconfig.json
npx tsc --noEmit -p tests/types/tsconfig.json
echo "== node tests (power cuts and the full-disk test need gcc and root; they say so when skipped)"
node --test --test-timeout=300000 tests/
