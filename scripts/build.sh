#!/usr/bin/env bash
# Configures and builds Chimaera into ${BUILD_DIR:-build}.
# Extra arguments go to cmake (e.g. -DCHIMAERA_SANITIZE=address).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
cmake -S . -B "$BUILD_DIR" "${GEN[@]}" -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-Release} \
  -DCHIMAERA_ENABLE_CMAKE_DOTENV=ON -DCMAKE_INSTALL_PREFIX="$PWD/$BUILD_DIR/install" "$@"
cmake --build "$BUILD_DIR" -j "$(nproc)"
