"""Attacks on ``headstart serve`` at scale (loopback only, bounded in count and time).

    .venv/bin/python benchmarks/serve_hostile.py                 # every attack, default server
    .venv/bin/python benchmarks/serve_hostile.py --only flood bombs

The server runs with its default limits in a subprocess, warmed up with a few full batches
(the engine allocates its buffers for the largest batch once). For each attack this prints the
server's RSS before, at its peak during, and after it (5 s idle), the latency of a good
request (one 64x64 PNG) sent every 0.5 s during the attack, and the status codes the attack
and the good requests got. The attacks' requests come from 127.0.0.2, the good ones from
127.0.0.1: two clients, as the server tells them apart by address.

- ``flood``: 200 concurrent requests of 32 tiny images each;
- ``bombs``: 8 concurrent requests of 32 PNGs just under the pixel limit (6,300 x 6,300
  solid colour, a few KB each), then 8 of 2 each (within the per-request limit);
- ``slowloris``: 500 connections sending a request head one byte a second for 20 s;
- ``connections``: 1,100 connections opened and left idle;
- ``origins``: cross-origin and rebinding requests (status codes only);
- ``teach``: one teach job of 1,000 images: the shared feature cache before and after.

Timings on a shared machine are noisy; compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import io
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image

HOST = "127.0.0.1"
ATTACKER = "127.0.0.2"  # another loopback address: to the server, another client than the good one


def png(w: int, h: int, colour=(200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), colour).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def train_model(root: Path) -> Path:
    from headstart import ImageClassifier

    for k, colour in enumerate([(200, 40, 40), (40, 40, 200)]):
        for i in range(8):
            p = root / "data" / f"c{k}" / f"{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(png(48 + i, 48, colour))
    return ImageClassifier(val_fraction=0.25, test_fraction=0.0).fit(root / "data").save(root / "model")


class Watch:
    """Samples the server's RSS and sends a good request every 0.5 s while an attack runs."""

    def __init__(self, url: str, pid: int):
        self.url, self.pid = url, pid
        self.before = rss_mb(pid)
        self.peak = self.before
        self.latencies: list[float] = []
        self.codes: collections.Counter = collections.Counter()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._rss), threading.Thread(target=self._good)]

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join()

    def _rss(self):
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, rss_mb(self.pid))

    def _good(self):
        image = [("images", ("good.png", png(64, 64, (30, 30, 200)), "image/png"))]
        while not self._stop.wait(0.5):
            t0 = time.perf_counter()
            try:
                with httpx.Client(timeout=60) as c:  # a fresh connection, as a new client would
                    code = c.post(self.url + "/v1/predict", files=image).status_code
            except httpx.HTTPError as e:
                code = type(e).__name__
            self.latencies.append(time.perf_counter() - t0)
            self.codes[code] += 1

    def report(self, name: str, attack_codes: collections.Counter, seconds: float) -> None:
        time.sleep(5)
        after = rss_mb(self.pid)
        lat = sorted(self.latencies) or [float("nan")]
        print(f"{name:12s} {seconds:6.1f} s  RSS MB before {self.before:6.0f}  peak {self.peak:6.0f}  "
              f"after {after:6.0f}  |  good: p50 {lat[len(lat) // 2]:.2f} s  max {lat[-1]:.2f} s  "
              f"{dict(self.codes)}  |  attack: {dict(attack_codes)}", flush=True)


async def _post_many(url: str, n: int, files_of, concurrency: int, source: str = ATTACKER) -> collections.Counter:
    codes: collections.Counter = collections.Counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)
    transport = httpx.AsyncHTTPTransport(local_address=source, limits=limits)
    async with httpx.AsyncClient(timeout=120, transport=transport) as c:
        async def one(i):
            try:
                codes[(await c.post(url + "/v1/predict", files=files_of(i))).status_code] += 1
            except httpx.HTTPError as e:
                codes[type(e).__name__] += 1
        await asyncio.gather(*(one(i) for i in range(n)))
    return codes


def attack_flood(url: str) -> collections.Counter:
    tiny = [png(8 + i % 8, 8, (i * 7 % 255, 90, 90)) for i in range(32)]
    files = [("images", (f"{i}.png", b, "image/png")) for i, b in enumerate(tiny)]
    return asyncio.run(_post_many(url, 200, lambda i: files, 200))


def attack_bombs(url: str) -> collections.Counter:
    bomb = png(6300, 6300)  # 39.7 M pixels, just under the default 40 M
    codes = asyncio.run(_post_many(url, 8, lambda i: [("images", (f"b{j}.png", bomb, "image/png"))
                                                      for j in range(32)], 8))
    codes.update({f"2-per-request {k}": v for k, v in asyncio.run(_post_many(
        url, 8, lambda i: [("images", (f"b{j}.png", bomb, "image/png")) for j in range(2)], 8)).items()})
    return codes


async def _trickle(port: int, n: int, seconds: float) -> collections.Counter:
    head = b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
    codes: collections.Counter = collections.Counter()

    async def one():
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError as e:
            codes[f"connect {type(e).__name__}"] += 1
            return
        t0 = time.monotonic()
        try:
            for i in range(int(seconds)):
                writer.write(head[i:i + 1])
                await writer.drain()
                if await _closed(reader, 1.0):
                    codes[f"closed by server within {int(time.monotonic() - t0) // 5 * 5 + 5} s"] += 1
                    return
            codes["still open at the end"] += 1
        except OSError:
            codes[f"closed by server within {int(time.monotonic() - t0) // 5 * 5 + 5} s"] += 1
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(n)))
    return codes


async def _closed(reader, wait: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1024), wait) == b"" or True
    except asyncio.TimeoutError:
        return False


def attack_slowloris(port: int) -> collections.Counter:
    return asyncio.run(_trickle(port, 500, 20))


def attack_connections(port: int) -> collections.Counter:
    async def run():
        conns, codes = [], collections.Counter()
        for _ in range(1100):
            try:
                conns.append(await asyncio.open_connection(HOST, port))
            except OSError as e:
                codes[f"connect {type(e).__name__}"] += 1
        await asyncio.sleep(5)
        for reader, writer in conns:
            codes["closed by server" if await _closed(reader, 0.01) else "open after 5 s"] += 1
            writer.close()
        return codes
    return asyncio.run(run())


def attack_origins(url: str) -> collections.Counter:
    image = [("images", ("a.png", png(32, 32), "image/png"))]
    codes: collections.Counter = collections.Counter()
    with httpx.Client(timeout=30) as c:
        for name, headers in {"rebinding Host": {"Host": "attacker.example"},
                              "evil Origin": {"Origin": "http://evil.example"},
                              "cross-site fetch": {"Sec-Fetch-Site": "cross-site"},
                              "same origin": {"Origin": url, "Sec-Fetch-Site": "same-origin"}}.items():
            codes[f"{name} predict {c.post(url + '/v1/predict', files=image, headers=headers).status_code}"] += 1
            codes[f"{name} teach {c.post(url + '/v1/teach/jobs', files=image, headers=headers).status_code}"] += 1
        big = {"images": "x" * 118_000}
        r = c.post(url + "/v1/predict", json=big)
        codes[f"JSON body {r.status_code}, {len(r.content)} bytes back"] += 1
    return codes


def attack_teach(url: str, cache: Path) -> collections.Counter:
    size = lambda: sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())  # noqa: E731
    before = size()
    files = [("images", (f"{i}.png", png(24 + i % 16, 24, (i % 2 * 200, 80, 80)), "image/png"))
             for i in range(1000)]
    labels = [f"c{i % 2}" for i in range(1000)]
    with httpx.Client(timeout=300) as c:
        job = c.post(url + "/v1/teach/jobs", files=files, data={"labels": labels}).json()
        while job.get("status") == "running":
            time.sleep(1)
            job = c.get(f"{url}/v1/teach/jobs/{job['id']}").json()
    return collections.Counter({f"job {job.get('status')}": 1,
                                f"shared feature cache grew by {(size() - before) / 1e6:.1f} MB": 1})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model folder (default: a tiny one trained here)")
    ap.add_argument("--only", nargs="*", default=None,
                    help="attacks to run: flood bombs slowloris connections origins teach")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    tmp = Path(tempfile.mkdtemp(prefix="headstart-hostile-"))
    cache = tmp / "cache"
    env = {**os.environ, "HEADSTART_CACHE_DIR": str(cache)}
    model = Path(args.model) if args.model else train_model(tmp)
    port = free_port()
    url = f"http://{HOST}:{port}"
    log = tmp / "server.log"
    proc = subprocess.Popen([sys.executable, "-m", "headstart.cli", "serve", str(model), "--port", str(port),
                             "--work-dir", str(tmp / "work")], stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"server did not start: {log.read_text()}") from None
                time.sleep(0.3)
        attacks = {"flood": lambda: attack_flood(url), "bombs": lambda: attack_bombs(url),
                   "slowloris": lambda: attack_slowloris(port), "connections": lambda: attack_connections(port),
                   "origins": lambda: attack_origins(url), "teach": lambda: attack_teach(url, cache)}
        print(f"server pid {proc.pid}, default limits; {os.cpu_count()} cores; RSS at start "
              f"{rss_mb(proc.pid):.0f} MB", flush=True)
        # The engine allocates its buffers for the largest batch once: warm it up first, so that
        # "before" is the server's working size, not its size before its first batch of 32.
        warm = [("images", (f"{i}.png", png(64, 64, (i * 8, 90, 90)), "image/png")) for i in range(32)]
        asyncio.run(_post_many(url, 8, lambda i: warm, 4, source=HOST))
        time.sleep(2)
        print(f"RSS after warm-up (8 requests of 32 images): {rss_mb(proc.pid):.0f} MB", flush=True)
        for name in args.only or attacks:
            with Watch(url, proc.pid) as w:
                t0 = time.perf_counter()
                codes = attacks[name]()
                seconds = time.perf_counter() - t0
            w.report(name, codes, seconds)
        tail = [line for line in log.read_text(errors="replace").splitlines() if "Traceback" in line or "EMFILE" in line]
        print(f"server alive: {proc.poll() is None}; tracebacks / EMFILE in its log: {len(tail)}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
