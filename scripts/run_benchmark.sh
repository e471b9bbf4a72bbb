#!/usr/bin/env bash
# Builds Chimaera, starts a private runtime (own port and config), runs
# chimaera_benchmark, chimod_benchmark and hshm_benchmark against it, and
# stops the runtime.
# The runtime, its config and its shared-memory segments are always cleaned
# up, even on failure or Ctrl-C.
#
# Environment:
#   BUILD_DIR   build directory (default: build)
#   PORT        runtime port (default: 19700)
#   SKIP_BUILD  1 to skip scripts/build.sh (use what BUILD_DIR holds)
#   CHIMOD_BENCH_ARGS  options for chimod_benchmark (e.g. "--keys 100000")
#   OUT_DIR     report directory (default: $BUILD_DIR/bench_report): raw
#               samples, gnuplot PNGs (latency CDF of the sync Noop next to
#               the ping-pong and ZeroMQ baselines; throughput vs in-flight
#               window next to the ping-pong rate) and report.md; plots are
#               skipped with a warning if gnuplot is missing
#   SKIP_REMOTE 1 to skip scripts/run_remote_benchmark.sh at the end
# Arguments are passed to chimaera_benchmark (e.g. --tasks 200000 --seconds 1).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build}
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac
PORT=${PORT:-19700}

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  BUILD_DIR="$BUILD_DIR" bash scripts/build.sh
fi
BIN="$BUILD_DIR/src/chimaera"
# shellcheck source=scripts/runtime_lib.sh
source scripts/runtime_lib.sh
for exe in "$BIN/chimaera_start_runtime" "$BIN/chimaera_stop_runtime" \
  "$BIN/chimaera_stat" "$BUILD_DIR/benchmark/chimaera_benchmark" \
  "$BUILD_DIR/benchmark/chimod_benchmark" \
  "$BUILD_DIR/benchmark/hshm_benchmark"; do
  [[ -x "$exe" ]] || { echo "run_benchmark: missing $exe" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/chimaera_bench.XXXXXX)
export CHI_SERVER_CONF="$WORK/chimaera.yaml"
LOG="$WORK/runtime.log"
RT_PID=""
RT_PORT=""

chi_cleanup_on_exit "$WORK"

# client_data holds chimod_benchmark's 1 MiB echo inputs and replies (16 in
# flight) and the kvs requests; 256m (the default, stated here) is ample.
cat >"$CHI_SERVER_CONF" <<EOF
network:
  port: ${PORT}
shm:
  client_data: 256m
EOF

echo "== starting runtime on port $PORT"
chi_start_runtime "$PORT" "$LOG" run_benchmark
cat "$LOG"

OUT_DIR=${OUT_DIR:-$BUILD_DIR/bench_report}
mkdir -p "$OUT_DIR"
rm -f "$OUT_DIR"/latency_*.txt "$OUT_DIR"/throughput.csv "$OUT_DIR"/*.png
echo
echo "== chimaera_benchmark $* (report in $OUT_DIR)"
"$BUILD_DIR/benchmark/chimaera_benchmark" --dump-dir "$OUT_DIR" "$@" |
  tee "$OUT_DIR/chimaera_benchmark.txt"
bash scripts/bench_report.sh "$OUT_DIR"

echo
echo "== chimod_benchmark ${CHIMOD_BENCH_ARGS:-}"
# shellcheck disable=SC2086  # Word splitting of the options is intended.
"$BUILD_DIR/benchmark/chimod_benchmark" ${CHIMOD_BENCH_ARGS:-}

echo
echo "== hshm_benchmark"
"$BUILD_DIR/benchmark/hshm_benchmark" --benchmark_min_time=0.2

echo
echo "== stopping runtime"
"$BIN/chimaera_stop_runtime" --timeout 20
wait "$RT_PID"
RT_PID=""
if [[ "${SKIP_REMOTE:-0}" != 1 ]]; then
  SKIP_BUILD=1 BUILD_DIR="$BUILD_DIR" bash scripts/run_remote_benchmark.sh
fi
echo "== report: $OUT_DIR/report.md"
