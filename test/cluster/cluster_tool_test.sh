#!/usr/bin/env bash
# cluster_tool_test.sh BIN_DIR CHIMAERA_CLUSTER: runs scripts/chimaera_cluster
# in local mode on a three-node hostfile (127.0.0.[2-4], a free random port):
# start, status, chimaera_stat per node, kill -9 one node, status, restart of
# the down node only, stop, and checks that no runtime or shared-memory
# segment of this test is left. Safe to run in parallel with other tests.
set -euo pipefail

bin=$(cd "$1" && pwd -P)
tool=$2
unset CHI_SERVER_CONF CHI_HOSTFILE CHI_SERVER_ADDR
tmp=$(mktemp -d "${TMPDIR:-/tmp}/chimaera_cluster_test.XXXXXX")
export TMPDIR=$tmp
conf=$tmp/conf.yaml
hostfile=$tmp/hosts
run=$tmp/run
port=""
other=""  # a process that stands for another cluster's runtime

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
      grep -qxF "CHI_SERVER_CONF=$conf"; then
      echo "$pid"
    fi
  done
}

our_segments() {
  [[ -n $port ]] || return 0
  find /dev/shm -maxdepth 1 -name "chimaera_*_${port}_*" 2>/dev/null || true
}

# shellcheck disable=SC2317  # Runs from the EXIT trap.
cleanup() {
  local rc=$? pid
  for pid in $(our_runtimes); do kill -KILL "$pid" 2>/dev/null || true; done
  if [[ -n $other ]]; then kill -KILL "$other" 2>/dev/null || true; fi
  our_segments | xargs -r rm -f
  rm -rf "$tmp"
  if ((rc == 0)); then echo "PASS"; else echo "FAIL (rc $rc)"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM INT  # exits through cleanup (its timeout sends TERM)

fail() {
  local f
  echo "FAIL: $*" >&2
  for f in "$run"/node_*.log; do
    [[ -f $f ]] || continue
    echo "--- $f" >&2
    tail -n 20 "$f" >&2
  done
  exit 1
}

# Prints "OUTPUT\nrc=N" of the tool; never fails.
cluster() {
  local rc=0 out
  out=$("$tool" "$@" --hostfile "$hostfile" --conf "$conf" --bin "$bin" \
    --run-dir "$run" 2>&1) || rc=$?
  printf '%s\nrc=%d\n' "$out" "$rc"
}

expect_rc() {
  local want=$1 out=$2 what=$3
  local got=${out##*rc=}
  if [[ $want == nonzero ]]; then
    [[ $got != 0 ]] || fail "$what: exit 0, expected non-zero:"$'\n'"$out"
  else
    [[ $got == "$want" ]] || fail "$what: exit $got, expected $want:"$'\n'"$out"
  fi
}

expect_line() {
  local line=$1 out=$2 what=$3
  grep -qxF -- "$line" <<<"$out" || fail "$what: no line '$line' in:"$'\n'"$out"
}

pid_of() {
  local pid=""
  local rest=""
  read -r pid rest <"$run/node_$1.pid" || fail "no pid file for node $1"
  echo "$pid"
}

# A port P with P and P+1 (network.rpc_port 0 means port + 1) free on
# 127.0.0.1-4, and no shared-memory segments named for P.
port=$(python3 - <<'EOF'
import os, random, socket

def free(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()

names = os.listdir("/dev/shm") if os.path.isdir("/dev/shm") else []
hosts = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")
for _ in range(500):
    p = random.randint(20000, 59999)
    if any("_%d_" % p in n for n in names):
        continue
    if all(free(h, q) for h in hosts for q in (p, p + 1)):
        print(p)
        break
EOF
)
[[ -n $port ]] || fail "no free port found"
echo "port $port, dir $tmp"

echo '# three local nodes' >"$hostfile"
echo '127.0.0.[2-4]' >>"$hostfile"
cat >"$conf" <<EOF
shm: {main: 16m, client_data: 16m, runtime_data: 16m}
workers: {low_latency: 1, high_latency: 1, reinforcement: 0}
network: {port: $port}
EOF

# Range expansion (zero padding kept).
printf 'n[08-10]\nlocalhost # a comment\n' >"$tmp/hosts2"
out=$("$tool" hosts --hostfile "$tmp/hosts2")
[[ $out == $'node 1 n08\nnode 2 n09\nnode 3 n10\nnode 4 localhost' ]] ||
  fail "hosts: $out"
# Refused with a clear error: range numbers awk cannot count exactly (it
# printed n2147483647 twice), and a host ssh would take for an option.
printf 'n[2147483647-2147483648]\n' >"$tmp/hosts3"
out=$("$tool" hosts --hostfile "$tmp/hosts3" 2>&1) && fail "hosts3: $out"
[[ $out == *"at most 9 digits"* ]] || fail "hosts3: $out"
printf '127.0.0.1\n-oProxyCommand=x\n' >"$tmp/hosts4"
out=$("$tool" hosts --hostfile "$tmp/hosts4" 2>&1) && fail "hosts4: $out"
[[ $out == *"cannot begin with '-'"* ]] || fail "hosts4: $out"

# start: three nodes, each on its own entry. (A leading zero is decimal:
# bash arithmetic read 019 as a bad octal number and the script died.)
out=$(cluster start --timeout 019)
expect_rc 0 "$out" "start"
out=$(cluster status)
expect_rc 0 "$out" "status after start"
for i in 1 2 3; do
  expect_line "node $i 127.0.0.$((i + 1)) up" "$out" "status after start"
done
for i in 1 2 3; do
  host=127.0.0.$((i + 1))
  stat=$(CHI_SERVER_CONF=$conf CHI_HOSTFILE=$hostfile CHI_SERVER_ADDR=$host \
    "$bin/chimaera_stat" 2>&1) || fail "chimaera_stat of $host: $stat"
  [[ ${stat%%$'\n'*} == "node $i at $host:$port "* ]] ||
    fail "chimaera_stat of $host says: ${stat%%$'\n'*}"
done
pid1=$(pid_of 1)
pid2=$(pid_of 2)
pid3=$(pid_of 3)

# kill -9 node 2: status reports it down and fails.
kill -KILL "$pid2"
for ((i = 0; i < 50; i++)); do
  [[ -e /proc/$pid2 && $(awk '{ sub(/.*\) /, ""); print $1 }' \
    "/proc/$pid2/stat" 2>/dev/null) != Z ]] || break
  sleep 0.1
done
out=$(cluster status)
expect_rc nonzero "$out" "status after kill -9"
expect_line "node 1 127.0.0.2 up" "$out" "status after kill -9"
expect_line "node 2 127.0.0.3 down" "$out" "status after kill -9"
expect_line "node 3 127.0.0.4 up" "$out" "status after kill -9"

# start again: only node 2 is started; nodes 1 and 3 keep their runtimes.
out=$(cluster start)
expect_rc 0 "$out" "restart"
grep -q '^node 2 127.0.0.3 started' <<<"$out" || fail "restart: $out"
if grep -q '^node [13] .* started' <<<"$out"; then
  fail "restart started a running node: $out"
fi
[[ $(pid_of 1) == "$pid1" && $(pid_of 3) == "$pid3" ]] ||
  fail "restart replaced nodes 1 or 3"
if ! kill -0 "$pid1" || ! kill -0 "$pid3"; then fail "nodes 1 or 3 died"; fi
[[ $(pid_of 2) != "$pid2" ]] || fail "node 2 has its old pid"
out=$(cluster status)
expect_rc 0 "$out" "status after restart"
stat=$(CHI_SERVER_CONF=$conf CHI_HOSTFILE=$hostfile CHI_SERVER_ADDR=127.0.0.3 \
  "$bin/chimaera_stat" 2>&1) || fail "chimaera_stat of node 2: $stat"
[[ ${stat%%$'\n'*} == "node 2 at 127.0.0.3:$port "* ]] ||
  fail "restarted node 2 says: ${stat%%$'\n'*}"

# stop: all down, nothing left.
out=$(cluster stop)
expect_rc 0 "$out" "stop"
for i in 1 2 3; do
  expect_line "node $i 127.0.0.$((i + 1)) stopped" "$out" "stop"
done
out=$(cluster status)
expect_rc nonzero "$out" "status after stop"
for i in 1 2 3; do
  expect_line "node $i 127.0.0.$((i + 1)) down" "$out" "status after stop"
done
left=""
for ((i = 0; i < 20; i++)); do
  left=$(our_runtimes)
  [[ -n $left ]] || break
  sleep 0.1
done
[[ -z $left ]] || fail "runtimes left after stop: $left"
segs=$(our_segments)
[[ -z $segs ]] || fail "segments left after stop: $segs"
compgen -G "$run/node_*.pid" >/dev/null && fail "pid files left after stop"

# stop again: nothing to do, still success.
out=$(cluster stop)
expect_rc 0 "$out" "second stop"
expect_line "node 1 127.0.0.2 was not running" "$out" "second stop"

# A stale pid file whose pid now names another process called
# chimaera_start_runtime (another cluster's runtime, after pid reuse): stop
# and status leave it alone. Before, stop sent it SIGTERM and reported the
# node stopped.
ln -s "$(command -v sleep)" "$tmp/chimaera_start_runtime"
"$tmp/chimaera_start_runtime" 60 &
other=$!
echo "$other 1" >"$run/node_1.pid"  # written for a runtime started at tick 1
out=$(cluster status)
expect_line "node 1 127.0.0.2 down" "$out" "status with a stale pid file"
out=$(cluster stop)
expect_rc 0 "$out" "stop with a stale pid file"
expect_line "node 1 127.0.0.2 was not running" "$out" \
  "stop with a stale pid file"
kill -0 "$other" 2>/dev/null || fail "stop signalled another process"
exit 0
