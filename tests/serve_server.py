"""Start the real ``headstart serve`` in a subprocess on a free loopback port (for the serve tests)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``with Server([model_dir, "--token", "t"]) as srv: httpx.get(srv.url + "/healthz")``"""

    def __init__(self, args: list[str], token: str | None = None, log: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [str(a) for a in args]
        self.token = token
        self.log = log
        self.proc: subprocess.Popen | None = None

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def __enter__(self) -> "Server":
        out = open(self.log, "wb") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, "-m", "headstart.cli", "serve", *self.args,
                                      "--port", str(self.port)], stdout=out, stderr=out, env=dict(os.environ))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"headstart serve exited with {self.proc.returncode}"
                                   + (f"; log: {Path(self.log).read_text()}" if self.log else ""))
            try:
                if httpx.get(self.url + "/healthz", headers=self.headers(), timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError("headstart serve did not answer /healthz within 120 s")

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def shape_image(path: str | Path, kind: str, seed: int, size: int = 96) -> Path:
    """A picture a real backbone tells apart: red discs ("circles") or blue bands ("stripes")."""
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    img = Image.new("RGB", (size, size), (245, 245, 240))
    d = ImageDraw.Draw(img)
    if kind == "circles":
        for _ in range(rng.randint(1, 3)):
            r = rng.randint(12, 30)
            x, y = rng.randint(r, size - r), rng.randint(r, size - r)
            d.ellipse((x - r, y - r, x + r, y + r), fill=(rng.randint(190, 240), rng.randint(20, 60), 40))
    else:
        step = rng.randint(8, 16)
        for y in range(rng.randint(0, step), size, step):
            d.rectangle((0, y, size, y + step // 2), fill=(40, rng.randint(60, 100), rng.randint(190, 240)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def shape_folder(root: str | Path, n: int = 4, seed: int = 0) -> Path:
    """``root/{circles,stripes}/<i>.png``, n pictures each."""
    for kind in ("circles", "stripes"):
        for i in range(n):
            shape_image(Path(root) / kind / f"{kind}_{i}.png", kind, seed + i)
    return Path(root)
