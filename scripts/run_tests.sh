#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test with CTest (in parallel).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh "$@"
cd "${BUILD_DIR:-build}"
ctest -j "$(nproc)" --output-on-failure --timeout 300
