#!/usr/bin/env bash
# The main job: install dependencies, build, start a local 3-node cluster
# (three runtimes on 127.0.0.2-4, the embedded default configuration plus a
# hostfile), run a client workload whose tasks cross nodes, print each node's
# state and stop the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
BIN=build/src/chimaera
KVS=build/chimods/kvs/chimaera_kvs_workload
unset CHI_SERVER_CONF CHI_SERVER_ADDR CHI_NODE_ID
RUN=$(mktemp -d)
HOSTS=$RUN/hostfile
echo "127.0.0.[2-4]" >"$HOSTS"
export CHI_HOSTFILE=$HOSTS
cluster() { bash scripts/chimaera_cluster "$1" --hostfile "$HOSTS" --bin "$BIN" --run-dir "$RUN"; }
trap 'cluster stop >/dev/null 2>&1 || true; rm -rf "$RUN"' EXIT
cluster start
cluster status
# Echo tasks: local, to the next node, and broadcast to all three; then a
# kvs pool spread over the nodes: written through node 1, read through 2.
CHI_SERVER_ADDR=127.0.0.2 "$BIN/chimaera_workload" --threads 2 --tasks 200000 --window 256
CHI_SERVER_ADDR=127.0.0.2 "$KVS" put --keys 100000
CHI_SERVER_ADDR=127.0.0.3 "$KVS" get --keys 100000
for h in 127.0.0.2 127.0.0.3 127.0.0.4; do
  echo "=== chimaera_stat of $h"
  CHI_SERVER_ADDR=$h "$BIN/chimaera_stat"
done
cluster stop
trap 'rm -rf "$RUN"' EXIT
