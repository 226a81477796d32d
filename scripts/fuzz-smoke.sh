#!/usr/bin/env bash
# A short run of the event decoder's fuzz target (CI): builds it, replays the seeds and runs
# FUZZ_RUNS fresh inputs. The long runs are the same command with more runs (fuzz/README.md).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
mkdir -p corpus/events
# cargo-fuzz wants a nightly compiler for its instrumentation flags; the stable toolchain takes
# them with RUSTC_BOOTSTRAP, and without a sanitizer.
RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none events corpus/events seeds/events -- \
  -runs="${FUZZ_RUNS:-200000}" -print_final_stats=1 2>&1 | tail -n 25
