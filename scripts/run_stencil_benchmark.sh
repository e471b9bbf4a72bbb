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
for exe in "$BIN/chimaera_start_runtime" "$BIN/chimaera_stop_runtime" \
  "$BIN/chimaera_stat" "$BUILD_DIR/benchmark/stencil_benchmark"; do
  [[ -x "$exe" ]] || { echo "run_stencil_benchmark: missing $exe" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/chimaera_stencil.XXXXXX)
export CHI_SERVER_CONF="$WORK/chimaera.yaml"
LOG="$WORK/runtime.log"
RT_PID=""

# Stops the runtime if it still runs (politely, then by force) and removes
# the config, the log and the runtime's shared-memory segments.
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$RT_PID" ]] && kill -0 "$RT_PID" 2>/dev/null; then
    timeout 20 "$BIN/chimaera_stop_runtime" --timeout 10 >/dev/null 2>&1 || true
    kill -TERM "$RT_PID" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$RT_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$RT_PID" 2>/dev/null || true
    wait "$RT_PID" 2>/dev/null || true
  fi
  rm -f /dev/shm/chimaera_*"_${PORT}_"* 2>/dev/null || true
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

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
"$BIN/chimaera_start_runtime" >"$LOG" 2>&1 &
RT_PID=$!
ready=0
for _ in $(seq 100); do  # at most ~20 s
  if ! kill -0 "$RT_PID" 2>/dev/null; then
    echo "run_stencil_benchmark: runtime exited at start:" >&2
    cat "$LOG" >&2
    exit 1
  fi
  if timeout 5 "$BIN/chimaera_stat" >/dev/null 2>&1; then
    ready=1
    break
  fi
  sleep 0.2
done
if [[ $ready != 1 ]]; then
  echo "run_stencil_benchmark: runtime did not answer within 20 s:" >&2
  cat "$LOG" >&2
  exit 1
fi
cat "$LOG"

echo
echo "== stencil_benchmark $*"
"$BUILD_DIR/benchmark/stencil_benchmark" "$@"

echo
echo "== stopping runtime"
"$BIN/chimaera_stop_runtime" --timeout 20
wait "$RT_PID"
RT_PID=""
