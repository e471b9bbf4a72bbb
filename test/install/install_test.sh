#!/usr/bin/env bash
# Install + out-of-tree test (run by CTest; see test/install/CMakeLists.txt).
#
#   install_test.sh <build dir> <source dir>
#
# 1. Installs the build tree into a temporary prefix (cmake --install).
# 2. Configures and builds the INSTALLED example
#    (share/chimaera/examples/consumer, a copy of test/install/consumer)
#    against that prefix with find_package(chimaera CONFIG), asking for C++14
#    (the exported targets must raise it to C++17): a client program and an
#    out-of-tree ChiMod ("ootmod") built with add_chimod_client /
#    add_chimod_runtime. A second tiny C++14 project includes and links the
#    installed kvs client (shipped modules install their headers).
# 3. Starts the INSTALLED chimaera_start_runtime (no LD_LIBRARY_PATH, so its
#    RPATH must work) on a free port, with the consumer build directory as
#    its module path, checks its module search order (config path, then the
#    prefix's lib/, never the build tree) with the installed chimaera_stat,
#    runs the consumer, and stops the runtime with the installed
#    chimaera_stop_runtime.
# Everything it creates (runtime, temp dirs, shared-memory segments) is
# removed on any exit, and every step is bounded in time.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 <build dir> <source dir>" >&2
  exit 2
fi
BUILD=$(cd "$1" && pwd)
SRC=$(cd "$2" && pwd)

WORK=$(mktemp -d /tmp/chimaera_install_test.XXXXXX)
PREFIX="$WORK/prefix"
CONSUMER="$WORK/consumer"
CONF="$WORK/chimaera.yaml"
LOG="$WORK/runtime.log"
RT_PID=""
CHILD_PID=""
PORT=""

# Prints a step header.
step() { echo "== $*"; }

# Runs `timeout <secs> <cmd>...` in the background and waits for it, so that
# a signal to this script runs the cleanup at once; returns its status.
bounded() {
  local secs=$1
  shift
  timeout "$secs" "$@" &
  CHILD_PID=$!
  local rc=0
  wait "$CHILD_PID" || rc=$?
  CHILD_PID=""
  return "$rc"
}

# Kills the runtime if it still runs, removes its segments and the temp dir.
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$CHILD_PID" ]]; then
    kill -TERM "$CHILD_PID" 2>/dev/null || true
    wait "$CHILD_PID" 2>/dev/null || true
  fi
  if [[ -n "$RT_PID" ]] && kill -0 "$RT_PID" 2>/dev/null; then
    kill -TERM "$RT_PID" 2>/dev/null || true
    for _ in $(seq 100); do
      kill -0 "$RT_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$RT_PID" 2>/dev/null || true
    wait "$RT_PID" 2>/dev/null || true
  fi
  if [[ -n "$PORT" ]]; then
    rm -f /dev/shm/chimaera_*"_${PORT}_"* 2>/dev/null || true
  fi
  if [[ $rc -ne 0 && -f "$LOG" ]]; then
    echo "-- runtime log:" >&2
    cat "$LOG" >&2
  fi
  rm -rf "$WORK"
  echo "install_test: $([[ $rc -eq 0 ]] && echo PASS || echo "FAIL ($rc)")"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Reads a variable from the build tree's CMake cache ("" if absent).
cache_var() {
  sed -n "s/^$1:[A-Z]*=//p" "$BUILD/CMakeCache.txt" | head -n1
}

# A free TCP port on 127.0.0.1 (falls back to one derived from our pid).
free_port() {
  python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])' 2>/dev/null || echo $((20000 + $$ % 20000))
}

step "install $BUILD -> $PREFIX"
bounded 120 cmake --install "$BUILD" --prefix "$PREFIX" >"$WORK/install.log" ||
  { cat "$WORK/install.log" >&2; exit 1; }
for f in bin/chimaera_start_runtime bin/chimaera_stop_runtime \
  bin/chimaera_keygen lib/cmake/chimaera/chimaeraConfig.cmake \
  include/chimaera/chimaera.h include/kvs/kvs_client.h \
  include/compressor/compressor_client.h \
  include/small_message/small_message_client.h \
  share/chimaera/examples/consumer/CMakeLists.txt; do
  [[ -e "$PREFIX/$f" ]] || { echo "missing $PREFIX/$f" >&2; exit 1; }
done

step "check that installed programs resolve libraries from the prefix"
ldd_out=$(env -u LD_LIBRARY_PATH ldd "$PREFIX/bin/chimaera_start_runtime")
if ! grep -q "libchimaera_runtime.so => $PREFIX/" <<<"$ldd_out"; then
  echo "chimaera_start_runtime does not find the installed library:" >&2
  echo "$ldd_out" >&2
  exit 1
fi

step "configure + build the installed example against the prefix (C++14 asked)"
EXAMPLE="$PREFIX/share/chimaera/examples/consumer"
CMAKE_ARGS=(-DCMAKE_PREFIX_PATH="$PREFIX" -DCMAKE_BUILD_TYPE=Release
  -DCMAKE_CXX_STANDARD=14 -DCMAKE_EXPORT_COMPILE_COMMANDS=ON)
gen=$(cache_var CMAKE_GENERATOR)
[[ -n "$gen" ]] && CMAKE_ARGS+=(-G "$gen")
cxx=$(cache_var CMAKE_CXX_COMPILER)
[[ -n "$cxx" ]] && CMAKE_ARGS+=(-DCMAKE_CXX_COMPILER="$cxx")
# Sanitized libraries need the same sanitizer in the programs that load them.
case "$(cache_var CHIMAERA_SANITIZE)" in
  address) CMAKE_ARGS+=(-DCMAKE_CXX_FLAGS="-fsanitize=address,undefined") ;;
  thread) CMAKE_ARGS+=(-DCMAKE_CXX_FLAGS="-fsanitize=thread") ;;
esac
# Dependencies found through a prefix path in the main build stay findable.
dep_prefix=$(cache_var CMAKE_PREFIX_PATH)
[[ -n "$dep_prefix" ]] &&
  CMAKE_ARGS[0]="-DCMAKE_PREFIX_PATH=$PREFIX;$dep_prefix"
bounded 120 cmake -S "$EXAMPLE" -B "$CONSUMER" \
  "${CMAKE_ARGS[@]}" >"$WORK/configure.log" 2>&1 ||
  { cat "$WORK/configure.log" >&2; exit 1; }
grep "chimaera .* from" "$WORK/configure.log" || true
bounded 240 cmake --build "$CONSUMER" -j 2 >"$WORK/build.log" 2>&1 ||
  { cat "$WORK/build.log" >&2; exit 1; }
[[ -f "$CONSUMER/libootmod_runtime.so" ]] ||
  { echo "libootmod_runtime.so was not built" >&2; exit 1; }
# Fails unless every compile of build dir $1 used C++17 or later, although
# the project asked for C++14 (the exported targets require C++17).
check_cxx17() {
  if ! grep -q -- '-std=[a-z+]*17' "$1/compile_commands.json" ||
    grep -q -- '-std=[a-z+]*14' "$1/compile_commands.json"; then
    echo "$1 compiled without C++17; the exported targets must require it" >&2
    exit 1
  fi
}
check_cxx17 "$CONSUMER"

step "a C++14 project including and linking the installed kvs client"
mkdir -p "$WORK/cxx14"
cat >"$WORK/cxx14/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.20)
project(cxx14_consumer LANGUAGES CXX)
set(CMAKE_CXX_STANDARD 14)
find_package(chimaera CONFIG REQUIRED)
add_executable(kvs_user kvs_user.cc)
target_link_libraries(kvs_user PRIVATE chimaera::chimaera_client
                      ${chimaera_LIB_DIR}/libkvs_client.so)
EOF
cat >"$WORK/cxx14/kvs_user.cc" <<'EOF'
#include "kvs/kvs_client.h"
int main() { return sizeof(chi::kvs::Client) > 0 ? 0 : 1; }
EOF
bounded 120 cmake -S "$WORK/cxx14" -B "$WORK/cxx14/build" \
  "${CMAKE_ARGS[@]}" >"$WORK/cxx14.log" 2>&1 &&
  bounded 120 cmake --build "$WORK/cxx14/build" >>"$WORK/cxx14.log" 2>&1 ||
  { cat "$WORK/cxx14.log" >&2; exit 1; }
check_cxx17 "$WORK/cxx14/build"

PORT=$(free_port)
step "start the installed runtime on port $PORT"
cat >"$CONF" <<EOF
network:
  port: ${PORT}
shm:
  main: 32m
  client_data: 32m
  runtime_data: 16m
modules:
  paths: ["${CONSUMER}"]
EOF
# The runtime's own timeout bounds it even if this script is killed hard.
env -u LD_LIBRARY_PATH -u CHI_MODULE_PATH CHI_SERVER_CONF="$CONF" \
  timeout 240 "$PREFIX/bin/chimaera_start_runtime" >"$LOG" 2>&1 &
RT_PID=$!
ready=0
for _ in $(seq 300); do  # at most 30 s
  if ! kill -0 "$RT_PID" 2>/dev/null; then
    echo "the runtime exited at start" >&2
    exit 1
  fi
  if grep -qs "ready" "$LOG"; then
    ready=1
    break
  fi
  sleep 0.1
done
[[ $ready == 1 ]] || { echo "the runtime did not start in 30 s" >&2; exit 1; }
cat "$LOG"

step "module search order of the installed runtime"
paths=$(bounded 30 env -u LD_LIBRARY_PATH CHI_SERVER_CONF="$CONF" \
  "$PREFIX/bin/chimaera_stat" | sed -n 's/^module paths: //p')
echo "module paths: $paths"
read -r -a order <<<"$paths"
if [[ "${order[0]:-}" != "$CONSUMER" ||
  "${order[1]:-}" != "$(cd "$PREFIX/lib" && pwd -P)" ]]; then
  echo "expected the config path, then $PREFIX/lib, first" >&2
  exit 1
fi
if [[ " $paths " == *" $BUILD"* ]]; then
  echo "the installed runtime searches the build tree $BUILD" >&2
  exit 1
fi

step "run the consumer"
bounded 60 env -u LD_LIBRARY_PATH CHI_SERVER_CONF="$CONF" \
  "$CONSUMER/chimaera_consumer"

if compgen -G "$BUILD/python/chimaera*.so" >/dev/null; then
  step "import the installed Python module and use it (no LD_LIBRARY_PATH)"
  mods=("$PREFIX"/lib/python3*/dist-packages/chimaera*.so)
  if [[ ${#mods[@]} -ne 1 || ! -e "${mods[0]}" ]]; then
    echo "expected one installed Python module, found: ${mods[*]}" >&2
    exit 1
  fi
  pydir=$(dirname "${mods[0]}")
  py=$(cache_var Python3_EXECUTABLE)
  py=${py:-python3}
  # Any prefix but /usr gets Debian's versioned directory, which the
  # interpreter searches for /usr/local.
  if [[ -z "$(cache_var CHIMAERA_PYTHON_INSTALL_DIR)" &&
    "$(cache_var CMAKE_INSTALL_PREFIX)" != /usr ]]; then
    ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    if [[ "$pydir" != "$PREFIX/lib/python$ver/dist-packages" ]]; then
      echo "the Python module went to $pydir, not lib/python$ver" >&2
      exit 1
    fi
  fi
  bounded 60 env -u LD_LIBRARY_PATH -u PYTHONPATH CHI_SERVER_CONF="$CONF" \
    PYTHONPATH="$pydir" PYTHONDONTWRITEBYTECODE=1 "$py" -c '
import chimaera
chimaera.connect()
kvs = chimaera.Kvs.create("install_kvs", containers=1)
kvs.put(b"k", b"installed")
assert kvs.get(b"k") == b"installed", kvs.get(b"k")
kvs.destroy()
chimaera.disconnect()
print("python: kvs put/get ok")'
fi

step "stop the runtime with the installed chimaera_stop_runtime"
bounded 60 env -u LD_LIBRARY_PATH CHI_SERVER_CONF="$CONF" \
  "$PREFIX/bin/chimaera_stop_runtime" --timeout 30
rt_rc=0
wait "$RT_PID" || rt_rc=$?
RT_PID=""
if [[ $rt_rc -ne 0 ]]; then
  echo "the runtime exited with status $rt_rc" >&2
  exit 1
fi
if compgen -G "/dev/shm/chimaera_*_${PORT}_*" >/dev/null; then
  echo "the runtime left shared-memory segments behind" >&2
  exit 1
fi
