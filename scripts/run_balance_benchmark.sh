#!/usr/bin/env bash
# Builds Chimaera, then for ROUNDS rounds starts a private 3-node cluster
# (runtimes on 127.0.0.2-4, own port, hostfile, config and shared-memory
# segments) once per balance.dynamic setting (least_loaded and local, the
# order alternating per round), runs balance_benchmark attached to node 1 and
# stops the cluster. Then prints a summary (median and range over the rounds
# of each figure, per setting) and writes it, with every run's output, to
# OUT_DIR. See benchmark/balance_benchmark.cc for what is measured.
# The runtimes, configs and their shared-memory segments are always cleaned
# up, even on failure or Ctrl-C.
#
# Environment:
#   BUILD_DIR   build directory (default: build)
#   PORT        runtime port of every node (default: 19840; node-to-node
#               traffic uses PORT+1)
#   ROUNDS      rounds, each runs both settings on fresh clusters (default 3)
#   OUT_DIR     where summary.txt and the runs' outputs go (default:
#               /tmp/balance_bench)
#   REPORT_MS   balance.load_report_ms (default: 20)
#   SKIP_BUILD  1 to skip scripts/build.sh (use what BUILD_DIR holds)
#   BENCH_TIMEOUT  seconds one benchmark run may take (default: 120)
# Arguments are passed to balance_benchmark (e.g. --io-tasks 150).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build}
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac
PORT=${PORT:-19840}
ROUNDS=${ROUNDS:-3}
OUT_DIR=${OUT_DIR:-/tmp/balance_bench}
REPORT_MS=${REPORT_MS:-20}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-120}
NODES=3
if ! [[ $PORT =~ ^[0-9]+$ ]] || ((PORT < 1 || PORT > 65534)); then
  echo "run_balance_benchmark: bad PORT '$PORT'" >&2
  exit 2
fi
if ! [[ $ROUNDS =~ ^[0-9]+$ ]] || ((ROUNDS < 1)); then
  echo "run_balance_benchmark: bad ROUNDS '$ROUNDS'" >&2
  exit 2
fi

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  BUILD_DIR="$BUILD_DIR" bash scripts/build.sh
fi
BIN="$BUILD_DIR/src/chimaera"
BENCH="$BUILD_DIR/benchmark/balance_benchmark"
# shellcheck source=scripts/runtime_lib.sh
source scripts/runtime_lib.sh
for exe in "$BIN/chimaera_start_runtime" "$BIN/chimaera_stop_runtime" \
  "$BIN/chimaera_stat" "$BENCH"; do
  [[ -x "$exe" ]] || { echo "run_balance_benchmark: missing $exe" >&2; exit 1; }
done

HOSTS=()
for ((i = 2; i < NODES + 2; i++)); do HOSTS+=("127.0.0.$i"); done
# Refuse to run if anything already listens on our addresses and ports.
for h in "${HOSTS[@]}"; do
  for p in "$PORT" $((PORT + 1)); do
    if (exec 3<>"/dev/tcp/$h/$p") 2>/dev/null; then
      echo "run_balance_benchmark: $h:$p is in use; choose another PORT" >&2
      exit 1
    fi
  done
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/chimaera_balance.XXXXXX")
export CHI_SERVER_CONF="$WORK/chimaera.yaml"
HOSTFILE="$WORK/hosts"
printf '%s\n' "${HOSTS[@]}" >"$HOSTFILE"
mkdir -p "$OUT_DIR"
rm -f "$OUT_DIR"/round*_*.out "$OUT_DIR/summary.txt"
RT_PID=""
RT_PORT=""
PIDS=()  # Runtime of node i + 1 at index i ("" once stopped).

# Stops every node still running through runtime_lib.sh (node 3 first, each
# by its own address; only that node's segments are removed).
stop_cluster() {
  local i
  for ((i = NODES - 1; i >= 0; i--)); do
    [[ -n "${PIDS[i]:-}" ]] || continue
    RT_PID=${PIDS[i]}
    RT_PORT="${HOSTS[i]}_${PORT}"
    CHI_SERVER_ADDR=${HOSTS[i]} chi_stop_runtime
    PIDS[i]=""
  done
}

# The EXIT trap: stops the cluster, then runtime_lib.sh's cleanup removes
# $WORK (keeping the exit status; on failure, the runtimes' logs are shown).
# shellcheck disable=SC2317  # Runs from the EXIT trap.
balance_cleanup() {
  local rc=$? f
  set +e
  stop_cluster
  if ((rc != 0)); then
    for f in "$WORK"/node_*.log; do
      [[ -s $f ]] || continue
      echo "--- last lines of $f:" >&2
      tail -n 15 "$f" >&2 || true
    done
  fi
  (exit "$rc")
  _chi_cleanup
}
chi_cleanup_on_exit "$WORK"
trap balance_cleanup EXIT

# Writes the configuration for balance.dynamic $1. Small segments (three
# runtimes share the machine); one low- and one high-latency worker per node
# and the reinforcement thread that sends the load reports.
write_conf() {
  cat >"$CHI_SERVER_CONF" <<EOF
workers:
  low_latency: 1
  high_latency: 1
  reinforcement: 1
shm:
  main: 32m
  client_data: 16m
  runtime_data: 32m
network:
  port: ${PORT}
  hostfile: ${HOSTFILE}
  heartbeat_ms: 100
balance:
  load_report_ms: ${REPORT_MS}
  dynamic: $1
EOF
}

# Starts the three runtimes (node i binds hostfile entry i), one at a time.
start_cluster() {
  local i
  for ((i = 0; i < NODES; i++)); do
    export CHI_NODE_ID=$((i + 1)) CHI_SERVER_ADDR=${HOSTS[i]}
    chi_start_runtime "$PORT" "$WORK/node_$((i + 1)).log" \
      run_balance_benchmark
    PIDS[i]=$RT_PID
    RT_PID=""
    RT_PORT=""
  done
  unset CHI_NODE_ID CHI_SERVER_ADDR
}

# One benchmark run on a fresh cluster with balance.dynamic $1 in round $2;
# the rest goes to balance_benchmark. Output: $OUT_DIR/round$2_$1.out.
run_once() {
  local mode=$1 round=$2 out rc=0
  shift 2
  out="$OUT_DIR/round${round}_${mode}.out"
  write_conf "$mode"
  echo "== round $round: balance.dynamic $mode, cluster on" \
    "${HOSTS[0]}-${HOSTS[-1]} port $PORT"
  start_cluster
  CHI_SERVER_ADDR=${HOSTS[0]} timeout --foreground -k 5 "$BENCH_TIMEOUT" \
    "$BENCH" --nodes "$NODES" --label "$mode" "$@" >"$out" 2>&1 || rc=$?
  cat "$out"
  stop_cluster
  if ((rc != 0)); then
    echo "run_balance_benchmark: balance_benchmark failed (exit $rc);" \
      "see $out" >&2
    exit "$rc"
  fi
  echo
}

for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2)); then order=(least_loaded local); else order=(local least_loaded); fi
  for mode in "${order[@]}"; do run_once "$mode" "$r" "$@"; done
done

# Summary: per figure and setting, the median and range over the rounds.
SUMMARY="$OUT_DIR/summary.txt"
{
  echo "balance_benchmark summary: $ROUNDS round(s), 3 nodes, load_report_ms" \
    "$REPORT_MS, load average $(cut -d' ' -f1 /proc/loadavg)"
  echo "(median [min-max] over rounds; makespans in ms, latencies in us)"
  cat "$OUT_DIR"/round*_*.out | grep '^RESULT ' | awk '
    function median(arr, n,   i, j, t, a) {
      for (i = 1; i <= n; i++) a[i] = arr[i]
      for (i = 2; i <= n; i++) {
        t = a[i]
        for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]
        a[j + 1] = t
      }
      lo = a[1]; hi = a[n]
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function cell(mode, key,   n, i, v, m) {
      n = cnt[mode, key]
      if (n == 0) return "-"
      for (i = 1; i <= n; i++) v[i] = val[mode, key, i]
      m = median(v, n)
      return sprintf("%s [%s-%s]", fmt(m), fmt(lo), fmt(hi))
    }
    function fmt(x) {
      if (x >= 100) return sprintf("%.0f", x)
      if (x >= 10) return sprintf("%.1f", x)
      return sprintf("%.2f", x)
    }
    function row(name, key) {
      printf "  %-34s %-24s %-24s\n", name, cell("least_loaded", key),
        cell("local", key)
    }
    {
      mode = ""
      for (i = 2; i <= NF; i++) {
        split($i, kv, "=")
        if (kv[1] == "label") { mode = kv[2]; continue }
        if (mode == "") continue
        cnt[mode, kv[1]]++
        val[mode, kv[1], cnt[mode, kv[1]]] = kv[2]
      }
    }
    END {
      printf "  %-34s %-24s %-24s\n", "figure", "least_loaded", "local"
      row("noop p50 local (baseline)", "noop_local_p50_us")
      row("noop p50 remote (node 2)", "noop_remote_p50_us")
      row("noop p50 GetDynamic", "noop_dyn_p50_us")
      row("  share of those sent off node 1", "noop_dyn_far")
      row("skew: makespan", "skew_makespan_ms")
      row("skew: ideal makespan", "skew_ideal_ms")
      row("skew: max/mean per node", "skew_maxmean")
      row("skew: tasks node 1", "skew_n1")
      row("skew: tasks node 2", "skew_n2")
      row("skew: tasks node 3", "skew_n3")
      row("skew+bg@2: makespan", "bg_makespan_ms")
      row("skew+bg@2: ideal makespan", "bg_ideal_ms")
      row("skew+bg@2: max/mean per node", "bg_maxmean")
      row("skew+bg@2: tasks node 1", "bg_n1")
      row("skew+bg@2: tasks node 2", "bg_n2")
      row("skew+bg@2: tasks node 3", "bg_n3")
      row("short alone p50", "short_alone_p50_us")
      row("short alone p99", "short_alone_p99_us")
      row("short mixed p50", "short_mixed_p50_us")
      row("short mixed p99", "short_mixed_p99_us")
      row("p99 mixed / p99 alone", "p99_mixed_alone")
      row("mixed: long tasks node 1", "long_n1")
      row("mixed: long tasks node 2", "long_n2")
      row("mixed: long tasks node 3", "long_n3")
      row("errors (failed tasks etc.)", "errors")
    }'
  echo "Ratios to the local noop p50 (medians):"
  cat "$OUT_DIR"/round*_*.out | grep '^RESULT ' | awk '
    function med(list,   n, a, i, j, t) {
      n = split(list, a, " ")
      for (i = 2; i <= n; i++) {
        t = a[i]
        for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]
        a[j + 1] = t
      }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    {
      mode = ""
      for (i = 2; i <= NF; i++) {
        split($i, kv, "=")
        if (kv[1] == "label") mode = kv[2]
        else v[mode, kv[1]] = v[mode, kv[1]] " " kv[2]
      }
      modes[mode] = 1
    }
    END {
      for (m in modes) {
        base = med(v[m, "noop_local_p50_us"])
        if (base <= 0) continue
        printf "  %-12s short alone p50 %.2fx, p99 %.2fx; mixed p50 %.2fx, p99 %.2fx; remote noop %.2fx; dynamic noop %.2fx\n",
          m, med(v[m, "short_alone_p50_us"]) / base,
          med(v[m, "short_alone_p99_us"]) / base,
          med(v[m, "short_mixed_p50_us"]) / base,
          med(v[m, "short_mixed_p99_us"]) / base,
          med(v[m, "noop_remote_p50_us"]) / base,
          med(v[m, "noop_dyn_p50_us"]) / base
      }
    }'
} >"$SUMMARY"
echo "== summary (also in $SUMMARY)"
cat "$SUMMARY"
