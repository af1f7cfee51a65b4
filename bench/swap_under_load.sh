#!/bin/bash
# Swap to another model under open-loop load and back; print what the load generator saw.
#   bash bench/swap_under_load.sh MODEL_DIR [DATA_TSV]
# (MODEL_DIR e.g. the Ekman model of training/train_ekman.py; needs `cargo build --release`.)
set -u
MODEL=$(realpath "$1")
DATA=$(realpath "${2:-../shared/datasets/goemotions/test.tsv}")
B=$(realpath target/release/emotion)
WORK=$(mktemp -d)
cd "$WORK"
$B serve --listen 127.0.0.1:50095 --metrics-listen 127.0.0.1:9495 --web-listen "" > serve.log 2>&1 &
PID=$!
sleep 5
$B loadgen --server http://127.0.0.1:50095 --data "$DATA" --conversations 1000 --streams 8 \
  --rate 300 --duration-secs 30 --server-pid $PID > loadgen.txt 2>&1 &
LG=$!
probe() {
  echo "{\"conversation_id\":\"$1\",\"turn_id\":1,\"speaker\":\"customer\",\"text\":\"I am furious, this is the worst service ever\"}" > "$1.jsonl"
  $B stream "$1.jsonl" --server http://127.0.0.1:50095
}
sleep 5
echo "--- load $(date +%T)"; $B model load "$MODEL" --server http://127.0.0.1:50095; probe probe-a
sleep 8
echo "--- rollback $(date +%T)"; $B model rollback --server http://127.0.0.1:50095; probe probe-b
wait $LG
echo "--- load generator"; cat loadgen.txt
curl -s http://127.0.0.1:9495/metrics | grep -E "^emotion_(model_swaps|turns)_total"
kill $PID
