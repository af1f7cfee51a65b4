#!/usr/bin/env bash
# The Chinese route's cost, side by side in one run (BENCHMARKS.md, "Chinese model"):
#   A  English-only service ([model.languages] empty), English load
#   D  default service (zh route), 50/50 English + Chinese contact-center turns
#   C  default service, 50/50 English + SMP2020 dev posts (only with SMP_DEV=path/to/smp2020_dev.tsv)
# Usage: cargo build --release && bash bench/chinese_mix.sh [reps]
set -u
cd "$(dirname "$0")/.."
B=target/release/emotion
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
printf '[model.languages]\n' > "$W/en-only.toml"
python3 - "$W" "${SMP_DEV:-}" <<'PY'
import sys
w, smp = sys.argv[1], sys.argv[2]
en = [l.split("\t")[0] for l in open("tests/data/goemotions/test.tsv", encoding="utf-8") if l.strip()][:3000]
cc = []
for part in ("dev", "test"):
    cc += [l.split("\t")[1] for l in open(f"eval/zh-contact-center/{part}.tsv", encoding="utf-8").read().splitlines()[1:]]
open(f"{w}/en.tsv", "w", encoding="utf-8").write("\n".join(en) + "\n")
open(f"{w}/mix-cc.tsv", "w", encoding="utf-8").write("".join(f"{a}\n{cc[i % len(cc)]}\n" for i, a in enumerate(en)))
if smp:
    zh = [l.split("\t")[0] for l in open(smp, encoding="utf-8").read().splitlines()[1:] if l.strip()]
    open(f"{w}/mix.tsv", "w", encoding="utf-8").write("".join(f"{a}\n{b}\n" for a, b in zip(en, zh)))
PY
run() {
  local name=$1 cfg=$2 data=$3 port=$4
  local args=(serve --listen 127.0.0.1:$port --metrics-listen "" --web-listen "")
  [ -n "$cfg" ] && args+=(--config "$cfg")
  EMOTION__ALERT_LOG__PATH=$W/alerts-$port.sqlite3 EMOTION__STATE__PATH=$W/state-$port.sqlite3 \
    $B "${args[@]}" > "$W/serve-$port.log" 2>&1 &
  local pid=$!
  for _ in $(seq 120); do grep -q "serving gRPC" "$W/serve-$port.log" && break; sleep 0.5; done
  sleep 1
  echo "== $name (idle RSS $(awk '/VmRSS/{print $2}' /proc/$pid/status) kB)"
  $B loadgen --server http://127.0.0.1:$port --data "$data" --conversations 64 --streams 4 \
    --duration-secs 10 --server-pid $pid 2>&1 | grep -v INFO | tail -2
  kill $pid; wait $pid 2>/dev/null
}
for rep in $(seq "${1:-2}"); do
  run "A English-only service, English load (rep $rep)" "$W/en-only.toml" "$W/en.tsv" 50091
  run "D default service, 50/50 English + Chinese contact-center turns (rep $rep)" "" "$W/mix-cc.tsv" 50094
  [ -f "$W/mix.tsv" ] && run "C default service, 50/50 English + SMP2020 posts (rep $rep)" "" "$W/mix.tsv" 50093
done
