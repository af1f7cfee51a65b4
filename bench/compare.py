"""One run, one table: the in-process ceiling, the service and the Python baseline on this machine.

Runs, in order and with nothing else started by it in between:
  1. the ceiling (`cargo bench --bench ceiling`, 2 workers x 1 ORT thread, max_batch 128, 1,024
     padded tokens per call: the best setting of the sweep in BENCHMARKS.md);
  2. the service and then the Python baseline, each closed loop at 1, 64 and 1,000 concurrent
     conversations (`emotion loadgen`), then open loop with 1,000 conversations at two rates that
     both servers get: half the service's saturation and half the baseline's;
  3. the service's memory per tracked conversation: RSS after a warm-up, then after 100,000 more
     conversations of one turn each (open loop, so that in-flight buffers stay small).
Prints a markdown report to paste into BENCHMARKS.md. Needs `cargo build --release` and the
baseline's venv (bench/README.md). Takes about 8 minutes.

    .venv-bench/bin/python bench/compare.py --data ../shared/datasets/goemotions/test.tsv
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EMOTION = ROOT / "target/release/emotion"
LOADS = [(1, 1), (64, 4), (1000, 8)]
SUMMARY = re.compile(
    r"sent (\d+) answered (\d+) unanswered \(lost\) (\d+) duplicated (\d+) errors (\d+) in ([\d.]+) s: "
    r"([\d.]+) turns/s; latency ms p50 ([\d.]+) p90 ([\d.]+) p99 ([\d.]+) max ([\d.]+)"
)
USAGE = re.compile(r"RSS ([\d.]+) MiB, CPU (\d+)%")


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing listening on {port} after {timeout} s")


def loadgen(port: int, pid: int, data: Path, conversations: int, streams: int, seconds: float,
            rate: float | None = None, turns: int | None = None, drain: float = 30.0) -> dict:
    cmd = [str(EMOTION), "loadgen", "--server", f"http://127.0.0.1:{port}", "--data", str(data),
           "--conversations", str(conversations), "--streams", str(streams),
           "--duration-secs", str(seconds), "--drain-secs", str(drain), "--server-pid", str(pid)]
    if rate is not None:
        cmd += ["--rate", f"{rate:.0f}"]
    if turns is not None:
        cmd += ["--turns", str(turns)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    text = out.stdout + out.stderr
    m, u = SUMMARY.search(text), USAGE.search(text)
    if not m or not u:
        raise SystemExit(f"could not read the load generator's report:\n{text}")
    keys = ["sent", "answered", "lost", "dup", "errors", "secs", "tps", "p50", "p90", "p99", "max"]
    row = {k: float(v) for k, v in zip(keys, m.groups())}
    row["rss_mib"], row["cpu"] = float(u.group(1)), float(u.group(2))
    print(f"  {conversations} conv, {'closed' if rate is None else f'{rate:.0f}/s'}: "
          f"{row['tps']:.0f} turns/s p50 {row['p50']} p99 {row['p99']} lost {row['lost']:.0f} "
          f"dup {row['dup']:.0f} err {row['errors']:.0f}", file=sys.stderr, flush=True)
    return row


def start(name: str, env: dict | None = None) -> tuple[subprocess.Popen, int]:
    if name == "service":
        port = 50071
        cmd = [str(EMOTION), "serve", "--listen", f"127.0.0.1:{port}", "--metrics-listen", "", "--web-listen", ""]
    else:
        port = 50061
        cmd = [sys.executable, str(ROOT / "bench/python/server.py"), "--listen", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})})
    wait_port(port, proc)
    time.sleep(1.0)
    return proc, port


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def ceiling(data: Path, seconds: float) -> float:
    env = {**os.environ, "CEILING_LAYOUTS": "2x1", "CEILING_SETTINGS": "128x1024"}
    out = subprocess.run(["cargo", "bench", "--quiet", "--bench", "ceiling", "--", str(data), str(seconds)],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    rows = [line for line in out.splitlines() if line.startswith("| 2 | 1 | 128 | 1024 |")]
    if not rows:
        raise SystemExit(f"no ceiling row in:\n{out}")
    return float(rows[0].split("|")[5])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, required=True, help="GoEmotions TSV")
    p.add_argument("--seconds", type=float, default=10.0, help="per closed-loop run")
    p.add_argument("--memory-conversations", type=int, default=100_000)
    args = p.parse_args()
    data = args.data.resolve()

    print("ceiling ...", file=sys.stderr, flush=True)
    ceil = ceiling(data, args.seconds)
    closed: dict[str, dict[int, dict]] = {}
    procs: dict[str, tuple[subprocess.Popen, int]] = {}
    for name in ["service", "python"]:
        print(f"{name} closed loop ...", file=sys.stderr, flush=True)
        proc, port = start(name)
        loadgen(port, proc.pid, data, 64, 4, 3)  # warm-up, not reported
        closed[name] = {c: loadgen(port, proc.pid, data, c, s, args.seconds) for c, s in LOADS}
        stop(proc)
    rates = sorted({round(closed[n][1000]["tps"] / 2) for n in closed})
    opened: dict[str, dict[int, dict]] = {}
    for name in ["service", "python"]:
        print(f"{name} open loop ...", file=sys.stderr, flush=True)
        proc, port = start(name)
        loadgen(port, proc.pid, data, 64, 4, 3)
        opened[name] = {r: loadgen(port, proc.pid, data, 1000, 8, args.seconds, rate=r) for r in rates}
        stop(proc)

    print("service memory ...", file=sys.stderr, flush=True)
    n = args.memory_conversations
    proc, port = start("service", {"EMOTION__LIMITS__MAX_CONVERSATIONS": str(2 * n)})
    warm = loadgen(port, proc.pid, data, 64, 4, 3)
    rate = max(100.0, min(0.5 * closed["service"][1000]["tps"], 2000.0))
    held = loadgen(port, proc.pid, data, n, 16, n / rate + 60, rate=rate, turns=n, drain=120)
    stop(proc)
    per_conv = (held["rss_mib"] - warm["rss_mib"]) * 1024 * 1024 / n

    s, py = closed["service"], closed["python"]
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                         capture_output=True, text=True).stdout.strip()
    print(f"## One run, {datetime.date.today()}\n")
    print(f"Machine: {os.cpu_count()} cores ({cpu}), {platform.system()}; server and load generator "
          f"share the cores. Shipped int8 model, default config; GoEmotions test texts; "
          f"{args.seconds:.0f} s per run after a 3 s warm-up.\n")
    print("```bash\n.venv-bench/bin/python bench/compare.py --data ../shared/datasets/goemotions/test.tsv\n```\n")
    print(f"Ceiling (in-process, no gRPC, 2 workers x 1 ORT thread, max_batch 128, 1,024 tokens): "
          f"**{ceil:.0f} texts/s**.\n")
    print("Closed loop (each conversation waits for its answer):\n")
    print("| conversations / streams | service turns/s | % of ceiling | service p50 / p99 ms | "
          "Python turns/s | Python p50 / p99 ms | service / Python | lost / dup / errors (both) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for c, st in LOADS:
        a, b = s[c], py[c]
        bad = "/".join(f"{a[k] + b[k]:.0f}" for k in ["lost", "dup", "errors"])
        print(f"| {c:,} / {st} | {a['tps']:.0f} | {100 * a['tps'] / ceil:.0f}% | {a['p50']:.1f} / {a['p99']:.1f} "
              f"| {b['tps']:.0f} | {b['p50']:.1f} / {b['p99']:.1f} | {a['tps'] / b['tps']:.2f}x | {bad} |")
    print("\nOpen loop, 1,000 conversations over 8 streams (latency from the scheduled send time):\n")
    print("| rate turns/s | service achieved | service p50 / p90 / p99 ms | Python achieved | "
          "Python p50 / p90 / p99 ms | lost / dup / errors (both) |")
    print("|---:|---:|---:|---:|---:|---|")
    for r in rates:
        a, b = opened["service"][r], opened["python"][r]
        bad = "/".join(f"{a[k] + b[k]:.0f}" for k in ["lost", "dup", "errors"])
        print(f"| {r} | {a['tps']:.0f} | {a['p50']:.1f} / {a['p90']:.1f} / {a['p99']:.1f} | {b['tps']:.0f} | "
              f"{b['p50']:.1f} / {b['p90']:.1f} / {b['p99']:.1f} | {bad} |")
    print(f"\nServer RSS / CPU at 1,000 closed: service {s[1000]['rss_mib']:.0f} MiB / {s[1000]['cpu']:.0f}%, "
          f"Python {py[1000]['rss_mib']:.0f} MiB / {py[1000]['cpu']:.0f}%.\n")
    print(f"Memory: service RSS {warm['rss_mib']:.1f} MiB after the warm-up, {held['rss_mib']:.1f} MiB holding "
          f"{n:,} more conversations of one turn each (open loop at {rate:.0f}/s, lost {held['lost']:.0f}): "
          f"**{per_conv:.0f} bytes per conversation**.")


if __name__ == "__main__":
    main()
