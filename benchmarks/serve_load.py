"""Load and fault benchmark for ``headstart serve`` (loopback only, bounded in count and time).

    .venv/bin/python benchmarks/serve_load.py                      # 10,000 requests per level
    .venv/bin/python benchmarks/serve_load.py --requests 300 --no-faults --levels 8   # while developing

1. The bare backbone's throughput (engine only, batches of 32 preprocessed images), measured
   here in the same run: the baseline for the served images/s. It is measured again (5 s, the
   server idle) after each level, and each level's ratio uses the mean of the measurements
   just before and just after it, so that a machine shared with other work moves both sides.
2. ``headstart serve`` in a subprocess; this process fires prediction requests (one 320x240
   JPEG each) at concurrency 1, 8 and 32: images/s, p50 / p99 latency, errors, images/s as a
   ratio to the bare backbone, and the CPU milliseconds per image spent by the server process
   and by this client (on a shared machine CPU time moves less than wall time). The client is
   lean on purpose, since it shares the cores with the server: every request is built once as
   bytes and written to a kept-alive connection with asyncio streams.
3. A fault run: malformed multipart, truncated images, 200 MB bodies, decompression bombs, a
   wrong token, thousands of tiny requests and clients that vanish mid-upload, interleaved
   with a steady stream of good requests. Every good request must succeed; the server's RSS
   before, at its peak and after are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw

TOKEN = "bench-token"
HOST = "127.0.0.1"


# ---- inputs ---------------------------------------------------------------------------------

def photo(kind: str, seed: int, size=(320, 240)) -> bytes:
    """A JPEG the backbone can tell apart: red discs or blue bands on a noisy background."""
    rng = random.Random(seed)
    noise = np.random.default_rng(seed).integers(200, 250, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(noise)
    d = ImageDraw.Draw(img)
    w, h = size
    if kind == "circles":
        for _ in range(rng.randint(1, 4)):
            r = rng.randint(20, 60)
            x, y = rng.randint(r, w - r), rng.randint(r, h - r)
            d.ellipse((x - r, y - r, x + r, y + r), fill=(rng.randint(190, 240), rng.randint(20, 60), 40))
    else:
        step = rng.randint(12, 30)
        for y in range(rng.randint(0, step), h, step):
            d.rectangle((0, y, w, y + step // 2), fill=(40, rng.randint(60, 100), rng.randint(190, 240)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    import struct
    import zlib

    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    i = data.index(b"IHDR")
    data[i + 4:i + 12] = struct.pack(">II", width, height)
    data[i + 17:i + 21] = struct.pack(">I", zlib.crc32(bytes(data[i:i + 17])))
    return bytes(data)


def train_model(root: Path) -> Path:
    from headstart import ImageClassifier

    for kind in ("circles", "stripes"):
        for i in range(12):
            p = root / "data" / kind / f"{i}.jpg"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(photo(kind, i))
    clf = ImageClassifier(val_fraction=0.25, test_fraction=0.0).fit(root / "data")
    return clf.save(root / "model")


class Backbone:
    """The engine alone on preprocessed batches of 32 (what the server runs), measured on demand
    the two ways ONNX Runtime can use the cores (bare.py); the faster one is the baseline."""

    def __init__(self, images: list[bytes], engine: str = "auto"):
        from headstart.backbones import create_backbone
        from headstart.data.images import open_image
        from headstart.data.transforms import preprocess

        self.bb = create_backbone("efficientnet_lite0")
        self.engine = engine
        p = self.bb.preprocess
        self.x = np.stack([preprocess(open_image(images[i % len(images)]), p) for i in range(32)])  # (32, C, H, W)

    def throughput(self, seconds: float) -> tuple[float, float]:
        """Images/s and CPU ms per image of the faster way, over about ``seconds`` in all."""
        from bare import bare_rates, best

        rates = bare_rates(self.bb, self.x, seconds / 2, engine=self.engine)
        name, img_s = best(rates)
        return img_s, rates[name]["cpu_ms"]


# ---- server -----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(model: Path, port: int, log: Path, extra: list[str] = ()) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "headstart.cli", "serve", str(model), "--host", HOST, "--port", str(port),
           "--token", TOKEN, *extra]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()}")
        try:
            if httpx.get(f"http://{HOST}:{port}/healthz", headers=auth(), timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("server did not start within 180 s")


def auth(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


# ---- load -------------------------------------------------------------------------------------
# A lean client, so that its own CPU (it shares the machine with the server) stays small: each
# request is built once, as bytes, and sent over a kept-alive connection with asyncio streams.

BOUNDARY = "headstart-bench-boundary"


def request_bytes(image: bytes, name: str, port: int, top_k: int = 1) -> bytes:
    """A complete ``POST /v1/predict`` with one JPEG part, ready to write to a socket."""
    body = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="images"; filename="{name}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n").encode() + image + f"\r\n--{BOUNDARY}--\r\n".encode()
    head = (f"POST /v1/predict?top_k={top_k} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, server closes) of one HTTP/1.1 response with a Content-Length."""
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    status = int(head[9:12])
    i = head.find(b"\r\ncontent-length:")
    if i < 0:
        raise ValueError("response without Content-Length")
    length = int(head[i + 17:head.index(b"\r\n", i + 2)])
    return status, await reader.readexactly(length), b"\r\nconnection: close" in head


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load_level(port: int, requests: list[bytes], n: int, concurrency: int, max_seconds: float,
                     server_pid: int | None = None) -> dict:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    issued = 0
    deadline = time.perf_counter() + max_seconds

    async def worker():
        nonlocal issued
        conn = None
        while issued < n and time.perf_counter() < deadline:
            i = issued
            issued += 1
            t0 = time.perf_counter()
            try:
                if conn is None:
                    conn = await asyncio.open_connection(HOST, port)
                conn[1].write(requests[i % len(requests)])
                status, body, close = await read_response(conn[0])
                if close:
                    conn[1].close()
                    conn = None
                key = None if status == 200 and b'"label"' in body else str(status)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
                key, conn = type(e).__name__, None
            if key is None:
                latencies.append(time.perf_counter() - t0)
            else:
                errors[key] = errors.get(key, 0) + 1
        if conn is not None:
            conn[1].close()

    server_cpu, client_cpu = (cpu_seconds(server_pid) if server_pid else 0.0), time.process_time()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    done = max(1, len(latencies))
    server_ms = (cpu_seconds(server_pid) - server_cpu) / done * 1000 if server_pid else float("nan")
    lat = np.array(latencies) * 1000
    return {"concurrency": concurrency, "requests": issued, "ok": len(latencies), "errors": errors,
            "images_s": len(latencies) / wall, "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"), "seconds": wall,
            "server_cpu_ms": server_ms, "client_cpu_ms": (time.process_time() - client_cpu) / done * 1000}


# ---- faults -----------------------------------------------------------------------------------

async def vanish_mid_upload(port: int) -> str:
    _reader, writer = await asyncio.open_connection(HOST, port)
    writer.write((f"POST /v1/predict HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {TOKEN}\r\n"
                  "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 5000000\r\n\r\n"
                  '--b\r\nContent-Disposition: form-data; name="images"; filename="a.jpg"\r\n\r\n').encode()
                 + b"\xff" * 20000)
    await writer.drain()
    writer.close()
    return "vanished"


async def fault_run(url: str, port: int, pid: int, images: list[bytes], tiny: int, good_concurrency: int = 4) -> dict:
    good = photo("circles", 999)
    truncated = good[: len(good) // 2]
    bomb_huge, bomb_over = png_bomb(100_000, 100_000), png_bomb(8_000, 8_000)
    stats = {"good_ok": 0, "good_failed": 0, "good_errors": {}}
    outcomes: dict[str, dict[str, int]] = {}
    stop = asyncio.Event()
    peak = rss_mb(pid)

    def note(kind: str, result: str) -> None:
        outcomes.setdefault(kind, {})
        outcomes[kind][result] = outcomes[kind].get(result, 0) + 1

    # The good client has its own connections, as a real one would (not the attacker's pool).
    async with httpx.AsyncClient(base_url=url, headers=auth(), timeout=120,
                                 limits=httpx.Limits(max_connections=64)) as client, \
            httpx.AsyncClient(base_url=url, headers=auth(), timeout=120) as good_client:
        async def good_stream():
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    r = await good_client.post("/v1/predict", files=[("images", (f"g{i}.jpg", images[i % len(images)], "image/jpeg"))])
                    ok = r.status_code == 200 and "label" in r.json()["predictions"][0]
                    key = str(r.status_code)
                except httpx.HTTPError as e:
                    ok, key = False, type(e).__name__
                if ok:
                    stats["good_ok"] += 1
                else:
                    stats["good_failed"] += 1
                    stats["good_errors"][key] = stats["good_errors"].get(key, 0) + 1

        async def send(kind: str, **kw):
            try:
                r = await client.request(kw.pop("method", "POST"), kw.pop("path", "/v1/predict"), **kw)
                is_json = r.headers.get("content-type", "").startswith("application/json") and "error" in r.json()
                note(kind, f"{r.status_code}{'' if is_json or r.status_code == 200 else ' (not JSON!)'}")
            except httpx.HTTPError as e:
                note(kind, f"closed by server ({type(e).__name__})")

        async def big_body():  # streamed, no Content-Length: the server must count it
            yield (b'--q\r\nContent-Disposition: form-data; name="images"; filename="huge.jpg"\r\n'
                   b"Content-Type: image/jpeg\r\n\r\n")
            chunk = b"\0" * (1 << 20)
            for _ in range(200):
                yield chunk

        async def sampler():
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, rss_mb(pid))
                await asyncio.sleep(0.1)

        async def tiny_requests():
            sem = asyncio.Semaphore(32)

            async def one(i):
                async with sem:
                    if i % 2:
                        await send("tiny request", files=[("images", ("t.jpg", b"x", "image/jpeg"))])
                    else:
                        await send("tiny request", method="GET", path="/healthz")
            await asyncio.gather(*(one(i) for i in range(tiny)))

        faults = []
        for i in range(40):
            faults += [
                send("malformed multipart", content=b"garbage--zz\r\n\r\n", headers={"content-type": "multipart/form-data; boundary=zz"}),
                send("truncated image", files=[("images", ("t.jpg", truncated, "image/jpeg"))]),
                send("decompression bomb", files=[("images", ("b.png", bomb_huge if i % 2 else bomb_over, "image/png"))]),
                send("wrong token", headers=auth("wrong"), files=[("images", ("g.jpg", good, "image/jpeg"))]),
                vanish_mid_upload(port),
            ]
        for i in range(3):
            faults.append(send("200 MB body", content=big_body(), headers={"content-type": "multipart/form-data; boundary=q"}))
            faults.append(send("200 MB body", files=[("images", ("huge.jpg", b"\0" * (200 << 20), "image/jpeg"))]))
        random.Random(0).shuffle(faults)

        goods = [asyncio.create_task(good_stream()) for _ in range(good_concurrency)]
        watcher = asyncio.create_task(sampler())
        t0 = time.perf_counter()
        sem = asyncio.Semaphore(8)

        async def limited(coro):
            async with sem:
                r = await coro
                if r == "vanished":
                    note("client vanishes mid-upload", "disconnected")

        try:
            await asyncio.gather(*(limited(f) for f in faults), tiny_requests())
            await asyncio.sleep(1.0)  # good requests keep going right after the faults
        finally:
            stop.set()
        await asyncio.gather(*goods, watcher)
        seconds = time.perf_counter() - t0
    return {**stats, "outcomes": outcomes, "peak_mb": peak, "seconds": seconds}


# ---- main -------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=10_000, help="requests per concurrency level (default 10,000)")
    ap.add_argument("--levels", default="1,8,32", help="concurrency levels (default 1,8,32; '' for the fault run only)")
    ap.add_argument("--max-seconds", type=float, default=900, help="cap on each level's duration (default 900 s)")
    ap.add_argument("--tiny", type=int, default=3000, help="tiny requests in the fault run (default 3,000)")
    ap.add_argument("--model", help="model folder (default: train a small one on generated images)")
    ap.add_argument("--no-faults", action="store_true")
    ap.add_argument("--engine", default="auto", choices=["auto", "openvino", "onnxruntime", "torch"],
                    help="what runs the backbone, in the server and in the bare baseline (default auto)")
    ap.add_argument("--serve-args", default="", help="extra options for headstart serve, e.g. '--batch-wait-ms 2'")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="headstart-serve-bench-"))
    os.environ.setdefault("HEADSTART_CACHE_DIR", str(work / "cache"))
    images = [photo("circles" if i % 2 else "stripes", 1000 + i) for i in range(64)]
    print(f"machine: {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at start")
    t0 = time.perf_counter()
    model = Path(args.model) if args.model else train_model(work)
    print(f"model: {'given' if args.model else f'trained on 24 generated JPEGs in {time.perf_counter() - t0:.0f} s'}")
    backbone = Backbone(images, args.engine)
    base, base_cpu = backbone.throughput(15)
    print(f"bare backbone (engine only, batch 32): {base:.1f} images/s, {base_cpu:.1f} CPU ms per image\n")

    port = free_port()
    url = f"http://{HOST}:{port}"
    server = start_server(model, port, work / "server.log", ["--engine", args.engine, *args.serve_args.split()])
    requests = [request_bytes(im, f"{i}.jpg", port) for i, im in enumerate(images)]
    try:
        print(f"{'concurrency':>11} {'requests':>9} {'errors':>7} {'images/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'backbone':>9} {'ratio':>6} {'server CPU ms/img':>17} {'client':>7}  load")
        asyncio.run(load_level(port, requests, 64, 4, 60))  # warm-up
        before = base
        for c in [int(x) for x in args.levels.split(",") if x.strip()]:
            r = asyncio.run(load_level(port, requests, args.requests, c, args.max_seconds, server.pid))
            load = os.getloadavg()[0]
            after, _ = backbone.throughput(5)
            ref = (before + after) / 2
            before = after
            errs = sum(r["errors"].values())
            print(f"{c:>11} {r['ok'] + errs:>9} {errs:>7} {r['images_s']:>9.1f} {r['p50_ms']:>8.1f} "
                  f"{r['p99_ms']:>8.1f} {ref:>9.1f} {r['images_s'] / ref:>5.2f}x {r['server_cpu_ms']:>17.1f} "
                  f"{r['client_cpu_ms']:>7.1f}  {load:.1f}" + (f"  {r['errors']}" if errs else "")
                  + ("  (stopped at --max-seconds)" if r["requests"] < args.requests else ""), flush=True)
        stats = httpx.get(url + "/healthz", headers=auth()).json()["batching"]["served"]
        print(f"batching: {stats['requests']} requests in {stats['batches']} model calls, largest {stats['largest']} images")
        if not args.no_faults:
            time.sleep(1)
            before = rss_mb(server.pid)
            f = asyncio.run(fault_run(url, port, server.pid, images, args.tiny))
            time.sleep(3)
            after = rss_mb(server.pid)
            alive = httpx.get(url + "/healthz", headers=auth()).status_code == 200
            print(f"\nfault run ({f['seconds']:.0f} s), interleaved with good requests:")
            for kind, res in sorted(f["outcomes"].items()):
                print(f"  {kind:<28} " + ", ".join(f"{k}: {v}" for k, v in sorted(res.items())))
            print(f"  good requests: {f['good_ok']} ok, {f['good_failed']} failed" +
                  (f" {f['good_errors']}" if f["good_failed"] else ""))
            print(f"  server RSS: before {before:.0f} MB, peak {f['peak_mb']:.0f} MB, after {after:.0f} MB "
                  f"({after / before:.2f}x); still serving: {alive}")
    finally:
        server.terminate()
        server.wait(timeout=20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
