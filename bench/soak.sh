#!/bin/bash
# The soak run (issue 13): 1,000 conversations on 8 streams, open loop at half of the measured
# saturation, streams cancelled and reopened at random, a model swap at 40% of the run and a
# graceful restart (SIGTERM, start again on the same data) at 50%; the server's RSS every 10 s.
#   bash bench/soak.sh [DURATION_SECS=1800] [DATA=tests/data/goemotions/test.tsv] [RATE]
# Needs `cargo build --release`. Writes into $SOAK_DIR (default: a new temporary directory).
set -u
DUR=${1:-1800}
DATA=$(realpath "${2:-tests/data/goemotions/test.tsv}")
RATE=${3:-}
B=$(realpath target/release/emotion)
MODELS=$(realpath models)
WORK=${SOAK_DIR:-$(mktemp -d)}
mkdir -p "$WORK"
cd "$WORK"
echo "work dir $WORK; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
start_server() {
  EMOTION__ALERT_LOG__PATH=$WORK/alerts.sqlite3 EMOTION__STATE__PATH=$WORK/state.sqlite3 \
  EMOTION__MODEL__DIR=$MODELS/goemotions-minilm-l6 EMOTION__MODEL__LANGUAGES__ZH=$MODELS/emotion-e5-zh-en \
    "$B" serve --listen 127.0.0.1:50097 --metrics-listen 127.0.0.1:9497 --web-listen 127.0.0.1:8097 >> serve.log 2>&1 &
  echo $! > serve.pid
  for _ in $(seq 100); do grep -q "serving gRPC" serve.log 2>/dev/null && [ "$(grep -c 'serving gRPC' serve.log)" -ge "$1" ] && return; sleep 0.2; done
  echo "server did not start"; exit 1
}
start_server 1
if [ -z "$RATE" ]; then
  SAT=$("$B" loadgen --server http://127.0.0.1:50097 --data "$DATA" --conversations 1000 --streams 8 --duration-secs 20 | grep -o '[0-9]* turns/s' | cut -d' ' -f1)
  RATE=$((SAT / 2))
  echo "saturation (closed loop, 1000 conversations, 8 streams, 20 s): $SAT turns/s; soak rate $RATE"
fi
( while true; do P=$(cat serve.pid); echo "$(date +%s) $P $(ps -o rss= -p "$P" 2>/dev/null || echo 0) $(cut -d' ' -f1 /proc/loadavg)"; sleep 10; done ) > rss.txt &
SAMPLER=$!
"$B" loadgen --server http://127.0.0.1:50097 --data "$DATA" --conversations 1000 --streams 8 --rate "$RATE" \
  --duration-secs "$DUR" --soak --cancel-every-secs 60 --turns-per-conversation 40 --report-every-secs 60 > soak.txt 2>&1 &
LG=$!
mkdir -p model-b && for f in "$MODELS"/goemotions-minilm-l6/*; do ln -sf "$f" model-b/; done
sleep $((DUR * 4 / 10))
echo "--- $(date +%T) model swap"; "$B" model load "$WORK/model-b" --server http://127.0.0.1:50097 2>&1 | head -3
sleep $((DUR / 10))
echo "--- $(date +%T) graceful restart"; kill -TERM "$(cat serve.pid)"
while kill -0 "$(cat serve.pid)" 2>/dev/null; do sleep 0.1; done
start_server 2
echo "--- $(date +%T) serving again"
wait $LG; echo "loadgen exit $?"
kill $SAMPLER
cat soak.txt
echo "--- RSS (MiB) every 10 s: first, each 5 min, last"
awk '{printf "%d %s %.1f %s\n", NR, $2, $3/1024, $4}' rss.txt | awk 'NR==1 || NR%30==0 {print} END {print}'
kill -TERM "$(cat serve.pid)"
