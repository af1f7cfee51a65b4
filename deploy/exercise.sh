#!/bin/bash
# Runs deploy/compose.yaml (3 NATS nodes + 3 replicas) under podman and podman-compose, and
# checks it as an operator would: every replica SERVING, turns streamed with failover while a
# replica container and then a NATS container are killed (0 lost, 0 duplicated), the dashboards
# answering, then everything removed (`down -v`).
#   bash deploy/exercise.sh
# Needs: podman, podman-compose (Debian bookworm: apt-get install podman podman-compose), a
# release build (`cargo build --release`) and the nats-server binary the tests fetch
# (target/nats-server-2.15.1/nats-server). No image registry is needed: when the images the files
# name cannot be had, local stand-ins are built:
#   - debian:bookworm-slim, with debootstrap from this machine's apt mirror (DEBIAN_MIRROR);
#   - the NATS image from the nats-server binary (NATS_IMAGE, default localhost/nats-server:2.15.1);
#   - the service image from the host's release build (deploy/Dockerfile.prebuilt): the
#     Dockerfile's build stage (rust:1-bookworm) is what this does not exercise.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
export NATS_IMAGE=${NATS_IMAGE:-localhost/nats-server:2.15.1}
B=$ROOT/target/release/emotion
NATS=$ROOT/target/nats-server-2.15.1/nats-server
WORK=$(mktemp -d)
COMPOSE=(podman-compose -p emotion-deploy -f deploy/compose.yaml)
fail() { echo "FAILED: $*"; exit 1; }
for tool in podman podman-compose; do command -v $tool >/dev/null || fail "no $tool"; done
[ -x "$B" ] && [ -x "$NATS" ] || fail "needs $B and $NATS (cargo build --release; cargo test --release --test cluster fetches nats-server)"
cleanup() { "${COMPOSE[@]}" down -v >/dev/null 2>&1; rm -rf "$WORK"; }
trap cleanup EXIT

if ! podman image exists debian:bookworm-slim; then
  command -v debootstrap >/dev/null || fail "no debian:bookworm-slim image and no debootstrap"
  MIRROR=${DEBIAN_MIRROR:-$(grep -h -m1 -oE '^URIs: *[^ ]+' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}')}
  [ -n "$MIRROR" ] || fail "set DEBIAN_MIRROR"
  echo "building debian:bookworm-slim with debootstrap from $MIRROR"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 || fail "debootstrap (log $WORK/debootstrap.log)"
  tar -C "$WORK/rootfs" -c . | podman import - docker.io/library/debian:bookworm-slim >/dev/null || fail "import"
  rm -rf "$WORK/rootfs"
fi
if ! podman image exists "$NATS_IMAGE"; then
  mkdir -p "$WORK/nats" && cp "$NATS" "$WORK/nats/"
  printf 'FROM scratch\nCOPY nats-server /nats-server\nEXPOSE 4222 6222 8222\nENTRYPOINT ["/nats-server"]\n' > "$WORK/nats/Containerfile"
  podman build -q --format docker -t "$NATS_IMAGE" "$WORK/nats" >/dev/null || fail "building $NATS_IMAGE"
fi
podman run --rm "$NATS_IMAGE" --version >/dev/null 2>&1 || fail "podman cannot run a container here; in a VM with cgroups v1/hybrid and a low open-files limit, /etc/containers/containers.conf needs: [containers] default_ulimits = [\"nofile=20000:20000\", \"nproc=4096:4096\"] [engine] runtime = \"runc\" cgroup_manager = \"cgroupfs\" (deploy/README.md)"
mkdir -p "$WORK/emotion" && cp "$B" target/onnxruntime-1.31.1/libonnxruntime.so.1.31.1 "$WORK/emotion/" && cp -r models "$WORK/emotion/"
podman build -q --format docker -t localhost/emotion-service -f deploy/Dockerfile.prebuilt "$WORK/emotion" >/dev/null || fail "building the service image"
rm -rf "$WORK/emotion"

START=$(date +%s)
"${COMPOSE[@]}" up -d > "$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; fail "compose up"; }
export EMOTION_TOKEN=demo-ingest-CHANGE-ME
URLS=(http://127.0.0.1:50051 http://127.0.0.1:50052 http://127.0.0.1:50053)
for u in "${URLS[@]}"; do
  for _ in $(seq 120); do "$B" health --server "$u" >/dev/null 2>&1 && break; sleep 1; done
  "$B" health --server "$u" || { podman logs emotion-deploy_emotion-1_1 2>&1 | grep -v '^  ' | tail -15; fail "$u not SERVING"; }
done
echo "3 replicas SERVING $(($(date +%s) - START)) s after compose up"

"$B" loadgen --soak --server "${URLS[0]}" --failover "${URLS[1]},${URLS[2]}" --data tests/data/goemotions/test.tsv \
  --conversations 60 --streams 6 --rate 40 --duration-secs 40 --turns-per-conversation 20 \
  --report-every-secs 10 > "$WORK/loadgen.txt" 2>&1 &
LG=$!
sleep 12; echo "kill -9 of the first replica's container"; podman kill -s KILL emotion-deploy_emotion-1_1 >/dev/null || fail "kill replica"
sleep 12; echo "kill -9 of the second NATS node's container"; podman kill -s KILL emotion-deploy_nats-2_1 >/dev/null || fail "kill nats"
wait $LG
cat "$WORK/loadgen.txt"
TOTAL=$(grep '^total:' "$WORK/loadgen.txt")
echo "$TOTAL" | grep -q 'lost 0 duplicated 0 errors 0;' || fail "turns lost, duplicated or failed"
echo "$TOTAL" | grep -qE 'answered [1-9]' || fail "nothing answered"
for port in 8082 8083; do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/")
  echo "dashboard :$port answers HTTP $code"; [ "$code" = 200 ] || fail "dashboard on $port"
done
"$B" health --server "${URLS[1]}" || fail "a surviving replica is not SERVING"
echo "OK: compose file exercised ($(podman --version), podman-compose $(pip show podman-compose 2>/dev/null | grep -m1 Version | cut -d' ' -f2)$(dpkg-query -W -f='${Version}' podman-compose 2>/dev/null))"
