"""One run, one report: the in-process ceiling, the service and the Python baseline, side by side,
for every model the service ships as a default, on this machine.

For each load set (English texts on the English model; Chinese contact-center turns on the Chinese
model; a 50/50 mix through the service's language route and the baseline's `--zh-model`):
  1. the ceiling (`cargo bench --bench ceiling`: the service's inference path alone, in-process,
     with its default thread layout), with 1, 64 and 256 texts in flight;
  2. the service and the Python baseline (the same model files), both running, closed loop at 1,
     64 and 1,000 concurrent conversations, then open loop with 1,000 conversations at half the
     service's and half the baseline's saturation;
  3. every row `--repeats` times (default 3), the two servers alternating repeat by repeat (so a
     drift in the machine's speed does not land on one side): median, and the range in brackets.
Then (English only, `--memory-conversations`, 0 to skip) the service's memory per tracked
conversation. The report says how quiet the machine was: /proc/loadavg before and after, and the
CPU time that processes other than the servers and the load generator took during the rows.

Prints a markdown report to paste into BENCHMARKS.md. Needs `cargo build --release` and the
baseline's venv (bench/README.md). Takes about 25 minutes with the defaults.

    .venv-bench/bin/python bench/compare.py --data ../shared/datasets/goemotions/test.tsv
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EMOTION = ROOT / "target/release/emotion"
EN_MODEL = ROOT / "models/goemotions-minilm-l6"
ZH_MODEL = ROOT / "models/emotion-e5-zh-en"
LOADS = [(1, 1), (64, 4), (1000, 8)]
SUMMARY = re.compile(
    r"sent (\d+) answered (\d+) unanswered \(lost\) (\d+) duplicated (\d+) errors (\d+) in ([\d.]+) s: "
    r"([\d.]+) turns/s; latency ms p50 ([\d.]+) p90 ([\d.]+) p99 ([\d.]+) max ([\d.]+)"
)
USAGE = re.compile(r"RSS ([\d.]+) MiB, CPU (\d+)%")
FLAGS = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8"]
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_ticks() -> dict[int, int]:
    """utime + stime of every process now, by pid."""
    ticks = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            ticks[int(d)] = int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return ticks


class Quiet:
    """The CPU that processes other than ours used while rows ran (worst row, in % of one core)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.total_s = 0.0
        self.rows = 0

    def measure(self, ours: set[int], run):
        before, t0 = cpu_ticks(), time.time()
        result = run()
        after, secs = cpu_ticks(), time.time() - t0
        others = sum(t - before.get(pid, 0) for pid, t in after.items() if pid not in ours)
        share = 100.0 * others / TICKS / max(secs, 1e-3)
        self.worst, self.total_s, self.rows = max(self.worst, share), self.total_s + others / TICKS, self.rows + 1
        return result


QUIET = Quiet()


def loadgen(port: int, pid: int, data: Path, conversations: int, streams: int, seconds: float,
            rate: float | None = None, turns: int | None = None, drain: float = 30.0) -> dict:
    cmd = [str(EMOTION), "loadgen", "--server", f"http://127.0.0.1:{port}", "--data", str(data),
           "--conversations", str(conversations), "--streams", str(streams),
           "--duration-secs", str(seconds), "--drain-secs", str(drain), "--server-pid", str(pid)]
    if rate is not None:
        cmd += ["--rate", f"{rate:.0f}"]
    if turns is not None:
        cmd += ["--turns", str(turns)]

    def run() -> str:
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ours.add(child.pid)
        return child.communicate()[0]

    ours = {os.getpid(), pid}
    text = QUIET.measure(ours, run)
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


def start(name: str, load: dict, env: dict | None = None) -> tuple[subprocess.Popen, int, Path]:
    log = Path(tempfile.mkstemp(prefix=f"compare-{name}-", suffix=".log")[1])
    if name == "service":
        port = 50071
        cmd = [str(EMOTION), "serve", "--listen", f"127.0.0.1:{port}", "--metrics-listen", "",
               "--web-listen", ""]
        ready = "serving gRPC"
        # Its own empty state and alert log each time: a server that restored the conversations
        # of the runs before it would be measured holding them (and hit max_conversations).
        fresh = Path(tempfile.mkdtemp(prefix="compare-state-"))
        env = {"EMOTION__STATE__PATH": str(fresh / "state.sqlite3"),
               "EMOTION__ALERT_LOG__PATH": str(fresh / "alerts.sqlite3"), **(env or {})}
    else:
        port = 50061
        cmd = [sys.executable, str(ROOT / "bench/python/server.py"), "--listen", f"127.0.0.1:{port}",
               *load["python"]]
        ready = "python baseline serving"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
    deadline = time.time() + 120
    while ready not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.time() > deadline:
            raise SystemExit(f"{name} did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.2)
    time.sleep(1.0)
    return proc, port, log


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def ceiling(data: Path, seconds: float, in_flight: int | None) -> float:
    env = {**os.environ, "CEILING_LAYOUTS": "2x1", "CEILING_SETTINGS": "128x1024"}
    if in_flight:
        env["CEILING_IN_FLIGHT"] = str(in_flight)
    out = subprocess.run(["cargo", "bench", "--quiet", "--bench", "ceiling", "--", str(data), str(seconds)],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    rows = [line for line in out.splitlines() if line.startswith("| 2 | 1 | 128 | 1024 |")]
    if not rows:
        raise SystemExit(f"no ceiling row in:\n{out}")
    return float(rows[0].split("|")[5])


def med(rows: list[dict], key: str, digits: int = 0) -> str:
    vals = [r[key] for r in rows]
    m = statistics.median(vals)
    if len(vals) == 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ({min(vals):.{digits}f}-{max(vals):.{digits}f})"


def medv(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def bad(*groups: list[dict]) -> str:
    return "/".join(f"{sum(r[k] for g in groups for r in g):.0f}" for k in ["lost", "dup", "errors"])


def load_sets(data: Path, work: Path) -> list[dict]:
    en = [line.split("\t")[0] for line in data.read_text(encoding="utf-8").splitlines() if line.strip()]
    en = [t for t in en if t and t != "text"]
    zh = []
    for part in ("dev", "test"):
        lines = (ROOT / f"eval/zh-contact-center/{part}.tsv").read_text(encoding="utf-8").splitlines()[1:]
        zh += [line.split("\t")[1] for line in lines if line.strip()]
    (work / "zh.tsv").write_text("".join(f"{t}\n" for t in zh), encoding="utf-8")
    (work / "mix.tsv").write_text("".join(f"{a}\n{zh[i % len(zh)]}\n" for i, a in enumerate(en[:3000])),
                                  encoding="utf-8")
    return [
        {"name": "English", "data": data, "python": ["--model", str(EN_MODEL)],
         "what": f"GoEmotions test texts ({data.name}) on the English default model (goemotions-minilm-l6)"},
        {"name": "Chinese", "data": work / "zh.tsv", "python": ["--model", str(ZH_MODEL)],
         "what": f"{len(zh)} Chinese contact-center turns (eval/zh-contact-center) on the Chinese route's "
                 "model (emotion-e5-zh-en); the baseline serves that model alone"},
        {"name": "50/50 Chinese/English", "data": work / "mix.tsv",
         "python": ["--model", str(EN_MODEL), "--zh-model", str(ZH_MODEL)],
         "what": "English and Chinese turns alternating; the service's language route, the baseline's "
                 "`--zh-model` (a CJK character sends a turn to the Chinese model)"},
    ]


def machine() -> str:
    info = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.*)", info)
    flags = set(re.search(r"flags\s*:\s*(.*)", info).group(1).split())
    have = [f for f in FLAGS if f in flags]
    return (f"{os.cpu_count()} cores, {model.group(1).strip() if model else 'unknown CPU'}; "
            f"flags: {', '.join(have) or 'none of ' + ', '.join(FLAGS)} "
            f"(absent: {', '.join(f for f in FLAGS if f not in flags) or 'none'})")


def run_set(load: dict, args) -> dict:
    data, reps, secs = load["data"], args.repeats, args.seconds
    print(f"== {load['name']}: ceiling ...", file=sys.stderr, flush=True)
    ceil_one = [ceiling(data, secs, 1) for _ in range(reps)]
    ceil_mid = [ceiling(data, secs, 64) for _ in range(reps)]
    ceil = [ceiling(data, secs, None) for _ in range(reps)]
    # Both servers run side by side and every repeat of a row goes to one, then the other, so a
    # drift in the machine's speed over the minutes of a set lands on both (the idle one's CPU
    # counts as "other processes" in the quiet check).
    names = ["service", "python"]
    print("closed loop, service and python alternating ...", file=sys.stderr, flush=True)
    servers = {name: start(name, load) for name in names}
    for proc, port, _ in servers.values():
        loadgen(port, proc.pid, data, 64, 4, 3)  # warm-up, not reported
    closed: dict[str, dict[int, list[dict]]] = {name: {c: [] for c, _ in LOADS} for name in names}
    for _ in range(reps):
        for c, s in LOADS:
            for name, (proc, port, _) in servers.items():
                closed[name][c].append(loadgen(port, proc.pid, data, c, s, secs))
    for proc, _, _ in servers.values():
        stop(proc)
    rates = sorted({round(medv(closed[n][1000], "tps") / 2) for n in closed})
    print("open loop, service and python alternating ...", file=sys.stderr, flush=True)
    servers = {name: start(name, load) for name in names}
    for proc, port, _ in servers.values():
        loadgen(port, proc.pid, data, 64, 4, 3)
    opened: dict[str, dict[int, list[dict]]] = {name: {r: [] for r in rates} for name in names}
    for _ in range(reps):
        for r in rates:
            for name, (proc, port, _) in servers.items():
                opened[name][r].append(loadgen(port, proc.pid, data, 1000, 8, secs, rate=r))
    for proc, _, _ in servers.values():
        stop(proc)
    return {"ceil_one": ceil_one, "ceil_mid": ceil_mid, "ceil": ceil, "closed": closed, "opened": opened, "rates": rates}


def report(load: dict, r: dict) -> None:
    ceil = statistics.median(r["ceil"])
    c1 = [{"v": v} for v in r["ceil_one"]]
    c64 = [{"v": v} for v in r["ceil_mid"]]
    cf = [{"v": v} for v in r["ceil"]]
    print(f"### {load['name']}\n\n{load['what']}.\n")
    print(f"Ceiling (in-process, no gRPC, the service's default thread layout, max_batch 128, 1,024 "
          f"tokens): **{med(cf, 'v')} texts/s** at full load (256 texts in flight); {med(c64, 'v')} "
          f"with 64 in flight; {med(c1, 'v')} with one.\n")
    print("Closed loop (each conversation waits for its answer):\n")
    print("| conversations / streams | service turns/s | % of ceiling | service p50 / p99 ms | "
          "Python turns/s | Python p50 / p99 ms | service / Python | lost / dup / errors (both) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    s, py = r["closed"]["service"], r["closed"]["python"]
    for c, st in LOADS:
        a, b = s[c], py[c]
        ratio = medv(a, "tps") / medv(b, "tps")
        print(f"| {c:,} / {st} | {med(a, 'tps')} | {100 * medv(a, 'tps') / ceil:.0f}% | "
              f"{med(a, 'p50', 1)} / {med(a, 'p99', 1)} | {med(b, 'tps')} | {med(b, 'p50', 1)} / "
              f"{med(b, 'p99', 1)} | {ratio:.2f}x | {bad(a, b)} |")
    print("\nOpen loop, 1,000 conversations over 8 streams (latency from the scheduled send time):\n")
    print("| rate turns/s | service achieved | service p50 / p90 / p99 ms | Python achieved | "
          "Python p50 / p90 / p99 ms | lost / dup / errors (both) |")
    print("|---:|---:|---:|---:|---:|---|")
    for rate in r["rates"]:
        a, b = r["opened"]["service"][rate], r["opened"]["python"][rate]
        print(f"| {rate} | {med(a, 'tps')} | {med(a, 'p50', 1)} / {med(a, 'p90', 1)} / {med(a, 'p99', 1)} | "
              f"{med(b, 'tps')} | {med(b, 'p50', 1)} / {med(b, 'p90', 1)} / {med(b, 'p99', 1)} | {bad(a, b)} |")
    print(f"\nServer RSS / CPU at 1,000 closed (median): service {medv(s[1000], 'rss_mib'):.0f} MiB / "
          f"{medv(s[1000], 'cpu'):.0f}%, Python {medv(py[1000], 'rss_mib'):.0f} MiB / "
          f"{medv(py[1000], 'cpu'):.0f}%.\n")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, required=True, help="GoEmotions TSV (the English texts)")
    p.add_argument("--seconds", type=float, default=8.0, help="per run")
    p.add_argument("--repeats", type=int, default=3, help="runs per row (median and range)")
    p.add_argument("--sets", default="English,Chinese,50/50 Chinese/English", help="which load sets")
    p.add_argument("--memory-conversations", type=int, default=20_000, help="0: skip")
    args = p.parse_args()
    data = args.data.resolve()
    work = Path(tempfile.mkdtemp(prefix="compare-"))
    loadavg_before = Path("/proc/loadavg").read_text().split()[:3]
    started = time.time()
    wanted = [w.strip() for w in args.sets.split(",")]
    sets = [s for s in load_sets(data, work) if s["name"] in wanted]
    results = [(s, run_set(s, args)) for s in sets]

    memory = None
    if args.memory_conversations:
        print("service memory ...", file=sys.stderr, flush=True)
        n = args.memory_conversations
        en = sets[0]
        proc, port, _ = start("service", en, {"EMOTION__LIMITS__MAX_CONVERSATIONS": str(2 * n)})
        warm = loadgen(port, proc.pid, data, 64, 4, 3)
        sat = medv(results[0][1]["closed"]["service"][1000], "tps")
        rate = max(50.0, min(0.5 * sat, 2000.0))
        held = loadgen(port, proc.pid, data, n, 16, n / rate + 60, rate=rate, turns=n, drain=120)
        stop(proc)
        memory = (warm, held, rate, n)
    loadavg_after = Path("/proc/loadavg").read_text().split()[:3]
    minutes = (time.time() - started) / 60

    print(f"## One run, {datetime.date.today()}\n")
    print(f"Machine: {machine()}. Server and load generator share the cores; default config, shipped "
          f"models; {args.seconds:.0f} s per run after a 3 s warm-up, each row {args.repeats} times, "
          f"the service's and the baseline's repeats alternating (both servers up, the idle one "
          f"counted below as another process): median (range). {minutes:.0f} minutes in all.\n")
    print(f"Quiet? /proc/loadavg {' '.join(loadavg_before)} before, {' '.join(loadavg_after)} after; "
          f"processes other than the measured server and the load generator used {QUIET.total_s:.1f} "
          f"CPU-seconds over {QUIET.rows} rows, at most {QUIET.worst:.1f}% of a core during any row.\n")
    command = " ".join(shlex.quote(a) for a in ["bench/compare.py", *sys.argv[1:]])
    print(f"```bash\n.venv-bench/bin/python {command}\n```\n")
    for s, r in results:
        report(s, r)
    if memory:
        warm, held, rate, n = memory
        per_conv = (held["rss_mib"] - warm["rss_mib"]) * 1024 * 1024 / n
        print(f"Memory: service RSS {warm['rss_mib']:.1f} MiB after the warm-up, {held['rss_mib']:.1f} MiB "
              f"holding {n:,} more conversations of one turn each (open loop at {rate:.0f}/s, lost "
              f"{held['lost']:.0f}): **{per_conv:.0f} bytes per conversation**.")


if __name__ == "__main__":
    main()
