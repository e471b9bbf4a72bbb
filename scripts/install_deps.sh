#!/usr/bin/env bash
# Installs every system package Chimaera needs to build, test and benchmark on
# Debian bookworm. Idempotent; run as root (or with sudo available).
set -euo pipefail

PKGS=(
  build-essential cmake git pkg-config ninja-build procps
  libboost-dev libboost-context-dev
  libzmq3-dev cppzmq-dev
  libyaml-cpp-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  libzstd-dev liblz4-dev
  libcli11-dev
  clang-format
  clang-14 libclang-rt-14-dev
  gnuplot-nox
  python3-dev pybind11-dev
)

# As root, apt-get itself; otherwise through sudo, which a fresh Debian may
# not have (and which resets the environment: DEBIAN_FRONTEND goes through
# env).
SUDO=()
if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo); fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all packages present"
  exit 0
fi
echo "install_deps: installing ${missing[*]}"
if [ ${#SUDO[@]} -ne 0 ] && ! command -v sudo >/dev/null; then
  echo "install_deps: run as root (or install sudo) to install them" >&2
  exit 1
fi
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "${missing[@]}"
