#!/bin/bash
# Does memory level off under repeated model swaps? Loads a copy of the shipped English model
# (a new version each time, so the service really swaps) and rolls back, N times, on an idle
# server; prints the server's RSS after each cycle.
#   cargo build --release && bash bench/swap_memory.sh [CYCLES]
set -u
cd "$(dirname "$0")/.."
B=$(realpath target/release/emotion)
N=${1:-20}
W=$(mktemp -d)
trap 'kill $PID 2>/dev/null; rm -rf "$W"' EXIT
EMOTION__ALERT_LOG__PATH=$W/alerts.sqlite3 EMOTION__STATE__PATH=$W/state.sqlite3 \
  $B serve --listen 127.0.0.1:50097 --metrics-listen "" --web-listen "" > "$W/serve.log" 2>&1 &
PID=$!
until grep -q "serving gRPC" "$W/serve.log"; do sleep 0.5; done
rss() { awk '/VmRSS/{printf "%.0f", $2/1024}' /proc/$PID/status; }
echo "cycle 0: RSS $(rss) MiB (idle, both shipped models)"
for i in $(seq "$N"); do
  rm -rf "$W/candidate"; cp -r models/goemotions-minilm-l6 "$W/candidate"
  python3 - "$W/candidate/emotion.json" "$i" <<'PY'
import json, sys
p, i = sys.argv[1], sys.argv[2]
d = json.load(open(p)); d["version"] = f"swap-{i}"; json.dump(d, open(p, "w"))
PY
  $B model load "$W/candidate" --server http://127.0.0.1:50097 > "$W/load.txt" 2>&1 || { cat "$W/load.txt"; exit 1; }
  after_load=$(rss)
  $B model rollback --server http://127.0.0.1:50097 > "$W/rb.txt" 2>&1 || { cat "$W/rb.txt"; exit 1; }
  echo "cycle $i: RSS $after_load MiB after the load, $(rss) MiB after the rollback"
done
