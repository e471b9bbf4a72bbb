#!/usr/bin/env bash
# Builds Chimaera, starts a private runtime (own port and config) with one
# low-latency worker per core, runs stencil_benchmark against it (a
# bulk-synchronous stencil loop driven from the client, with task groups,
# with task dependencies, inside the runtime and with OpenMP; efficiency and
# METG per task size), and stops the runtime.
# The runtime, its config and its shared-memory segments are always cleaned
# up, even on failure or Ctrl-C.
#
# Environment:
#   BUILD_DIR   build directory (default: build)
#   PORT        runtime port (default: 19780)
#   CORES       low-latency workers (default: CPUs online); pass the same
#               --cores to the benchmark if you change it
#   SKIP_BUILD  1 to skip scripts/build.sh (use what BUILD_DIR holds)
# Arguments are passed to stencil_benchmark (e.g. --quick, --sizes 5,50).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build}
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac
PORT=${PORT:-19780}
CORES=${CORES:-$(nproc)}

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  BUILD_DIR="$BUILD_DIR" bash scripts/build.sh
fi
BIN="$BUILD_DIR/src/chimaera"
# shellcheck source=scripts/runtime_lib.sh
source scripts/runtime_lib.sh
for exe in "$BIN/chimaera_start_runtime" "$BIN/chimaera_stop_runtime" \
  "$BIN/chimaera_stat" "$BUILD_DIR/benchmark/stencil_benchmark"; do
  [[ -x "$exe" ]] || { echo "run_stencil_benchmark: missing $exe" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/chimaera_stencil.XXXXXX)
export CHI_SERVER_CONF="$WORK/chimaera.yaml"
LOG="$WORK/runtime.log"
RT_PID=""
RT_PORT=""

chi_cleanup_on_exit "$WORK"

# One low-latency worker per core (the pool's containers spread over them),
# one high-latency worker, no reinforcement worker.
cat >"$CHI_SERVER_CONF" <<EOF2
workers:
  low_latency: ${CORES}
  high_latency: 1
  reinforcement: 0
network:
  port: ${PORT}
EOF2

echo "== starting runtime on port $PORT ($CORES low-latency workers)"
chi_start_runtime "$PORT" "$LOG" run_stencil_benchmark
cat "$LOG"

echo
echo "== stencil_benchmark $*"
"$BUILD_DIR/benchmark/stencil_benchmark" "$@"

echo
echo "== stopping runtime"
"$BIN/chimaera_stop_runtime" --timeout 20
wait "$RT_PID"
RT_PID=""
