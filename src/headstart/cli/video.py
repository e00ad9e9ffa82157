"""``headstart predict MODEL game.mp4 [--fps 2] [--timeline FILE.csv|.json]``: a video's timeline
and the segments where each class appears (``estimator.video``); frames decoded by PyAV."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from ..errors import HeadstartError


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("videos (pip install 'headstart[video]')")
    g.add_argument("--fps", type=float, default=2.0, help="frames predicted per second of video (default 2)")
    # --min-confidence is predict's own (cli/predict.py): for a video, frames under it are left out
    g.add_argument("--timeline", metavar="FILE", help="write the timeline as CSV (.csv) or JSON (.json; with the "
                   "segments); several videos: one file per video, named FILE's stem + the video's")


def wants_video(paths: list[str]) -> bool:
    """All of ``paths`` are video files; a mix with images is refused (one kind per command)."""
    from ..data.video import is_video_path

    videos = [p for p in paths if is_video_path(p)]
    if videos and len(videos) != len(paths):
        raise HeadstartError(f"give either videos or images to predict, not both: videos {videos[:3]}, "
                             f"others {[p for p in paths if p not in videos][:3]}.")
    return bool(videos)


def cmd_predict_video(args) -> int:
    from ..estimator import load
    from ..estimator.video import predict_video
    from ..paths import atomic_write_text

    if args.out or args.sort_into or args.labels:
        raise HeadstartError("--out, --sort-into and --labels apply to images; for a video use --timeline FILE.")
    clf = load(args.model, engine=args.engine, verbose=not args.quiet)
    if args.ray is not None:
        from ..estimator.video_ray import predict_videos_ray
        from .cluster import ray_config

        results = predict_videos_ray(clf, args.paths, ray_config(args), fps=args.fps,
                                     min_confidence=args.min_confidence or 0.0)
    else:
        results = (predict_video(clf, p, fps=args.fps, min_confidence=args.min_confidence or 0.0) for p in args.paths)
    for path, v in zip(args.paths, results):
        print(f"{path}: {v.frames_read} frames at {v.fps:g} per second" +
              (f" of {v.duration:.1f} s" if v.duration else ""))
        print("  " + v.summary().replace("\n", "\n  "))
        if args.timeline:
            target = _target(Path(args.timeline), Path(path), len(args.paths))
            atomic_write_text(target, _csv(v.rows) if target.suffix == ".csv" else json.dumps(v.to_dict(), indent=2))
            print(f"  timeline written to {target}", file=sys.stderr)
        elif not args.quiet:
            sys.stdout.write(_csv(v.rows))
    return 0


def _target(timeline: Path, video: Path, n: int) -> Path:
    if timeline.suffix not in (".csv", ".json"):
        raise HeadstartError(f"--timeline {str(timeline)!r}: name a .csv or a .json file.")
    return timeline if n == 1 else timeline.with_name(f"{timeline.stem}-{video.stem}{timeline.suffix}")


def _csv(rows: list[dict]) -> str:
    """time and the task's fields; lists joined with '|', mappings as label:probability;..."""
    buf = io.StringIO()
    if not rows:
        return ""
    w = csv.writer(buf)
    w.writerow(list(rows[0]))
    for r in rows:
        w.writerow([_cell(v) for v in r.values()])
    return buf.getvalue()


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, dict):
        return ";".join(f"{k}:{p:.4f}" for k, p in v.items())
    if isinstance(v, list):
        return "|".join(map(str, v))
    return str(v)
