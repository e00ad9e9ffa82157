"""Predict a video: frames sampled every ``1 / fps`` seconds, predicted in batches, as a timeline
(one row per frame: time and the task's fields) and the segments where each class appears.

Frames stream from the decoder through the backbone ``batch_size`` at a time, so memory stays
flat in the video's length; only the timeline rows (a few numbers per frame) are kept.

>>> v = predict_video(load("model/"), "game.mp4", fps=2)     # doctest: +SKIP
>>> print(v.summary())
logo_x from 00:12.5 to 00:19.0 (14 frames, mean probability 0.91)
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ..errors import HeadstartError

AHEAD = 2  # decoded batches waiting for the backbone


@dataclass
class Segment:
    label: str
    start: float        # seconds: the first frame showing it
    end: float          # seconds: the frame after the last one showing it (or the last one + 1 / fps)
    frames: int = 0
    probability: float = 0.0  # mean over its frames

    def text(self) -> str:
        return (f"{self.label} from {clock(self.start)} to {clock(self.end)} ({self.frames} frames, "
                f"mean probability {self.probability:.2f})")


@dataclass
class VideoPrediction:
    file: str
    fps: float
    rows: list[dict] = field(default_factory=list)        # {"time", the task's fields}
    segments: list[Segment] = field(default_factory=list)  # by start time
    frames_read: int = 0
    duration: float | None = None                          # what the file states
    error: str = ""                                        # why decoding stopped early ("" when it did not)

    def summary(self) -> str:
        lines = [s.text() for s in self.segments] or ["no class held for a whole frame"]
        if self.error:
            lines.append(f"WARNING {self.file}: {self.error}; the timeline holds the {self.frames_read} frames read.")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"file": self.file, "fps": self.fps, "frames_read": self.frames_read, "duration": self.duration,
                "error": self.error, "timeline": self.rows,
                "segments": [s.__dict__ for s in self.segments]}


def clock(seconds: float) -> str:
    """00:12.4 (hours only when there are some)."""
    m, s = divmod(max(0.0, seconds), 60)
    h, m = divmod(int(m), 60)
    return (f"{h}:" if h else "") + f"{m:02d}:{s:04.1f}"


def predict_video(clf, path, fps: float = 2.0, min_confidence: float = 0.0, batch_size: int = 32,
                  start: float = 0.0, end: float | None = None) -> VideoPrediction:
    """The timeline and segments of one video (``start`` / ``end``: a part of it, in seconds).
    Frames whose probability is under ``min_confidence`` are left out of the timeline and end
    the segments they would extend. ``clf``: a fitted ``ImageClassifier`` or a model folder."""
    from ..data.video import VideoFrames

    if isinstance(clf, (str, os.PathLike)):
        from .classifier import load

        clf = load(clf)

    check_settings(clf, min_confidence)
    reader = VideoFrames(path, fps=fps, start=start, end=end)
    out = assemble(clf.task_, str(path), fps, _rows(clf, reader, batch_size), min_confidence)
    out.frames_read, out.error, out.duration = reader.frames_read, reader.error, reader.duration
    return out


def check_settings(clf, min_confidence: float) -> None:
    clf._check_fitted()
    if min_confidence and clf.task_.numeric:
        raise HeadstartError(f"--min-confidence filters class probabilities; this model's task is "
                             f"{clf.task_.name} (a number per frame). Drop it.")
    if not 0.0 <= min_confidence <= 1.0:
        raise HeadstartError(f"min_confidence is a probability from 0 to 1, got {min_confidence!r}.")


def assemble(task, file: str, fps: float, rows, min_confidence: float) -> VideoPrediction:
    """Timeline rows (in time order, one per sampled frame) -> the kept rows and the segments."""
    out = VideoPrediction(file, float(fps))
    segments = Segments(1.0 / fps)
    for row in rows:
        labels = frame_labels(task, row, min_confidence)
        segments.add(row["time"], labels)
        if task.numeric or labels:
            out.rows.append(row)
    out.segments = segments.close()
    return out


def _rows(clf, reader, batch_size: int) -> Iterator[dict]:
    """Rows in time order: a thread decodes and preprocesses the next batches while the backbone
    runs on this one (at most ``AHEAD`` batches wait, so memory stays flat)."""
    engine = clf.backbone_.engine(prefer=clf.engine)
    batches: queue.Queue = queue.Queue(maxsize=AHEAD)
    stop = threading.Event()
    worker = threading.Thread(target=_decode, args=(reader, clf.backbone_.preprocess, batch_size, batches, stop),
                              name="headstart-video-decode", daemon=True)
    worker.start()
    try:
        while (item := batches.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield from _predicted(clf, *item, engine)
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                batches.get_nowait()
            except queue.Empty:
                worker.join(0.05)


def _decode(reader, p, batch_size: int, batches: queue.Queue, stop: threading.Event) -> None:
    from ..data.transforms import preprocess

    times, arrays = [], []
    try:
        for t, image in reader:
            if stop.is_set():
                return
            times.append(t)
            arrays.append(preprocess(image, p))
            if len(arrays) == batch_size:
                batches.put((times, arrays))
                times, arrays = [], []
        if arrays:
            batches.put((times, arrays))
    except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
        batches.put(e)
        return
    batches.put(None)


def _predicted(clf, times, arrays, engine) -> list[dict]:
    rows = clf.predict_inputs(np.stack(arrays), top_k=1, engine=engine)
    return [{"time": t, **{k: v for k, v in r.items() if k not in ("top", "threshold")}} for t, r in zip(times, rows)]


def frame_labels(task, row: dict, min_confidence: float) -> dict[str, float]:
    """The classes (multilabel: the labels) a frame shows with their probability; {} for numbers."""
    if task.numeric:
        return {}
    if task.has_classes:
        return {row["label"]: row["probability"]} if row["probability"] >= min_confidence else {}
    probs = row["probabilities"]  # multilabel: {label: probability}; "labels" are those over their thresholds
    return {k: probs[k] for k in row["labels"] if probs[k] >= min_confidence}


class Segments:
    """Runs of consecutive sampled frames showing the same class, built one frame at a time."""

    def __init__(self, step: float):
        self.step, self.open, self.done = step, {}, []

    def add(self, time: float, labels: dict[str, float]) -> None:
        for label in [k for k in self.open if k not in labels]:
            self.done.append(self._finish(self.open.pop(label), time))
        for label, p in labels.items():
            s = self.open.setdefault(label, Segment(label, time, time))
            s.frames, s.probability, s.end = s.frames + 1, s.probability + p, time

    def close(self) -> list[Segment]:
        self.done += [self._finish(s, s.end + self.step) for s in self.open.values()]
        self.open = {}
        return sorted(self.done, key=lambda s: (s.start, s.label))

    @staticmethod
    def _finish(s: Segment, end: float) -> Segment:
        s.end, s.probability = round(end, 3), round(s.probability / max(1, s.frames), 4)
        return s
