#!/usr/bin/env bash
# Memory per conversation and the dashboard's endpoint latencies while the conversations are held:
# CONVS conversations (default 10,000) sharing TURNS turns (default 100,000) at 400 turns/s.
#   bash bench/dashboard_load.sh                              # 10,000 ten-turn conversations
#   CONVS=100000 TURNS=100000 bash bench/dashboard_load.sh    # 100,000 one-turn conversations
# Needs `cargo build --release` and GoEmotions beside the repository (or D=path/to/test.tsv).
set -euo pipefail
cd "$(dirname "$0")/.."
D=${D:-../shared/datasets/goemotions/test.tsv}
B=target/release/emotion
WORK=$(mktemp -d)
EMOTION__LIMITS__MAX_CONVERSATIONS=200000 EMOTION__ALERT_LOG__PATH="\"$WORK/alerts.sqlite3\"" \
  $B serve --listen 127.0.0.1:50081 --metrics-listen "" --web-listen 127.0.0.1:8181 > "$WORK/serve.log" 2>&1 &
PID=$!
sleep 4
$B loadgen --server http://127.0.0.1:50081 --data $D --conversations 64 --streams 4 --duration-secs 3 --server-pid $PID | tail -3
$B loadgen --server http://127.0.0.1:50081 --data $D --conversations ${CONVS:-10000} --streams 16 \
    --rate 400 --turns ${TURNS:-100000} --duration-secs 400 --drain-secs 120 --server-pid $PID | tail -6
for path in "/api/conversations?limit=25" "/api/heatmap" "/api/alerts?limit=300" "/api/status"; do
  for i in 1 2 3; do curl -s -o /dev/null -w "$path %{http_code} %{size_download} B %{time_total}s\n" "http://127.0.0.1:8181$path"; done
done
kill $PID
rm -rf "$WORK"
