#!/usr/bin/env bash
# The main job: install dependencies, build, start a runtime on the embedded
# default configuration, run a client workload against it, stop the runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
BIN=build/src/chimaera
unset CHI_SERVER_CONF
"$BIN/chimaera_start_runtime" &
RT=$!
trap 'kill $RT 2>/dev/null || true; wait $RT 2>/dev/null || true' EXIT
# Wait (bounded) until the runtime answers.
for _ in $(seq 1 100); do
  "$BIN/chimaera_stat" >/dev/null 2>&1 && break
  kill -0 $RT 2>/dev/null || { echo "runtime exited early" >&2; exit 1; }
  sleep 0.1
done
"$BIN/chimaera_workload" --threads 4 --tasks 400000 --window 256
"$BIN/chimaera_stat"
"$BIN/chimaera_stop_runtime"
wait $RT
trap - EXIT
