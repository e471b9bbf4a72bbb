#!/usr/bin/env bash
# Measures what task tracing costs on the local hot path: async throughput
# (1 client thread, 256 tasks in flight) and the synchronous round-trip p50
# of the admin Noop, for each configuration, over ROUNDS rounds (order
# alternating), each run on a fresh runtime (own port, own config in a
# temporary directory):
#
#   base  BASE_BUILD_DIR's binaries (a build without tracing), if set
#   off   BUILD_DIR's binaries, trace.enabled false (the default)
#   on    BUILD_DIR's binaries, trace.enabled true (rings of
#         trace.events_per_worker records, overwritten as they fill)
#
# Prints one line per run and a summary: per configuration the median
# [min..max] of tput_1x256 (tasks/s) and sync_p50_ns, and the ratios of the
# medians to the reference (base if given, else off). Results also go to
# OUT_DIR/trace.csv (chimaera_benchmark --csv) and OUT_DIR/summary.txt.
#
# Environment:
#   BUILD_DIR       build with tracing (default: build)
#   BASE_BUILD_DIR  a build to compare against (default: none)
#   ROUNDS          rounds (default: 5)
#   BENCH_ARGS      chimaera_benchmark options
#                   (default: "-n 100000 -s 1 -r 3 --phases latency,throughput")
#   PORT            port of the first runtime; run k uses PORT + 2k
#                   (default: 19920)
#   OUT_DIR         where results go (default: a new /tmp directory, printed)
#   EXTRA_YAML      more configuration for every runtime, e.g. to pin the
#                   workers: $'workers:\n  cpus: [1, 0, 0]' (with BENCH_ARGS
#                   "... --pin-client 0")
#   TRACE_EVENTS    trace.events_per_worker of every runtime (default: the
#                   configuration's default)
set -euo pipefail
if [[ $# -gt 0 ]]; then
  echo "run_trace_benchmark: takes no arguments; its settings are the" \
    "environment variables listed at the top of $0" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
ROOT=$PWD
abs() { case "$1" in /*) echo "$1" ;; *) echo "$ROOT/$1" ;; esac; }
BUILD_DIR=$(abs "${BUILD_DIR:-build}")
BASE_BUILD_DIR=${BASE_BUILD_DIR:+$(abs "$BASE_BUILD_DIR")}
ROUNDS=${ROUNDS:-5}
BENCH_ARGS=${BENCH_ARGS:--n 100000 -s 1 -r 3 --phases latency,throughput}
PORT=${PORT:-19920}
if ! [[ $ROUNDS =~ ^[1-9][0-9]*$ ]]; then
  echo "run_trace_benchmark: bad ROUNDS '$ROUNDS'" >&2
  exit 2
fi
if ! [[ $PORT =~ ^[1-9][0-9]*$ ]] || ((PORT + 6 * ROUNDS > 65535)); then
  echo "run_trace_benchmark: bad PORT '$PORT'" >&2
  exit 2
fi
CONFIGS=(off on)
[[ -n "$BASE_BUILD_DIR" ]] && CONFIGS=(base off on)
for b in "$BUILD_DIR" ${BASE_BUILD_DIR:+"$BASE_BUILD_DIR"}; do
  for exe in src/chimaera/chimaera_start_runtime src/chimaera/chimaera_stop_runtime \
    src/chimaera/chimaera_stat benchmark/chimaera_benchmark; do
    [[ -x "$b/$exe" ]] || { echo "run_trace_benchmark: missing $b/$exe" >&2; exit 1; }
  done
done
if [[ -z "${OUT_DIR:-}" ]]; then OUT_DIR=$(mktemp -d /tmp/chimaera_trace_bench.XXXXXX); fi
mkdir -p "$OUT_DIR"
CSV="$OUT_DIR/trace.csv"
rm -f "$CSV" "$OUT_DIR/summary.txt"
echo "run_trace_benchmark: results go to $OUT_DIR"
WORK=$(mktemp -d /tmp/chimaera_trace_rt.XXXXXX)
# shellcheck source=scripts/runtime_lib.sh
source scripts/runtime_lib.sh
BIN=""
RT_PID=""
RT_PORT=""

chi_cleanup_on_exit "$WORK"

RUN=0
# Runs configuration $1 (base, off or on) once on a fresh runtime.
run_config() {
  local name=$1 build=$BUILD_DIR trace=false
  [[ $name == base ]] && build=$BASE_BUILD_DIR
  [[ $name == on ]] && trace=true
  local port=$((PORT + 2 * RUN))
  RUN=$((RUN + 1))
  BIN="$build/src/chimaera"
  export CHI_SERVER_CONF="$WORK/chimaera_$port.yaml"
  {
    echo "network:"
    echo "  port: $port"
    if [[ -n ${EXTRA_YAML:-} ]]; then echo "$EXTRA_YAML"; fi
    # The base build predates the trace section (unknown keys are errors).
    if [[ $name != base ]]; then
      echo "trace:"
      echo "  enabled: $trace"
      if [[ -n ${TRACE_EVENTS:-} ]]; then echo "  events_per_worker: $TRACE_EVENTS"; fi
    fi
  } >"$CHI_SERVER_CONF"
  chi_start_runtime "$port" "$WORK/runtime_$port.log" run_trace_benchmark
  sleep 0.5
  # shellcheck disable=SC2086  # Word splitting of BENCH_ARGS is intended.
  if ! "$build/benchmark/chimaera_benchmark" $BENCH_ARGS --csv "$CSV" \
    --label "$name" >"$OUT_DIR/${name}_$RUN.log" 2>&1; then
    echo "run_trace_benchmark: benchmark failed (see $OUT_DIR/${name}_$RUN.log)" >&2
    exit 1
  fi
  awk -F, -v n="$name" 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
    { l = $0 } END { split(l, f, ","); printf "  %-4s 1x256 %s tasks/s  sync p50 %s ns\n",
      n, f[c["tput_1x256"]], f[c["sync_p50_ns"]] }' "$CSV"
  chi_stop_runtime
}

for ((round = 1; round <= ROUNDS; round++)); do
  echo "== round $round/$ROUNDS"
  if ((round % 2 == 1)); then
    order=("${CONFIGS[@]}")
  else
    order=()
    for ((i = ${#CONFIGS[@]} - 1; i >= 0; i--)); do order+=("${CONFIGS[i]}"); done
  fi
  for name in "${order[@]}"; do run_config "$name"; done
done

# median [min..max] per configuration, and ratios of medians to the reference.
awk -F, -v configs="${CONFIGS[*]}" '
  function isort(a, n,    i, j, v) {
    for (i = 2; i <= n; i++) {
      v = a[i]
      for (j = i - 1; j >= 1 && a[j] > v; j--) a[j + 1] = a[j]
      a[j + 1] = v
    }
  }
  function stats(l, c,    n, i, a) {
    n = cnt[l, c]
    for (i = 1; i <= n; i++) a[i] = val[l, c, i] + 0
    isort(a, n)
    med[l, c] = n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    lo[l, c] = a[1]
    hi[l, c] = a[n]
  }
  NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
  {
    val[$1, "t", ++cnt[$1, "t"]] = $col["tput_1x256"]
    val[$1, "p", ++cnt[$1, "p"]] = $col["sync_p50_ns"]
  }
  END {
    nl = split(configs, lab, " ")
    ref = lab[1]
    printf "\n== summary over %d round(s): median [min..max]\n", cnt[ref, "t"]
    for (k = 1; k <= nl; k++) { stats(lab[k], "t"); stats(lab[k], "p") }
    for (k = 1; k <= nl; k++) {
      l = lab[k]
      printf "%-4s  1x256 %.0f [%.0f..%.0f] tasks/s (%.3f x %s)   " \
             "sync p50 %.0f [%.0f..%.0f] ns (%.3f x %s)\n",
        l, med[l, "t"], lo[l, "t"], hi[l, "t"], med[l, "t"] / med[ref, "t"], ref,
        med[l, "p"], lo[l, "p"], hi[l, "p"], med[l, "p"] / med[ref, "p"], ref
    }
    if ("off" != ref) {
      printf "on vs off: throughput %.3f x, sync p50 %.3f x\n",
        med["on", "t"] / med["off", "t"], med["on", "p"] / med["off", "p"]
    }
  }' "$CSV" | tee "$OUT_DIR/summary.txt"
