#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan) in build-fuzz and runs
# each for a bounded time over a temporary copy of its seed corpus in
# test/fuzz/corpus/<target> (the repository's corpus never grows):
#   bash scripts/fuzz.sh                  # every target, 60 s each
#   FUZZ_SECONDS=600 bash scripts/fuzz.sh hostfile
# Targets: net_decoder, config, hostfile. Exits non-zero if any target finds
# a crash, a sanitizer report, an input taking over FUZZ_TIMEOUT s (25: a
# hostfile may expand to 1M hosts, seconds under ASan) or more than
# FUZZ_RSS_MB (2048) of memory; the reproducer is kept in build-fuzz/artifacts/
# (replay: build-fuzz/test/fuzz/fuzz_<target> FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
per_input=${FUZZ_TIMEOUT:-25}
rss_mb=${FUZZ_RSS_MB:-2048}
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(net_decoder config hostfile)
build=build-fuzz

bash scripts/install_deps.sh
GEN=()
# A generator only for a new build directory (CMake keeps the first one).
if [ ! -f "$build/CMakeCache.txt" ] && command -v ninja >/dev/null; then
  GEN=(-G Ninja)
fi
cmake -S . -B "$build" "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCHIMAERA_ENABLE_CMAKE_DOTENV=ON \
  -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 \
  -DCHIMAERA_FUZZ=ON -DCHIMAERA_BUILD_TESTS=OFF \
  -DCHIMAERA_BUILD_BENCHMARKS=OFF -DCHIMAERA_BUILD_CHIMODS=OFF >/dev/null
cmake --build "$build" -j "$(nproc)" --target chimaera_fuzzers

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$build/artifacts"
export ASAN_OPTIONS=abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
passed=0
failed=0
for t in "${targets[@]}"; do
  bin="$build/test/fuzz/fuzz_$t"
  if [ ! -x "$bin" ] || [ ! -d "test/fuzz/corpus/$t" ]; then
    echo "fuzz.sh: unknown target '$t'" >&2
    exit 2
  fi
  cp -r "test/fuzz/corpus/$t" "$work/$t"
  log="$work/$t.log"
  rc=0
  "$bin" "$work/$t" -max_total_time="$seconds" -timeout="$per_input" \
    -rss_limit_mb="$rss_mb" -max_len=4096 -print_final_stats=1 \
    -artifact_prefix="$build/artifacts/$t-" >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    echo "fuzz $t: ok, ${runs:-?} runs in ${seconds} s (${rate:-?} exec/s)"
  else
    failed=$((failed + 1))
    echo "fuzz $t: FAILED (exit $rc) after ${runs:-?} runs; log tail:"
    tail -n 60 "$log"
    ls -1 "$build/artifacts/$t-"* 2>/dev/null | sed 's/^/  reproducer: /'
  fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
