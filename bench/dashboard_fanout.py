#!/usr/bin/env python3
"""How fast one alert reaches many open dashboards: N SSE connections to /api/alerts/stream, then
one conversation that raises an alert; prints when each connection received it, measured from
the moment the triggering turn's result came back to `emotion stream`.

    cargo build --release
    python3 bench/dashboard_fanout.py --dashboards 500

Standard library only. Starts its own server (auth off, loopback, temporary alert log).
"""
import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMOTION = os.path.join(ROOT, "target", "release", "emotion")


async def dashboard(port, ready, arrived):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /api/alerts/stream HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    await writer.drain()
    status = await reader.readline()
    assert b" 200 " in status, status
    ready.release()
    while True:
        line = await reader.readline()
        if not line:
            return
        if line.startswith(b"event: alert"):
            arrived.append(time.monotonic())
            writer.close()
            return


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dashboards", type=int, default=500)
    args = ap.parse_args()
    work = tempfile.mkdtemp()
    grpc, web = 50091, 8191
    env = dict(os.environ, EMOTION__ALERT_LOG__PATH=f'"{work}/alerts.sqlite3"', RUST_LOG="warn")
    server = subprocess.Popen([EMOTION, "serve", "--listen", f"127.0.0.1:{grpc}", "--metrics-listen", "",
                               "--web-listen", f"127.0.0.1:{web}"], env=env)
    try:
        for _ in range(100):
            try:
                _, w = await asyncio.open_connection("127.0.0.1", web)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        ready, arrived = asyncio.Semaphore(0), []
        tasks = [asyncio.create_task(dashboard(web, ready, arrived)) for _ in range(args.dashboards)]
        for _ in range(args.dashboards):
            await ready.acquire()
        # Two angry customer turns: the second raises a CRITICAL alert. Time its result.
        lines = [
            '{"conversation_id": "fanout-1", "turn_id": 1, "speaker": "customer", "text": "This is absolutely terrible, I am furious with your service."}',
            '{"conversation_id": "fanout-1", "turn_id": 2, "speaker": "customer", "text": "I am disgusted and angry, this is the worst experience ever."}',
        ]
        path = os.path.join(work, "call.jsonl")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        proc = await asyncio.create_subprocess_exec(EMOTION, "stream", path, "--server", f"http://127.0.0.1:{grpc}",
                                                    stdout=asyncio.subprocess.PIPE)
        result_at = None
        while True:
            line = await proc.stdout.readline()
            if not line:
                break
            if b"CRITICAL" in line.upper() and result_at is None:
                result_at = time.monotonic()
        await proc.wait()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
        assert result_at is not None, "no alert level in the stream's output"
        delays = sorted((t - result_at) * 1000 for t in arrived)
        q = lambda p: delays[min(len(delays) - 1, int(p * len(delays)))]
        print(f"{args.dashboards} dashboards, {len(arrived)} received the alert; ms after the turn's result "
              f"(negative: before it): min {delays[0]:.1f} p50 {q(0.5):.1f} p99 {q(0.99):.1f} max {delays[-1]:.1f} "
              f"mean {statistics.mean(delays):.1f}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    asyncio.run(main())
