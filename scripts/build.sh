#!/usr/bin/env bash
# Configures and builds Chimaera into ${BUILD_DIR:-build}.
# Extra arguments go to cmake (e.g. -DCHIMAERA_SANITIZE=address).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$PWD/$BUILD_DIR" ;; esac
GEN=()
# A generator only for a new build directory: CMake refuses to change the
# one an existing directory was configured with.
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ] && command -v ninja >/dev/null; then
  GEN=(-G Ninja)
fi
cmake -S . -B "$BUILD_DIR" "${GEN[@]}" -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-Release} \
  -DCHIMAERA_ENABLE_CMAKE_DOTENV=ON -DCMAKE_INSTALL_PREFIX="$BUILD_DIR/install" "$@"
cmake --build "$BUILD_DIR" -j "$(nproc)"
