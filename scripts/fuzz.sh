#!/usr/bin/env bash
# A short fuzzing run of the core's parsers and record decoders (fuzz/, cargo fuzz):
# every target runs for FUZZ_SECONDS (default 12) from its committed seeds (fuzz/seeds/)
# plus whatever fuzz/corpus/ holds; a panic, a failed check, a stack overflow or an input
# taking over 30 s (wall clock, generous for shared machines) fails the script.
#
#   scripts/fuzz.sh                          # every target, 12 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh expr    # one target, 10 minutes
#
# cargo fuzz needs nightly-only rustc flags (-Zsanitizer, coverage options): on the stable
# toolchain RUSTC_BOOTSTRAP=1 lets them through. One fuzzer at a time (one job).
# The build is unoptimized and without AddressSanitizer, the quickest to build (about a
# minute on 2 cores, against 1.5 min optimized with 16 codegen units and 3 min for cargo
# fuzz's default optimized single-unit build with ASan); it runs ~10x fewer inputs a
# second, which a short run can spare. Debug assertions and overflow checks are on. The
# core forbids unsafe code. The long runs (fuzz/README.md) used cargo fuzz's default
# build, ASan included: `FUZZ_BUILD=--sanitizer=address scripts/fuzz.sh`.
# A finding is saved in fuzz/artifacts/<target>/; reproduce it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --dev --sanitizer none <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")/.."

export RUSTC_BOOTSTRAP=1
seconds=${FUZZ_SECONDS:-12}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(duration cron expr records kv)
# shellcheck disable=SC2206 # FUZZ_BUILD is a list of cargo fuzz flags
build=(${FUZZ_BUILD:---dev --sanitizer none})

if ! command -v cargo-fuzz > /dev/null; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

echo "== building the fuzz targets"
cargo fuzz build "${build[@]}"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=()
for t in "${targets[@]}"; do
  log="$logs/$t.log"
  mkdir -p "fuzz/corpus/$t"
  if cargo fuzz run "${build[@]}" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$seconds" -timeout=30 -print_final_stats=1 \
    > "$log" 2>&1; then
    verdict="no finding"
  else
    verdict="FINDING"
    failed+=("$t")
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -1 || true)
  if [ "$verdict" = "no finding" ]; then
    echo "fuzz $t: ${runs:-?} runs in ${seconds}s (${rate:-?}/s), ${cov:-?}: no finding"
  else
    echo "fuzz $t: FINDING after ${runs:-?} runs"
    grep -E -A1 "panicked at|ERROR: |Test unit written" "$log" | head -20 || true
    echo "   (last lines of the log:)"
    tail -30 "$log" | sed 's/^/   /'
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: findings in ${failed[*]} (inputs in fuzz/artifacts/)"
  exit 1
fi
