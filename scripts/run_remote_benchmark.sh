#!/usr/bin/env bash
# Builds what remote_benchmark needs, starts a private local cluster (NODES
# runtimes on 127.0.0.2, 127.0.0.3, ... with their own port, config and run
# directory) through scripts/chimaera_cluster, runs remote_benchmark attached
# to node 1 and stops the cluster.
# The runtimes, the config, the hostfile, the logs and the runtimes'
# shared-memory segments are always cleaned up, even on failure or Ctrl-C.
#
# Environment:
#   BUILD_DIR   build directory (default: build)
#   PORT        runtime port of every node (default: 19800; node-to-node
#               traffic uses PORT+1)
#   NODES       cluster size, 2 to 200 (default: 4)
#   SKIP_BUILD  1 to skip the build (use what BUILD_DIR holds)
#   BENCH_TIMEOUT  seconds the benchmark may run before it is killed
#               (default: 300)
#   CURVE       off (default), on (node-to-node ZeroMQ CURVE with a fresh
#               cluster key written by chimaera_keygen), or compare: the
#               benchmark runs twice (a fresh cluster each, off then on) and
#               the remote no-op p50 and 1 MiB echo MB/s of both are printed
#               with their ratios (on / off)
# Arguments are passed to remote_benchmark (e.g. --tasks 5000 --skip-bcast).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build}
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac
PORT=${PORT:-19800}
NODES=${NODES:-4}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-300}
if ! [[ $PORT =~ ^[0-9]+$ ]] || ((PORT < 1 || PORT > 65534)); then
  echo "run_remote_benchmark: bad PORT '$PORT'" >&2
  exit 2
fi
if ! [[ $NODES =~ ^[0-9]+$ ]] || ((NODES < 2 || NODES > 200)); then
  echo "run_remote_benchmark: bad NODES '$NODES' (2-200)" >&2
  exit 2
fi
CURVE=${CURVE:-off}
case "$CURVE" in
  off) MODES=(off) ;;
  on) MODES=(on) ;;
  compare) MODES=(off on) ;;
  *)
    echo "run_remote_benchmark: bad CURVE '$CURVE' (off, on or compare)" >&2
    exit 2
    ;;
esac

TARGETS=(remote_benchmark chimaera_start_runtime chimaera_stop_runtime
  chimaera_stat chimaera_keygen small_message_runtime)
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
    GEN=()
    command -v ninja >/dev/null && GEN=(-G Ninja)
    cmake -S . -B "$BUILD_DIR" "${GEN[@]}" \
      -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" \
      -DCHIMAERA_ENABLE_CMAKE_DOTENV=ON
  fi
  cmake --build "$BUILD_DIR" --target "${TARGETS[@]}" -j "$(nproc)"
fi
BIN="$BUILD_DIR/src/chimaera"
BENCH="$BUILD_DIR/benchmark/remote_benchmark"
for exe in "$BIN/chimaera_start_runtime" "$BIN/chimaera_stop_runtime" \
  "$BIN/chimaera_stat" "$BIN/chimaera_keygen" "$BENCH"; do
  [[ -x "$exe" ]] || { echo "run_remote_benchmark: missing $exe" >&2; exit 1; }
done

HOSTS=()
for ((i = 2; i < NODES + 2; i++)); do HOSTS+=("127.0.0.$i"); done

# Refuse to run if anything already listens on our addresses: the cluster
# tool would take such a runtime for one of ours (and stop it at the end).
for h in "${HOSTS[@]}"; do
  for p in "$PORT" $((PORT + 1)); do
    if (exec 3<>"/dev/tcp/$h/$p") 2>/dev/null; then
      echo "run_remote_benchmark: $h:$p is in use; choose another PORT" >&2
      exit 1
    fi
  done
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/chimaera_remote_bench.XXXXXX")
CONF="$WORK/chimaera.yaml"
KEY="$WORK/cluster.key"
HOSTFILE="$WORK/hosts"
RUN="$WORK/run"
mkdir -p "$RUN"
STARTED=0

cluster() {
  bash "$ROOT/scripts/chimaera_cluster" "$1" --hostfile "$HOSTFILE" \
    --conf "$CONF" --bin "$BIN" --run-dir "$RUN" "${@:2}"
}

# Live (not zombie) chimaera_start_runtime processes started with our config.
our_runtimes() {
  local d pid argv0 state
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    argv0=""
    IFS= read -r -d "" argv0 2>/dev/null <"$d/cmdline" || true
    [[ ${argv0##*/} == chimaera_start_runtime ]] || continue
    state=$(awk '{ sub(/.*\) /, ""); print $1 }' "$d/stat" 2>/dev/null) ||
      continue
    [[ $state != Z ]] || continue
    if tr '\0' '\n' 2>/dev/null <"$d/environ" |
      grep -qxF "CHI_SERVER_CONF=$CONF"; then
      echo "$pid"
    fi
  done
}

# Stops the cluster if this script started it (the tool, then SIGKILL for
# any runtime of our config that survived), removes the segments of our
# addresses and port and the work directory.
# shellcheck disable=SC2317  # Runs from the EXIT trap.
cleanup() {
  local rc=$? pid h
  trap - EXIT INT TERM
  if [[ $STARTED == 1 ]]; then
    cluster stop >/dev/null 2>&1 || true
    for pid in $(our_runtimes); do
      echo "run_remote_benchmark: killing leftover runtime $pid" >&2
      kill -KILL "$pid" 2>/dev/null || true
    done
  fi
  for h in "${HOSTS[@]}"; do
    rm -f /dev/shm/chimaera_*_"${h}_${PORT}"_* 2>/dev/null || true
  done
  if ((rc != 0)) && [[ -d $RUN ]]; then
    for f in "$RUN"/node_*.log; do
      [[ -s $f ]] || continue
      echo "--- last lines of $f:" >&2
      tail -n 15 "$f" >&2 || true
    done
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

printf '%s\n' "${HOSTS[@]}" >"$HOSTFILE"
if [[ $CURVE != off ]]; then
  "$BIN/chimaera_keygen" -o "$KEY" >/dev/null
fi

# Writes the configuration; $1 = on adds CURVE with the cluster key.
# Small segments (4 runtimes share the machine); client_data holds the 1 MiB
# echo input and its replies. One low- and one high-latency worker per node
# and no reinforcement thread: 2 * NODES worker threads on this machine.
write_conf() {
  cat >"$CONF" <<EOF
workers:
  low_latency: 1
  high_latency: 1
  reinforcement: 0
${IDLE_SPIN_US:+  idle_spin_us: ${IDLE_SPIN_US}}
shm:
  main: 32m
  client_data: 64m
  runtime_data: 32m
network:
  port: ${PORT}
EOF
  if [[ $1 == on ]]; then
    printf '  curve: true\n  curve_key_file: %s\n' "$KEY" >>"$CONF"
  fi
}

# One benchmark on a fresh cluster; $1: CURVE off or on, the rest goes to
# remote_benchmark. Its output is also kept in $WORK/bench_$1.out.
run_once() {
  local mode=$1 bench_rc=0 stop_rc=0
  shift
  write_conf "$mode"
  echo "== starting a $NODES-node cluster on ${HOSTS[0]}-${HOSTS[-1]}" \
    "port $PORT (rpc $((PORT + 1))), CURVE $mode, run dir $RUN"
  STARTED=1
  # (errexit does not apply inside a function called from `||`.)
  cluster start || return $?
  cluster status || return $?

  echo
  echo "== remote_benchmark $* (attached to node 1, ${HOSTS[0]}; CURVE $mode)"
  CHI_SERVER_CONF="$CONF" CHI_HOSTFILE="$HOSTFILE" \
    CHI_SERVER_ADDR="${HOSTS[0]}" \
    timeout --foreground -k 5 "$BENCH_TIMEOUT" "$BENCH" "$@" |
    tee "$WORK/bench_$mode.out" || bench_rc=${PIPESTATUS[0]}
  if ((bench_rc == 124 || bench_rc == 137)); then
    echo "run_remote_benchmark: remote_benchmark ran past ${BENCH_TIMEOUT} s" >&2
  fi

  echo
  echo "== stopping the cluster"
  cluster stop || stop_rc=$?
  if [[ -n $(our_runtimes) ]]; then
    echo "run_remote_benchmark: runtimes left after stop" >&2
    stop_rc=1
  fi
  STARTED=$((stop_rc == 0 ? 0 : 1))
  if ((bench_rc != 0)); then
    echo "run_remote_benchmark: remote_benchmark failed (exit $bench_rc)" >&2
    return "$bench_rc"
  fi
  return "$stop_rc"
}

# The value of $2 on the RESULT line of run $1's output (off or on).
result() {
  sed -n "s/^RESULT .*\b$2=\([0-9.]*\).*/\1/p" "$WORK/bench_$1.out" | tail -n 1
}

for mode in "${MODES[@]}"; do
  run_once "$mode" "$@" || exit $?
  echo
done

if [[ $CURVE == compare ]]; then
  echo "== CURVE on vs off ($NODES nodes on this machine, one run each)"
  awk -v a="$(result off remote_noop_p50_us)" \
    -v b="$(result on remote_noop_p50_us)" \
    -v c="$(result off echo_mb_per_s)" -v d="$(result on echo_mb_per_s)" '
    BEGIN {
      printf "  %-22s %12s %12s %8s\n", "metric", "CURVE off", "CURVE on",
        "on/off"
      printf "  %-22s %9.1f us %9.1f us %7.2fx\n", "remote no-op p50", a, b,
        (a > 0 ? b / a : 0)
      printf "  %-22s %7.1f MB/s %7.1f MB/s %7.3fx\n", "1 MiB echo", c, d,
        (c > 0 ? d / c : 0)
    }'
fi
