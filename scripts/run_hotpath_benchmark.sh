#!/usr/bin/env bash
# Measures the local hot path (synchronous Noop round trip, wake-up after
# idleness, async throughput, idle CPU of the runtime) as a user's client
# sees it, over ROUNDS rounds. Each round starts a fresh runtime (own port,
# own config in a temporary directory) for each of two configurations and
# runs chimaera_benchmark against it:
#
#   unpinned  workers.cpus empty (the OS schedules the workers), client
#             unpinned: what a user gets by default
#   pinned    workers.cpus [1, 0, 0] (the low-latency worker on CPU 1, the
#             high-latency and reinforcement workers on CPU 0), client
#             pinned to CPU 0 (--pin-client 0); needs 2 CPUs
#
# Before each benchmark the runtime's idle CPU (utime+stime of all its
# threads from /proc/PID/stat over IDLE_SECONDS, after 1 s of settling) is
# recorded as a percentage of one core. Every run appends a line to
# OUT_DIR/hotpath.csv (chimaera_benchmark --csv) and to OUT_DIR/idle.csv; at
# the end a summary (median [min..max] over the rounds of every column, per
# configuration, and how many rounds met each aim) is printed and written to
# OUT_DIR/summary.txt. Each run's full output is in OUT_DIR/<config>_<round>.log.
# Each runtime, its config and its shared-memory segments are always removed,
# even on failure or Ctrl-C.
#
# Environment:
#   BUILD_DIR   build directory (default: build)
#   SKIP_BUILD  1 to skip scripts/build.sh (use what BUILD_DIR holds)
#   ROUNDS      rounds (default: 10)
#   MODULE      admin (default) or small_message: whose Noop is measured
#   BENCH_ARGS  extra chimaera_benchmark options
#               (default: "-n 200000 -s 0.5 -r 3")
#   PORT        port of the first runtime; run k uses PORT + 2k, as each
#               runtime also takes port + 1 (default: 19720)
#   OUT_DIR     where the CSVs, logs and summary go (default: a new
#               /tmp/chimaera_hotpath.XXXXXX, printed)
#   IDLE_SECONDS  length of the idle-CPU sample (default: 5)
#   BENCH_TIMEOUT seconds one benchmark run may take (default: 600)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build}
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac
ROUNDS=${ROUNDS:-10}
MODULE=${MODULE:-admin}
BENCH_ARGS=${BENCH_ARGS:--n 200000 -s 0.5 -r 3}
PORT=${PORT:-19720}
IDLE_SECONDS=${IDLE_SECONDS:-5}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-600}

# Prints an error naming this script and exits with status 2.
die_usage() {
  echo "run_hotpath_benchmark: $*" >&2
  exit 2
}
if ! [[ $ROUNDS =~ ^[1-9][0-9]*$ ]]; then die_usage "bad ROUNDS '$ROUNDS'"; fi
case "$MODULE" in admin | small_message) ;; *)
  die_usage "bad MODULE '$MODULE' (admin or small_message)"
  ;;
esac
if ! [[ $IDLE_SECONDS =~ ^[1-9][0-9]*$ ]]; then
  die_usage "bad IDLE_SECONDS '$IDLE_SECONDS'"
fi
if ! [[ $BENCH_TIMEOUT =~ ^[1-9][0-9]*$ ]]; then
  die_usage "bad BENCH_TIMEOUT '$BENCH_TIMEOUT'"
fi
if ! [[ $PORT =~ ^[1-9][0-9]*$ ]] || ((PORT + 4 * ROUNDS > 65535)); then
  die_usage "bad PORT '$PORT' (PORT + 4 * ROUNDS must stay below 65536)"
fi

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  BUILD_DIR="$BUILD_DIR" bash scripts/build.sh
fi
BIN="$BUILD_DIR/src/chimaera"
# shellcheck source=scripts/runtime_lib.sh
source scripts/runtime_lib.sh
BENCH="$BUILD_DIR/benchmark/chimaera_benchmark"
for exe in "$BIN/chimaera_start_runtime" "$BIN/chimaera_stop_runtime" \
  "$BIN/chimaera_stat" "$BENCH"; do
  [[ -x "$exe" ]] || { echo "run_hotpath_benchmark: missing $exe" >&2; exit 1; }
done

CONFIGS=(unpinned)
if (($(nproc) >= 2)); then
  CONFIGS+=(pinned)
else
  echo "run_hotpath_benchmark: 1 CPU online; skipping the pinned configuration"
fi

if [[ -z "${OUT_DIR:-}" ]]; then
  OUT_DIR=$(mktemp -d /tmp/chimaera_hotpath.XXXXXX)
fi
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
CSV="$OUT_DIR/hotpath.csv"
IDLE_CSV="$OUT_DIR/idle.csv"
SUMMARY="$OUT_DIR/summary.txt"
rm -f "$CSV" "$IDLE_CSV" "$SUMMARY"
echo "run_hotpath_benchmark: results go to $OUT_DIR"

WORK=$(mktemp -d /tmp/chimaera_hotpath_rt.XXXXXX)
RT_PID=""
RT_PORT=""
BENCH_PID=""

# Stops the current runtime (see chi_stop_runtime).
stop_runtime() { chi_stop_runtime; }

# Stops a running benchmark and the runtime and removes the configs and logs
# of the runtimes (the results in OUT_DIR stay).
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$BENCH_PID" ]]; then
    kill -TERM "$BENCH_PID" 2>/dev/null || true  # timeout passes it on
    wait "$BENCH_PID" 2>/dev/null || true
  fi
  stop_runtime
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts a runtime on port $1 whose workers.cpus is $2 (a YAML list) with
# its config in $WORK, and waits until chimaera_stat answers. Sets RT_PID,
# RT_PORT and CHI_SERVER_CONF. Exits (the trap cleans up) if it fails.
start_runtime() {
  local port=$1 cpus=$2 log="$WORK/runtime_$1.log"
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null ||
    (exec 3<>"/dev/tcp/127.0.0.1/$((port + 1))") 2>/dev/null; then
    echo "run_hotpath_benchmark: port $port or $((port + 1)) is in use;" \
      "choose another PORT" >&2
    exit 1
  fi
  export CHI_SERVER_CONF="$WORK/chimaera_$port.yaml"
  cat >"$CHI_SERVER_CONF" <<EOF
workers:
  cpus: ${cpus}
network:
  port: ${port}
EOF
  chi_start_runtime "$port" "$log" run_hotpath_benchmark
}

# Prints utime+stime (clock ticks, all threads) of process $1.
cpu_ticks() {
  local stat
  stat=$(cat "/proc/$1/stat") || return 1
  # The command name (field 2) may hold spaces: count fields after its ')'.
  stat=${stat##*) }
  echo "$stat" | awk '{ print $12 + $13 }'
}

# Prints the CPU the runtime used over IDLE_SECONDS of idleness, in percent
# of one core.
idle_cpu_percent() {
  local hz t0 t1 n0 n1
  hz=$(getconf CLK_TCK)
  t0=$(cpu_ticks "$RT_PID")
  n0=$(date +%s%N)
  sleep "$IDLE_SECONDS"
  t1=$(cpu_ticks "$RT_PID")
  n1=$(date +%s%N)
  awk -v t="$((t1 - t0))" -v hz="$hz" -v ns="$((n1 - n0))" \
    'BEGIN { printf "%.2f\n", 100 * (t / hz) / (ns / 1e9) }'
}

# Prints one line digesting the last line of $CSV (the run just made).
digest_last_run() {
  awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
    { last = $0 }
    END {
      n = split(last, f, ",")
      printf "  p50 %s  p99 %s  p99.9 %s  max %s ns  ping-pong %s ns  " \
             "1x256 %s/s  2x256 %s/s  wake %s ns  failed %s\n",
        f[col["sync_p50_ns"]], f[col["sync_p99_ns"]], f[col["sync_p999_ns"]],
        f[col["sync_max_ns"]], f[col["pingpong_p50_ns"]],
        f[col["tput_1x256"]], f[col["tput_2x256"]], f[col["wake_p50_ns"]],
        f[col["failed"]]
    }' "$CSV"
}

FAILED=0
RUN=0
# Runs configuration $1 for round $2 on a fresh runtime.
run_config() {
  local name=$1 round=$2 cpus="[]" pin=-1 pct rc=0
  local log="$OUT_DIR/${name}_${round}.log"
  if [[ $name == pinned ]]; then
    cpus="[1, 0, 0]"
    pin=0
  fi
  local port=$((PORT + 2 * RUN))
  RUN=$((RUN + 1))
  echo "== round $round/$ROUNDS: $name (workers.cpus $cpus, client" \
    "$( ((pin >= 0)) && echo "pinned to CPU $pin" || echo unpinned)," \
    "port $port)"
  start_runtime "$port" "$cpus"
  sleep 1
  pct=$(idle_cpu_percent)
  [[ -s "$IDLE_CSV" ]] || echo "label,idle_cpu_pct" >"$IDLE_CSV"
  echo "$name,$pct" >>"$IDLE_CSV"
  echo "  idle runtime: ${pct}% of one core over ${IDLE_SECONDS} s"
  # In the background and waited for, so that Ctrl-C or TERM interrupts the
  # wait at once and the trap runs (cleanup stops the benchmark: background
  # commands of a script ignore SIGINT).
  # shellcheck disable=SC2086  # Word splitting of BENCH_ARGS is intended.
  timeout "$BENCH_TIMEOUT" "$BENCH" $BENCH_ARGS --module "$MODULE" \
    --pin-client "$pin" --csv "$CSV" --label "$name" >"$log" 2>&1 &
  BENCH_PID=$!
  wait "$BENCH_PID" || rc=$?
  BENCH_PID=""
  if ((round == 1)); then sed 's/^/  | /' "$log"; fi
  if ((rc != 0)); then
    echo "run_hotpath_benchmark: chimaera_benchmark exited $rc (see $log):" >&2
    tail -n 20 "$log" >&2
    FAILED=$((FAILED + 1))
  fi
  digest_last_run
  stop_runtime
}

for ((round = 1; round <= ROUNDS; round++)); do
  # Alternate the order so that neither configuration always runs first.
  if ((round % 2 == 1)); then
    order=("${CONFIGS[@]}")
  else
    order=()
    for ((i = ${#CONFIGS[@]} - 1; i >= 0; i--)); do order+=("${CONFIGS[i]}"); done
  fi
  for name in "${order[@]}"; do run_config "$name" "$round"; done
done

# Summary: per configuration (a column each), every numeric column of both
# CSVs as "median [min..max]" over the rounds, then in how many rounds each
# aim was met. mawk has no sort function: an insertion sort does.
{
  echo
  echo "== summary over $ROUNDS round(s), module $MODULE: median [min..max];" \
    "ns, tasks/s, ratios, % of a core"
  awk -F, -v configs="${CONFIGS[*]}" '
    function isort(a, n,    i, j, v) {
      for (i = 2; i <= n; i++) {
        v = a[i]
        for (j = i - 1; j >= 1 && a[j] > v; j--) a[j + 1] = a[j]
        a[j + 1] = v
      }
    }
    function fmt(x) {
      if (x >= 100 || x <= -100) return sprintf("%.0f", x)
      return sprintf("%.3g", x)
    }
    # Median of the values of column c under label l (sorted into a).
    function median(l, c, a,    n, i) {
      n = cnt[l, c]
      for (i = 1; i <= n; i++) a[i] = val[l, c, i] + 0
      isort(a, n)
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    # "median [min..max]" of column c under label l ("-" if none).
    function cell(l, c,    n, a, med) {
      n = cnt[l, c]
      if (n == 0) return "-"
      med = median(l, c, a)
      return fmt(med) " [" fmt(a[1]) ".." fmt(a[n]) "]"
    }
    # Counts one round of label l for aim k, met if ok.
    function aim(l, k, ok) {
      tried[l, k]++
      if (ok) met[l, k]++
    }
    FNR == 1 {
      for (i = 2; i <= NF; i++) {
        name[FILENAME, i] = $i
        if (!($i in seen)) { seen[$i] = 1; cols[++ncols] = $i }
      }
      next
    }
    {
      l = $1
      delete f
      for (i = 2; i <= NF; i++) {
        c = name[FILENAME, i]
        f[c] = $i
        if ($i == "") continue
        if ($i !~ /^-?[0-9.]+$/) { text[l, c] = $i; continue }
        val[l, c, ++cnt[l, c]] = $i
      }
      if ("p50_over_pp" in f && f["p50_over_pp"] != "")
        aim(l, 1, f["p50_over_pp"] <= 2)
      if ("p99_over_pp" in f && f["p99_over_pp"] != "")
        aim(l, 2, f["p99_over_pp"] <= 4)
      # The same two aims against the ping-pong measured in blocks beside
      # the Noops (valid when the VM changes speed mid-run).
      if ("p50_over_pp_paired" in f && f["p50_over_pp_paired"] != "")
        aim(l, 10, f["p50_over_pp_paired"] <= 2)
      if ("p99_over_pp_paired" in f && f["p99_over_pp_paired"] != "")
        aim(l, 11, f["p99_over_pp_paired"] <= 4)
      if ("p999_over_p50" in f && f["p999_over_p50"] != "")
        aim(l, 3, f["p999_over_p50"] <= 5)
      if ("win_p50_max_ns" in f && f["win_p50_max_ns"] != "")
        aim(l, 4, f["win_p50_max_ns"] <= 2 * f["sync_p50_ns"])
      if ("idle_cpu_pct" in f && f["idle_cpu_pct"] != "")
        aim(l, 6, f["idle_cpu_pct"] < 5)
      if ("failed" in f && f["failed"] != "") aim(l, 7, f["failed"] == 0)
      # The host part of aim 3: a ping-pong as long as the Noop (both
      # CPUs busy) meets p99.9 <= 5x its p50.
      if ("pad_p999_p50" in f && f["pad_p999_p50"] != "")
        aim(l, 9, f["pad_p999_p50"] <= 5)
      # Where the latency phase ended: a client on the CPU of the low-latency
      # worker waits for its own spin to end before the worker can run.
      if (f["client_ran_on"] != "" && f["worker0_ran_on"] != "" &&
          f["client_ran_on"] >= 0 && f["worker0_ran_on"] >= 0)
        aim(l, 8, f["client_ran_on"] != f["worker0_ran_on"])
    }
    END {
      nl = split(configs, lab, " ")
      printf "%-16s", "column"
      for (k = 1; k <= nl; k++) printf "  %-30s", lab[k]
      printf "\n"
      for (j = 1; j <= ncols; j++) {
        c = cols[j]
        printf "%-16s", c
        for (k = 1; k <= nl; k++) {
          l = lab[k]
          printf "  %-30s", ((l, c) in text) ? text[l, c] : cell(l, c)
        }
        printf "\n"
      }
      # Aim 5: no whole run slowed down: its p50 within 2x the median of
      # the rounds.
      for (k = 1; k <= nl; k++) {
        l = lab[k]
        if (cnt[l, "sync_p50_ns"] == 0) continue
        m = median(l, "sync_p50_ns", tmp)
        for (i = 1; i <= cnt[l, "sync_p50_ns"]; i++)
          aim(l, 5, val[l, "sync_p50_ns", i] <= 2 * m)
      }
      desc[1] = "sync p50 <= 2x ping-pong p50"
      desc[2] = "sync p99 <= 4x ping-pong p50"
      desc[3] = "sync p99.9 <= 5x sync p50"
      desc[4] = "no window p50 > 2x run p50"
      desc[5] = "run p50 <= 2x median run p50"
      desc[6] = "idle runtime < 5% of a core"
      desc[7] = "no failed task"
      desc[8] = "client not on LL worker CPU"
      desc[9] = "(host) padded pp p99.9 <= 5x"
      desc[10] = "sync p50 <= 2x pp (paired)"
      desc[11] = "sync p99 <= 4x pp (paired)"
      printf "\naims: rounds that met each / rounds measured\n"
      for (a = 1; a <= 11; a++) {
        printf "%-30s", desc[a]
        for (k = 1; k <= nl; k++) {
          l = lab[k]
          s = tried[l, a] ? (met[l, a] + 0) "/" tried[l, a] : "-"
          printf "  %-16s", s
        }
        printf "\n"
      }
    }' "$CSV" "$IDLE_CSV"
} | tee "$SUMMARY"
if ((FAILED > 0)); then
  echo "run_hotpath_benchmark: $FAILED benchmark run(s) failed" >&2
  exit 1
fi
