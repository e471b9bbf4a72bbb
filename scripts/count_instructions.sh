#!/usr/bin/env bash
# Counts the instructions the local hot path spends per task, with
# callgrind (valgrind), which -- unlike timings -- the machine's speed
# changes do not blur. Two runs of chimaera_benchmark's throughput phase
# (1 client thread, 256 Noops in flight):
#
#   runtime  the runtime under callgrind, the client native: instructions
#            per task of the worker loop (Worker::Loop, inclusive: polling,
#            admission, run, completion); tasks = calls of AdmitShm
#   client   the client under callgrind, the runtime native: instructions
#            per task of NewMethodTask (allocate + build), IpcManager::Send
#            and Reap (wait + DelTask); tasks = calls of Send
#
# Spin loops (an idle worker polling, a client waiting) add a little noise:
# repeat runs agree to within a few percent. Needs valgrind (apt-get install
# valgrind) and python3. The runtime, its config and its segments are
# removed however the script ends.
#
# Environment:
#   BUILD_DIR  build directory (default: build; a Release build)
#   PORT       runtime port (default: 19960; the runtime also takes PORT+1)
#   SECONDS_   seconds of throughput per run (default: 1.5)
#   OUT_DIR    where the callgrind files go (default: a new temporary dir)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build}
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac
PORT=${PORT:-19960}
SECS=${SECONDS_:-1.5}
command -v valgrind >/dev/null || {
  echo "count_instructions: needs valgrind (apt-get install valgrind)" >&2
  exit 1
}
BIN="$BUILD_DIR/src/chimaera"
BENCH="$BUILD_DIR/benchmark/chimaera_benchmark"
for exe in "$BIN/chimaera_start_runtime" "$BIN/chimaera_stop_runtime" \
  "$BIN/chimaera_stat" "$BENCH"; do
  [[ -x "$exe" ]] || { echo "count_instructions: missing $exe" >&2; exit 1; }
done
# shellcheck source=scripts/runtime_lib.sh
source scripts/runtime_lib.sh
if [[ -z "${OUT_DIR:-}" ]]; then
  OUT_DIR=$(mktemp -d /tmp/chimaera_icount.XXXXXX)
fi
mkdir -p "$OUT_DIR"
WORK=$(mktemp -d /tmp/chimaera_icount_rt.XXXXXX)
chi_cleanup_on_exit "$WORK"
export CHI_SERVER_CONF="$WORK/chimaera.yaml"
printf 'workers:\n  low_latency: 1\n  high_latency: 1\n  reinforcement: 0\nnetwork:\n  port: %s\n' \
  "$PORT" >"$CHI_SERVER_CONF"
BENCH_ARGS=(--phases throughput --depths 256 --client-threads 1 -s "$SECS" -r 1)

# Waits (at most 60 s: callgrind starts slowly) until chimaera_stat answers.
wait_runtime() {
  for _ in $(seq 300); do
    kill -0 "$RT_PID" 2>/dev/null || {
      echo "count_instructions: runtime exited:" >&2
      cat "$WORK/rt.log" >&2
      exit 1
    }
    if timeout 5 "$BIN/chimaera_stat" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "count_instructions: runtime did not answer" >&2
  exit 1
}

echo "count_instructions: runtime under callgrind"
RT_PORT=$PORT
valgrind --tool=callgrind --callgrind-out-file="$OUT_DIR/runtime.cg" \
  "$BIN/chimaera_start_runtime" >"$WORK/rt.log" 2>&1 &
RT_PID=$!
wait_runtime
"$BENCH" "${BENCH_ARGS[@]}" | grep -E "in flight" || true
chi_stop_runtime

echo "count_instructions: client under callgrind"
chi_start_runtime "$PORT" "$WORK/rt2.log" count_instructions
valgrind --tool=callgrind --callgrind-out-file="$OUT_DIR/client.cg" \
  "$BENCH" "${BENCH_ARGS[@]}" >"$WORK/client.log" 2>&1
chi_stop_runtime

python3 - "$OUT_DIR/runtime.cg" "$OUT_DIR/client.cg" <<'EOF'
import collections, re, subprocess, sys

def load(path):
    """Per-function inclusive costs (callgrind_annotate) and call counts."""
    names, calls, cur = {}, collections.Counter(), None
    with open(path) as f:
        for line in f:
            m = re.match(r'(c?fn)=\((\d+)\)(?: (.*))?', line)
            if m:
                kind, fid, name = m.groups()
                if name:
                    names[fid] = name.strip()
                if kind == 'cfn':
                    cur = fid
                continue
            m = re.match(r'calls=(\d+)', line)
            if m and cur:
                calls[names.get(cur, cur)] += int(m.group(1))
    out = subprocess.run(['callgrind_annotate', '--inclusive=yes', path],
                         capture_output=True, text=True, check=True).stdout
    incl = {}
    for line in out.splitlines():
        m = re.match(r'\s*([\d,]+) \([^)]*\)\s+\S*?:(.*?) \[', line)
        if m:
            incl.setdefault(m.group(2), int(m.group(1).replace(',', '')))
    return incl, calls

def report(path, task_fn, rows):
    incl, calls = load(path)
    tasks = sum(n for f, n in calls.items() if task_fn in f)
    print(f'{path}: {tasks} tasks')
    for label, pat in rows:
        # The largest match: a recursive function is listed once more
        # (name'2) with part of the same cost.
        cost = max((v for f, v in incl.items() if re.search(pat, f)),
                   default=0)
        print(f'  {label:34s} {cost / max(tasks, 1):8.0f} instructions/task')

report(sys.argv[1], 'chi::Worker::AdmitShm(', [
    ('worker loop (Worker::Loop)', r'^chi::Worker::Loop\(\)$'),
])
report(sys.argv[2], 'chi::IpcManager::Send(', [
    ('build (NewMethodTask)', r'NewMethodTask<'),
    ('submit (IpcManager::Send)', r'^chi::IpcManager::Send\('),
    ('wait + free (Reap)', r'Reap<'),
])
EOF
echo "count_instructions: callgrind files in $OUT_DIR"
