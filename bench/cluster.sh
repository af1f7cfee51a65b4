#!/bin/bash
# Cluster mode's cost (issue 16, deliver 5): one process (embedded, SQLite) vs cluster mode with
# 1, 2 and 3 replicas on a 3-node NATS JetStream cluster (R3 stream and bucket), all on this
# machine, in one run:
#   - saturation: closed loop, 64 conversations split over one load generator per replica;
#   - equal load: open loop at RATE turns/s (soak mode, 200 conversations on 6 streams spread
#     over the replicas), p50/p99 latency, the CPU seconds per 1,000 turns of the service
#     processes and of the NATS nodes, and the messages and KB in and out of the three NATS
#     nodes per turn (their /varz: client and route traffic, replication included), and the
#     mean size of a conversation's committed state in the bucket at the end (its /jsz).
#   bash bench/cluster.sh [RATE=100] [SECS=20] [DATA=tests/data/goemotions/test.tsv]
# EMOTION_BIN: another build of `emotion` (an A/B of two commits). MODES: the rows, default
# "solo:1 c1:1 c2:2 c3:3" (mode:replicas). SATURATION=0 skips the closed-loop column (an A/B of
# the equal-load cost alone). CUSTOMERS=N: conversations
# belong to N customers (`loadgen --customers`; customer memory is on, each replica with its own
# copy and key file under the work dir, the fleet's pseudonym key from NATS).
# Needs `cargo build --release` and the nats-server binary the tests fetch
# (target/nats-server-2.15.1/nats-server, or $NATS_SERVER). Work dir: $BENCH_DIR or a new
# temporary directory. Every process it starts is stopped by PID at the end.
# Scaling on a bigger machine (the 16-core device machine): CORES_PER_REPLICA=C pins replica i to
# cores C*i .. C*i+C-1 (modulo the machine's cores; taskset) and sizes its inference to C cores,
# as a pod with a CPU limit would be; the NATS nodes and load generators are not pinned.
# SAT_PER_REPLICA=K: the closed loop runs K conversations per replica (default: 64 in all).
set -u
CUSTOMERS=${CUSTOMERS:-0}
CORES_PER_REPLICA=${CORES_PER_REPLICA:-0}
SAT_PER_REPLICA=${SAT_PER_REPLICA:-0}
MODES=${MODES:-solo:1 c1:1 c2:2 c3:3}
SATURATION=${SATURATION:-1}
CUSTOMER_ARGS=$([ "$CUSTOMERS" -gt 0 ] && echo "--customers $CUSTOMERS")
RATE=${1:-100}
SECS=${2:-20}
DATA=$(realpath "${3:-tests/data/goemotions/test.tsv}")
B=$(realpath "${EMOTION_BIN:-target/release/emotion}")
NATS=${NATS_SERVER:-$(realpath target/nats-server-2.15.1/nats-server)}
[ -x "$NATS" ] || { echo "no nats-server at $NATS (run the cluster tests once, or set NATS_SERVER)"; exit 1; }
WORK=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$WORK"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT
echo "work dir $WORK; customers $CUSTOMERS; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%F)"

calc() { awk "BEGIN { print $1 }"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# CPU seconds (user + system) of a process so far.
cpu() { awk -v t="$(getconf CLK_TCK)" '{print ($14 + $15) / t}' "/proc/$1/stat" 2>/dev/null || echo 0; }
sum_cpu() { local s=0; for p in "$@"; do s=$(calc "$s + $(cpu "$p")"); done; echo "$s"; }

# 3 NATS nodes.
NPORTS=(); RPORTS=(); MPORTS=()
for i in 0 1 2; do NPORTS+=("$(free_port)"); RPORTS+=("$(free_port)"); MPORTS+=("$(free_port)"); done
# Messages and bytes into and out of the three nodes so far (their /varz), summed.
nats_io() {
  python3 - "${MPORTS[@]}" <<'PY'
import json, sys, urllib.request
t = [0, 0]
for port in sys.argv[1:]:
    v = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/varz", timeout=5))
    t[0] += v["in_msgs"] + v["out_msgs"]; t[1] += v["in_bytes"] + v["out_bytes"]
print(*t)
PY
}
# The mean size of the values in the conversation bucket of prefix $1, in KB (its /jsz).
state_kb() {
  python3 - "${MPORTS[0]}" "KV_$1-conversations" <<'PY'
import json, sys, urllib.request
j = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/jsz?streams=true", timeout=5))
for acc in j.get("account_details", []):
    for st in acc.get("stream_detail", []):
        if st["name"] == sys.argv[2] and st["state"]["messages"]:
            print(round(st["state"]["bytes"] / st["state"]["messages"] / 1024, 1)); sys.exit()
print("-")
PY
}
NATS_PIDS=()
for i in 0 1 2; do
  routes=""
  for j in 0 1 2; do [ "$j" != "$i" ] && routes="$routes\"nats-route://127.0.0.1:${RPORTS[$j]}\", "; done
  cat > "$WORK/n$i.conf" <<EOF
server_name: n$i
listen: 127.0.0.1:${NPORTS[$i]}
http: 127.0.0.1:${MPORTS[$i]}
jetstream { store_dir: "$WORK/n$i", max_memory_store: 64MB, max_file_store: 1GB }
cluster { name: bench, listen: 127.0.0.1:${RPORTS[$i]}, routes: [${routes%, }] }
EOF
  "$NATS" -c "$WORK/n$i.conf" > "$WORK/n$i.log" 2>&1 &
  NATS_PIDS+=($!); PIDS+=($!)
done
NATS_URLS="[\"nats://127.0.0.1:${NPORTS[0]}\", \"nats://127.0.0.1:${NPORTS[1]}\", \"nats://127.0.0.1:${NPORTS[2]}\"]"
sleep 3

# start_replicas MODE N: N servers (MODE solo: embedded, else cluster with prefix MODE).
start_replicas() {
  URLS=(); SPIDS=()
  for i in $(seq 0 $(($2 - 1))); do
    local port; port=$(free_port)
    local dir="$WORK/$1-r$i"; mkdir -p "$dir"
    export EMOTION__CUSTOMERS__PATH=$dir/customers.sqlite3 EMOTION__CUSTOMERS__KEY_FILE=$dir/customer.key
    local pin=()
    if [ "$CORES_PER_REPLICA" -gt 0 ]; then
      local first=$(((CORES_PER_REPLICA * i) % $(nproc)))
      pin=(taskset -c "$first-$((first + CORES_PER_REPLICA - 1))")
      export EMOTION__MODEL__INTRA_THREADS=$(((CORES_PER_REPLICA + 1) / 2)) EMOTION__MODEL__SOLO_THREADS=$CORES_PER_REPLICA
    fi
    if [ "$1" = solo ]; then
      EMOTION__ALERT_LOG__PATH=$dir/alerts.sqlite3 EMOTION__STATE__PATH=$dir/state.sqlite3 \
        "${pin[@]}" "$B" serve --listen 127.0.0.1:$port --metrics-listen "" --web-listen "" > "$dir/serve.log" 2>&1 &
    else
      EMOTION__ALERT_LOG__PATH=$dir/alerts.sqlite3 EMOTION__CLUSTER__NATS="$NATS_URLS" \
      EMOTION__CLUSTER__PREFIX="$1" EMOTION__CLUSTER__REPLICA_ID="$1-r$i" EMOTION__CLUSTER__REPLICAS=3 \
        "${pin[@]}" "$B" serve --listen 127.0.0.1:$port --metrics-listen "" --web-listen "" > "$dir/serve.log" 2>&1 &
    fi
    SPIDS+=($!); PIDS+=($!); URLS+=("http://127.0.0.1:$port")
    for _ in $(seq 300); do grep -q "serving gRPC" "$dir/serve.log" && break; sleep 0.2; done
    grep -q "serving gRPC" "$dir/serve.log" || { echo "$1 replica $i did not start:"; tail -5 "$dir/serve.log"; exit 1; }
  done
}
stop_replicas() { for p in "${SPIDS[@]}"; do kill "$p"; done; for p in "${SPIDS[@]}"; do wait "$p" 2>/dev/null; done; }

SAT_CONV=$([ "$SAT_PER_REPLICA" -gt 0 ] && echo "$SAT_PER_REPLICA conv per replica" || echo "64 conv")
printf '\n| mode | replicas | saturation turns/s (closed loop, %s) | open loop turns/s | p50 ms | p99 ms | lost / errors | service CPU s per 1k turns | NATS CPU s per 1k turns | NATS messages per turn | NATS KB per turn | state KB (mean in the bucket) |\n|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|\n' "$SAT_CONV"
for spec in $MODES; do
  MODE=${spec%%:*}; N=${spec##*:}
  start_replicas "$MODE" "$N"
  # Saturation: one closed-loop generator per replica, 64 conversations in all.
  SAT=0; LPIDS=()
  [ "$SATURATION" = 1 ] && for u in "${URLS[@]}"; do
    "$B" loadgen --server "$u" --data "$DATA" --conversations $([ "$SAT_PER_REPLICA" -gt 0 ] && echo "$SAT_PER_REPLICA" || echo $((64 / N))) --streams 2 --duration-secs "$SECS" $CUSTOMER_ARGS > "$WORK/$MODE-sat-${u##*:}.txt" 2>&1 &
    LPIDS+=($!)
  done
  [ ${#LPIDS[@]} -gt 0 ] && wait "${LPIDS[@]}"
  [ "$SATURATION" = 1 ] && for u in "${URLS[@]}"; do
    t=$(grep -o '[0-9.]* turns/s' "$WORK/$MODE-sat-${u##*:}.txt" | tail -1 | cut -d' ' -f1)
    SAT=$(calc "$SAT + ${t:-0}")
  done
  # Equal load, open loop.
  C0=$(sum_cpu "${SPIDS[@]}"); N0=$(sum_cpu "${NATS_PIDS[@]}"); read -r M0 K0 < <(nats_io)
  FAILOVER=$(IFS=,; echo "${URLS[*]:1}")
  "$B" loadgen --soak --server "${URLS[0]}" ${FAILOVER:+--failover "$FAILOVER"} --data "$DATA" \
    --conversations 200 --streams 6 --rate "$RATE" --duration-secs "$SECS" --turns-per-conversation 40 \
    --report-every-secs "$SECS" $CUSTOMER_ARGS > "$WORK/$MODE-open.txt" 2>&1
  C1=$(sum_cpu "${SPIDS[@]}"); N1=$(sum_cpu "${NATS_PIDS[@]}"); read -r M1 K1 < <(nats_io)
  TOTAL=$(grep '^total:' "$WORK/$MODE-open.txt")
  ANS=$(echo "$TOTAL" | grep -o 'answered [0-9]*' | cut -d' ' -f2)
  LOST=$(echo "$TOTAL" | grep -o 'lost [0-9]*' | cut -d' ' -f2)
  ERR=$(echo "$TOTAL" | grep -o 'errors [0-9]*' | head -1 | cut -d' ' -f2)
  P50=$(echo "$TOTAL" | grep -o 'p50 [0-9.]*' | cut -d' ' -f2)
  P99=$(echo "$TOTAL" | grep -o 'p99 [0-9.]*' | cut -d' ' -f2)
  printf '| %s | %d | %.0f | %.0f | %s | %s | %s / %s | %.2f | %.2f | %.1f | %.1f | %s |\n' \
    "$([ "$MODE" = solo ] && echo 'one process (SQLite)' || echo 'cluster')" "$N" "$SAT" \
    "$(calc "${ANS:-0} / $SECS")" "$P50" "$P99" "$LOST" "$ERR" \
    "$(calc "($C1 - $C0) * 1000 / ${ANS:-1}")" "$(calc "($N1 - $N0) * 1000 / ${ANS:-1}")" \
    "$(calc "($M1 - $M0) / ${ANS:-1}")" "$(calc "($K1 - $K0) / 1024 / ${ANS:-1}")" "$(state_kb "$MODE")"
  stop_replicas
done
echo "(load after: $(cut -d' ' -f1-3 /proc/loadavg); logs in $WORK)"
