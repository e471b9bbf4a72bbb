#!/usr/bin/env bash
# Sanitizer runs, one command each:
#   bash scripts/sanitize.sh address   # ASan + UBSan, whole suite
#   bash scripts/sanitize.sh thread    # TSan, the lock-free parts
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-address}
case "$kind" in
  address) filter="" ;;
  # TSan covers the lock-free parts (queue, allocators, across processes)
  # and the runtime's own tests. It cannot see synchronisation that happens
  # in another process: a buffer freed by a client and reused by the runtime
  # looks like a race. Task hand-offs are annotated (hermes_shm/util/tsan.h);
  # the ChiMod suites, which recycle data buffers across processes and
  # threads, run under ASan only.
  thread) filter="MultiMpscQueue|AllocatorTest|ThreadLocalAllocator|Heap|ThreadModel|CrossProcess|RuntimeTest\\.|ContainerQueue|ModuleLoader|StackOverflow|Lightbeam|MultiNode|HostileTest|RuntimeLiveness|TaskGraph|Trace|LaneBalance|CostModel|BalanceTest|MigrateTest|UnwedgeTest|StopTest|PinTest|ModuleApiTest|HandshakeTest" ;;
  *) echo "usage: $0 address|thread" >&2; exit 2 ;;
esac
export BUILD_DIR=build-$kind BUILD_TYPE=RelWithDebInfo
bash scripts/install_deps.sh
bash scripts/build.sh -DCHIMAERA_SANITIZE="$kind" -DCHIMAERA_BUILD_BENCHMARKS=OFF
cd "$BUILD_DIR"
# Sanitized runtimes are several times slower: give test clusters more time
# before a busy node counts as dead (test/util/runtime_fixture.h).
export CHI_TEST_DEAD_AFTER_MS=4000
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/../scripts/tsan.supp"
# GCC 12's TSan cannot map its shadow memory under the larger address
# randomization of some newer kernels (vm.mmap_rnd_bits=32): run its tests
# without randomization (setarch is in util-linux, always installed).
RUN=()
if [ "$kind" = thread ] && setarch "$(uname -m)" -R true 2>/dev/null; then
  RUN=(setarch "$(uname -m)" -R)
fi
if [ -n "$filter" ]; then
  # The 100k-task workload test, the kvs cluster tests and the hostile
  # suite's volume tests (a 100k-subtask fan-out, a flood, 120 client
  # processes) only add volume (minutes under TSan); the other runtime and
  # hostile tests exercise the same paths. WorkloadToolsReportAFullMainSegment
  # fills `main` and has two client processes carve it up again: TSan then
  # takes the runtime's reads of block headers and task bytes that a client
  # wrote over a task a worker had written for a race (the client's side is
  # invisible to it); it checks the tools' counting, nothing concurrent.
  # Multi-node tests (every test that starts a LocalCluster: MultiNode,
  # Curve, Balance, Migrate, RemoteData: reply buffers freed on ZeroMQ's
  # I/O thread) run one at a time: a 3-node cluster under TSan
  # is a dozen threads slowed 5-15x, and two of them side by side on a
  # 2-core machine starve a node's heartbeats past the 4 s dead-node limit
  # and its requests past network.request_timeout_ms.
  # Both phases run even if the first fails; the script fails if either did.
  rc=0
  "${RUN[@]}" ctest -j "$(nproc)" --output-on-failure --timeout 600 -R "$filter" \
    -E "SeparateClientProcess100k|KvsMultiNode|MultiNode|CurveRuntime|^BalanceTest\\.|^MigrateTest\\.|OversizeFanOuts|QueueFlood|KilledClients|WorkloadToolsReportAFullMainSegment" ||
    rc=1
  "${RUN[@]}" ctest -j 1 --output-on-failure --timeout 600 \
    -R "MultiNode|CurveRuntime|^BalanceTest\\.|^MigrateTest\\.|^RemoteDataTest\\." \
    -E "KvsMultiNode" || rc=1
  exit "$rc"
else
  ctest -j "$(nproc)" --output-on-failure --timeout 600
fi
