#!/usr/bin/env bash
# Side-by-side service runs in one go, interleaved (A B A B ...), each a fresh server on fresh
# files under the same closed-loop load; prints turns/s, latency and RSS per run.
#
# Usage: bash bench/ab.sh REPS DATA NAME=BINARY[,VAR=VALUE...] NAME=BINARY[,VAR=VALUE...] ...
#   VAR=VALUE pairs are environment overrides for that server (EMOTION__SECTION__KEY=...).
# Example (state persisting on vs off, BENCHMARKS.md "Hardening"):
#   bash bench/ab.sh 3 tests/data/goemotions/test.tsv \
#     on=target/release/emotion off=target/release/emotion,EMOTION__STATE__PATH=
# Load: CONVERSATIONS (64) conversations over STREAMS (4) streams for SECS (10) seconds each,
# from each variant's own `emotion loadgen` unless LOADGEN names one binary for all.
set -u
cd "$(dirname "$0")/.."
reps=$1 data=$2
shift 2
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
port=50200
for rep in $(seq "$reps"); do
  for variant in "$@"; do
    name=${variant%%=*}
    rest=${variant#*=}
    IFS=, read -r -a parts <<< "$rest"
    bin=${parts[0]}
    envs=("EMOTION__ALERT_LOG__PATH=$W/alerts-$port.sqlite3" "EMOTION__STATE__PATH=$W/state-$port.sqlite3")
    envs+=("${parts[@]:1}")
    port=$((port + 1))
    env "${envs[@]}" "$bin" serve --listen 127.0.0.1:$port --metrics-listen "" --web-listen "" \
      > "$W/serve-$port.log" 2>&1 &
    pid=$!
    for _ in $(seq 240); do grep -q "serving gRPC" "$W/serve-$port.log" && break; sleep 0.5; done
    sleep 1
    echo "== $name (rep $rep; idle RSS $(awk '/VmRSS/{print $2}' /proc/$pid/status) kB)"
    "${LOADGEN:-$bin}" loadgen --server http://127.0.0.1:$port --data "$data" \
      --conversations "${CONVERSATIONS:-64}" --streams "${STREAMS:-4}" \
      --duration-secs "${SECS:-10}" --server-pid $pid 2>&1 | grep -v INFO | tail -2
    kill $pid
    wait $pid 2>/dev/null
  done
done
