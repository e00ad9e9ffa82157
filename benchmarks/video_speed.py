"""Video prediction speed vs the bare backbone, in one run.

    .venv/bin/python benchmarks/video_speed.py [--model MODEL_DIR] [--data DIR] [--seconds 20]

Writes a video of ``--seconds`` (real photos from DATA, each held 1 s, 640x360, 25 frames per
second, H.264 by PyAV), then prints: the bare backbone's images/s on random tensors (the
fastest way of running it, ``bare.py``); frames/s of decoding alone; and frames/s of
``predict_video`` (decode, sample, preprocess, backbone, head) at --fps 2 and at every frame
(25), with the ratio of the every-frame rate to the bare backbone. Without --model, an
untrained head stands in (its cost is negligible). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from predict_speed import DEFAULT_DATA, bare_rates_now, classifier  # noqa: E402


def write_video(path: Path, photos: list[Path], seconds: int, fps: int = 25) -> Path:
    import av
    from PIL import Image

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = 640, 360, "yuv420p"
        for k in range(seconds):
            with Image.open(photos[k % len(photos)]) as im:
                frame = av.VideoFrame.from_image(im.convert("RGB").resize((640, 360)))
            for _ in range(fps):
                for packet in s.encode(frame):
                    c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--engine", default="auto")
    args = ap.parse_args()
    from bare import best, describe

    from headstart.data.video import VideoFrames
    from headstart.estimator.video import predict_video

    clf = classifier(args.model, args.engine)
    photos = sorted(Path(args.data).rglob("*.jpg"))[:: 37]
    video = write_video(Path(tempfile.mkdtemp()) / "bench.mp4", photos, args.seconds)
    rates = bare_rates_now(clf, 32, 5.0)
    print("bare backbone (batch 32):", describe(rates))
    _, bare = best(rates)
    for fps in (2, 25):
        t = time.perf_counter()
        n = sum(1 for _ in VideoFrames(video, fps=fps))
        print(f"decode only at --fps {fps}: {n / (time.perf_counter() - t):.1f} frames/s ({n} frames)")
        t = time.perf_counter()
        v = predict_video(clf, video, fps=fps)
        wall = time.perf_counter() - t
        rate = v.frames_read / wall
        print(f"predict_video at --fps {fps}: {rate:.1f} predicted frames/s ({v.frames_read} frames, "
              f"{args.seconds / wall:.1f} s of video per s), {rate / bare:.2f}x the bare backbone")
    rates = bare_rates_now(clf, 32, 5.0)
    print("bare backbone again (batch 32):", describe(rates), f"-> {np.mean([bare, best(rates)[1]]):.1f} img/s mean")


if __name__ == "__main__":
    main()
