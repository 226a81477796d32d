#!/usr/bin/env bash
# Installs what the test suites need when it is missing: Chromium (Debian package), the Python
# Socket.IO client. Node packages are installed by each suite from its lock file.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium from Debian's packages"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if ! command -v openssl >/dev/null 2>&1; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
fi
for tool in node npm python3 cargo; do
  command -v "$tool" >/dev/null 2>&1 || { echo "missing $tool: install it first" >&2; exit 1; }
done
python3 -m pip install -q --disable-pip-version-check -r tests/compat/python/requirements.txt
# The fuzzer's driver (the fuzz smoke run builds the fuzz target with it).
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "installing cargo-fuzz from crates.io"
  cargo install --locked --quiet cargo-fuzz --version 0.13.2
fi
