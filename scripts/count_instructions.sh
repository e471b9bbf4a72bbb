#!/usr/bin/env bash
# Counts the instructions the local hot path spends per task, with
# callgrind (valgrind), which -- unlike timings -- the machine's speed
# changes do not blur. Two runs of chimaera_benchmark's throughput phase
# (1 client thread, 256 Noops in flight):
#
#   runtime  the runtime under callgrind (one file per thread), the client
#            native: every instruction of the worker thread that admitted
#            the tasks (polling, admission, run, completion) per task,
#            and the part of it spent from admission to completion (the
#            polling share varies with how many tasks one poll finds);
#            tasks = its calls of Worker::AdmitShm
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
#   BUILD_DIR  build directory (default: build; a Release build; the
#              admission figure needs one configured with
#              -DCMAKE_CXX_FLAGS=-g, which leaves the code as it is)
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
OUT_DIR=$(cd "$OUT_DIR" && pwd)  # absolute: the report reads it from '/'
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
valgrind --tool=callgrind --separate-threads=yes \
  --callgrind-out-file="$OUT_DIR/runtime.cg" \
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

python3 - "$OUT_DIR" <<'EOF'
import collections, glob, re, subprocess, sys

def load(path):
    """Call counts per function name, and the file's total instructions."""
    names, calls, cur, total = {}, collections.Counter(), None, 0
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
                continue
            m = re.match(r'(?:summary|totals): (\d+)', line)
            if m:
                total = max(total, int(m.group(1)))
    return calls, total

def inclusive(path, pattern, file_pattern=''):
    """Largest inclusive cost of a function matching `pattern` (its lines in
    a file matching `file_pattern`: code inlined from elsewhere is listed
    under the other file's name, sometimes with a blurred cost)."""
    # From '/': run in the source tree, callgrind_annotate names inlined
    # code by relative paths and splits a function's lines in two.
    out = subprocess.run(['callgrind_annotate', '--inclusive=yes', path],
                         capture_output=True, text=True, check=True,
                         cwd='/').stdout
    best = 0
    for line in out.splitlines():
        m = re.match(r'\s*([\d,]+) \([^)]*\)\s+(\S*?):(.*?) \[', line)
        if (m and re.search(pattern, m.group(3)) and
                re.search(file_pattern, m.group(2))):
            best = max(best, int(m.group(1).replace(',', '')))
    return best

def tasks_of(calls, fn):
    return sum(n for f, n in calls.items() if f.startswith(fn))

# Runtime: every instruction of the worker thread that admitted the tasks
# (polling, admission, run, completion) per task. Whole-thread totals:
# fiber switches can make callgrind see call cycles that blur inclusive
# costs there.
best = None
for path in glob.glob(sys.argv[1] + '/runtime.cg*'):
    calls, total = load(path)
    n = tasks_of(calls, 'chi::Worker::AdmitShm(')
    if n and (best is None or n > best[1]):
        best = (path, n, total)
if best:
    path, n, total = best
    print(f'{path}: {n} tasks')
    print(f'  {"worker thread (all it ran)":34s} {total / n:8.0f} '
          'instructions/task')
    # The polling share of the total depends on how many tasks one poll
    # finds, which varies from run to run; one task's admission, run and
    # completion (a Noop never switches fibers) does not.
    admit = inclusive(path, r'^chi::Worker::AdmitShm[(]', r'worker[.]cc$')
    if admit:
        print(f'  {"  of which admit + run + complete":34s} {admit / n:8.0f} '
              'instructions/task')
    else:
        # Without line info callgrind names no file, so the figure cannot
        # be told from the call cycles that fiber switches make.
        print('  (admit + run + complete: needs a build with debug info, '
              'e.g. cmake -DCMAKE_CXX_FLAGS=-g)')

path = sys.argv[1] + '/client.cg'
calls, _ = load(path)
n = tasks_of(calls, 'chi::IpcManager::Send(')
print(f'{path}: {n} tasks')
for label, pat in [('build (NewMethodTask)', r'NewMethodTask<'),
                   ('submit (IpcManager::Send)', r'^chi::IpcManager::Send\('),
                   ('wait + free (Reap)', r'Reap<')]:
    print(f'  {label:34s} {inclusive(path, pat) / max(n, 1):8.0f} '
          'instructions/task')
EOF
echo "count_instructions: callgrind files in $OUT_DIR"
