#!/bin/bash
# Agent assist under load (issue 17 targets), one server, one run, side by side:
#   1. saturation, closed loop, CONV conversations: no agents (no guidance at all), then every
#      conversation served by one of AGENTS agents with a SubscribeAssist open for every agent;
#   2. open loop at half of row 1's saturation, with agents and their subscriptions: the delay
#      from each turn's result to its guidance events on the agent's stream (p50 / p99 / max).
#   bash bench/assist.sh [CONV=1000] [AGENTS=100] [SECS=30] [DATA=tests/data/goemotions/test.tsv]
# Needs `cargo build --release`. Work dir: $BENCH_DIR or a new temporary directory. The server
# it starts is stopped by PID at the end.
set -u
CONV=${1:-1000}
AGENTS=${2:-100}
SECS=${3:-30}
DATA=$(realpath "${4:-tests/data/goemotions/test.tsv}")
B=$(realpath target/release/emotion)
WORK=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$WORK"
echo "work dir $WORK; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); $(nproc) cores; load before $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%F)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
GRPC=$(free_port)
EMOTION__SERVER__LISTEN=127.0.0.1:$GRPC EMOTION__SERVER__WEB_LISTEN="" EMOTION__SERVER__METRICS_LISTEN="" \
  EMOTION__ALERT_LOG__PATH="$WORK/alerts.sqlite3" EMOTION__STATE__PATH="$WORK/state.sqlite3" \
  EMOTION__LIMITS__MAX_CONVERSATIONS=100000 \
  "$B" serve > "$WORK/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait 2>/dev/null' EXIT
for _ in $(seq 1 120); do "$B" health --server "http://127.0.0.1:$GRPC" > /dev/null 2>&1 && break; sleep 1; done
run() { "$B" loadgen --server "http://127.0.0.1:$GRPC" --data "$DATA" --conversations "$CONV" --streams 8 \
  --duration-secs "$SECS" --server-pid "$PID" "$@" | tee -a "$WORK/loadgen.log"; }
tps() { grep -o '[0-9.]* turns/s' | head -1 | cut -d' ' -f1; }
echo "== closed loop, no agents"
A=$(run | tps)
echo "== closed loop, $AGENTS agents, SubscribeAssist for every agent"
G=$(run --agents "$AGENTS" --assist | tps)
echo "== open loop at half saturation ($(echo "$A / 2" | bc) turns/s), $AGENTS agents with SubscribeAssist"
run --agents "$AGENTS" --assist --rate "$(echo "$A / 2" | bc)" > /dev/null
tail -2 "$WORK/loadgen.log" | head -1
echo "saturation: no agents $A turns/s; with assist for every agent $G turns/s ($(echo "scale=1; 100 * ($G - $A) / $A" | bc)%)"
echo "load after $(cut -d' ' -f1-3 /proc/loadavg)"
