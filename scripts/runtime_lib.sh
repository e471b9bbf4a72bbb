# shellcheck shell=bash
# Shared by the benchmark scripts (source it): start and stop a private
# Chimaera runtime. The caller sets BIN (the directory that holds
# chimaera_start_runtime, chimaera_stop_runtime and chimaera_stat) and
# exports CHI_SERVER_CONF; these functions set and clear RT_PID and RT_PORT.

# Starts the runtime CHI_SERVER_CONF describes (its port is $1), logging to
# $2, and waits until chimaera_stat answers (at most ~20 s). If it exits or
# stays silent, prints its log under the caller's name $3 and exits 1 (the
# caller's EXIT trap cleans up).
chi_start_runtime() {
  local port=$1 log=$2 who=$3
  RT_PORT=$port
  "$BIN/chimaera_start_runtime" >"$log" 2>&1 &
  RT_PID=$!
  for _ in $(seq 100); do
    if ! kill -0 "$RT_PID" 2>/dev/null; then
      echo "$who: runtime exited at start:" >&2
      cat "$log" >&2
      exit 1
    fi
    if timeout 5 "$BIN/chimaera_stat" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "$who: runtime did not answer within 20 s:" >&2
  cat "$log" >&2
  exit 1
}

# Stops runtime RT_PID if it still runs (politely, then by force), reaps it
# and removes the shared-memory segments of port RT_PORT. Safe to call
# twice and from an EXIT trap.
chi_stop_runtime() {
  if [[ -n "${RT_PID:-}" ]] && kill -0 "$RT_PID" 2>/dev/null; then
    timeout 20 "$BIN/chimaera_stop_runtime" --timeout 10 >/dev/null 2>&1 || true
    kill -TERM "$RT_PID" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$RT_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$RT_PID" 2>/dev/null || true
  fi
  if [[ -n "${RT_PID:-}" ]]; then wait "$RT_PID" 2>/dev/null || true; fi
  if [[ -n "${RT_PORT:-}" ]]; then
    rm -f /dev/shm/chimaera_*"_${RT_PORT}_"* 2>/dev/null || true
  fi
  RT_PID=""
  RT_PORT=""
}

# Installs the caller's EXIT trap: stop the runtime if it still runs
# (chi_stop_runtime: also removes its segments) and remove the directory $1
# (configs, logs), keeping the script's exit status; Ctrl-C and TERM exit
# with 130 through the same trap.
chi_cleanup_on_exit() {
  CHI_CLEANUP_DIR=$1
  trap _chi_cleanup EXIT
  trap 'exit 130' INT TERM
}

# The EXIT trap of chi_cleanup_on_exit.
_chi_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  chi_stop_runtime
  rm -rf "$CHI_CLEANUP_DIR"
  exit "$rc"
}
