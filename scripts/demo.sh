#!/usr/bin/env bash
# The main job: builds durably, installs and builds the Next.js example (examples/nextjs)
# and serves it with `next start` on http://127.0.0.1:3000 (PORT overrides). Ctrl-C stops
# it; runs left asleep or waiting resume at the next start. Its store is
# examples/nextjs/.durably. The plain-script demo is `npm run demo:basic`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

cd examples/nextjs
export NEXT_TELEMETRY_DISABLED=1
# node_modules/durably is a copy (.npmrc: install-links=true) that goes stale when the
# package is rebuilt: drop it and install from the lockfile.
rm -rf node_modules/durably
if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  npm install --no-audit --no-fund
fi
node_modules/.bin/next build

port="${PORT:-3000}"
# `next start` runs in production mode, where the JSON API needs a bearer token.
if [ -z "${DURABLY_DASHBOARD_TOKEN:-}" ]; then
  DURABLY_DASHBOARD_TOKEN="$(node -e "process.stdout.write(require('node:crypto').randomBytes(12).toString('hex'))")"
fi
export DURABLY_DASHBOARD_TOKEN
cat <<MSG

  durably × Next.js — open http://127.0.0.1:${port}/?token=${DURABLY_DASHBOARD_TOKEN}
    /          sign up (a server action: onboarding-email task + user/signed-up event)
    /runs      recent runs, refreshing every 2 s (with ?token=: it shows payloads)
    JSON API:  curl -H 'authorization: Bearer ${DURABLY_DASHBOARD_TOKEN}' http://127.0.0.1:${port}/durably/runs
    Ctrl-C stops the server; start it again and unfinished runs carry on.

MSG
exec node_modules/.bin/next start -H 127.0.0.1 -p "$port"
