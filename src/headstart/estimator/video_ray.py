"""A long video over a Ray cluster: cut into time chunks, each predicted by a Ray task
(``predict_video`` from its own start to its own end), joined into one timeline.

Chunks start on the sampling grid (multiples of ``1 / fps``), so the frames sampled are the ones a
single machine samples. The video must be readable by every worker at the same path.

>>> v = predict_video_ray(load("model/"), "match.mp4", RayConfig(num_workers=4), fps=2)   # doctest: +SKIP
"""

from __future__ import annotations

import math

from .video import VideoPrediction, assemble, check_settings, predict_video


def chunks(duration: float, fps: float, n: int) -> list[tuple[float, float | None]]:
    """``n`` spans (start, end) covering ``duration`` seconds, cut on the sampling grid; the last
    one is open-ended (None), so frames past the stated duration are not lost."""
    steps = max(1, math.ceil(duration * fps))
    per = max(1, math.ceil(steps / n))
    cuts = [k / fps for k in range(0, steps, per)]
    return [(a, b) for a, b in zip(cuts, cuts[1:] + [None])]


def predict_video_ray(clf, path, config, fps: float = 2.0, min_confidence: float = 0.0,
                      batch_size: int = 32) -> VideoPrediction:
    """``predict_video`` with the video's chunks spread over ``config`` (a ``RayConfig``)."""
    return predict_videos_ray(clf, [path], config, fps, min_confidence, batch_size)[0]


def predict_videos_ray(clf, paths, config, fps: float = 2.0, min_confidence: float = 0.0,
                       batch_size: int = 32) -> list[VideoPrediction]:
    """Many videos (or one long one) at once: every chunk of every video is a Ray task."""
    from ..data.video import VideoFrames
    from ..features.ray import connect, require_ray

    check_settings(clf, min_confidence)
    durations = []
    for path in paths:  # every file opens before the cluster starts: a bad one fails fast
        probe = VideoFrames(path, fps=fps)
        probe.close()
        durations.append(probe.duration)
    ray = require_ray()
    connect(config)
    task = ray.remote(num_cpus=config.cpus_per_worker, num_gpus=config.gpus_per_worker)(_chunk)
    model = ray.put(clf)
    n = max(1, 2 * config.num_workers)
    refs = [[task.remote(model, str(p), fps, batch_size, a, b) for a, b in chunks(d or 0.0, fps, n)]
            for p, d in zip(paths, durations)]
    return [_joined(clf.task_, str(p), fps, ray.get(r), d, min_confidence)
            for p, r, d in zip(paths, refs, durations)]


def _joined(task, path: str, fps: float, parts: list[VideoPrediction], duration, min_confidence) -> VideoPrediction:
    out = assemble(task, path, fps, [r for part in parts for r in part.rows], min_confidence)
    out.frames_read, out.duration = sum(p.frames_read for p in parts), duration
    broken = [p for p in parts if p.error]
    if broken:
        out.error = broken[0].error  # the earliest: later chunks of a cut file may read nothing at all
    return out


def _chunk(clf, path: str, fps: float, batch_size: int, start: float, end: float | None) -> VideoPrediction:
    return predict_video(clf, path, fps=fps, batch_size=batch_size, start=start, end=end)
