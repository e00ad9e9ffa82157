"""Frames of a video, sampled at a fixed rate, decoded by PyAV (``pip install 'headstart[video]'``).

PyAV binds FFmpeg's libraries in-process and its wheels bundle them, so no system binary is
needed or downloaded; frames come one at a time with their presentation times, and a damaged
stream raises at the frame where it breaks, so everything before it is kept.

>>> reader = VideoFrames("game.mp4", fps=2)          # doctest: +SKIP
>>> for t, image in reader: ...                       # seconds, PIL image; never the whole video
>>> reader.error                                      # "" or what stopped the decoding
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import HeadstartError

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".wmv", ".flv")


def is_video_path(path: str | Path) -> bool:
    return os.path.splitext(str(path))[1].lower() in VIDEO_EXTENSIONS


def require_av():
    try:
        import av
    except ImportError:
        raise HeadstartError("reading videos needs PyAV (FFmpeg's libraries, bundled in its wheel): "
                             "pip install 'headstart[video]'  (or: pip install av)") from None
    return av


class VideoFrames:
    """Iterate ``(seconds, PIL.Image)`` of ``path`` every ``1 / fps`` seconds (the first frame at
    or after each sampling time), from ``start`` to ``end`` seconds. After the loop: ``error``
    says what stopped a damaged video early ("" when it ended normally), ``frames_read`` how many
    frames were sampled, ``duration`` the length the container states (None when unknown)."""

    def __init__(self, path: str | Path, fps: float = 2.0, start: float = 0.0, end: float | None = None):
        if not (isinstance(fps, (int, float)) and fps > 0):
            raise HeadstartError(f"fps must be a positive number of frames per second, got {fps!r}.")
        self.path, self.fps, self.start, self.end = Path(path), float(fps), float(start), end
        self.error, self.frames_read, self.duration = "", 0, None
        if not self.path.is_file():
            raise HeadstartError(f"video {str(self.path)!r} does not exist.")
        self._container = self._open()
        stream = self._container.streams.video[0]
        if stream.duration is not None and stream.time_base is not None:
            self.duration = float(stream.duration * stream.time_base)
        elif self._container.duration:
            self.duration = self._container.duration / 1_000_000

    def _open(self):
        av = require_av()
        try:
            container = av.open(str(self.path))
        except (av.FFmpegError, OSError, ValueError) as e:
            raise HeadstartError(f"cannot open video {str(self.path)!r}: {getattr(e, 'strerror', None) or e}. Expected a video file FFmpeg reads "
                                 "(mp4, mkv, webm, avi, mov...); check that it is complete (a copy cut short "
                                 "loses the index some formats keep at the end).") from None
        if not container.streams.video:
            container.close()
            raise HeadstartError(f"{str(self.path)!r} has no video stream (audio only?); give a video file.")
        return container

    def close(self) -> None:
        self._container.close()

    def __iter__(self) -> Iterator[tuple[float, object]]:
        av = require_av()
        container, step = self._container, 1.0 / self.fps
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame threads: decoding keeps up with the backbone
        if self.start > 0 and stream.time_base is not None:
            container.seek(int(self.start / stream.time_base), stream=stream, backward=True)
        due, last = self.start, None
        try:
            for frame in container.decode(stream):
                if frame.time is None or frame.time + 1e-6 < due:
                    continue
                if self.end is not None and frame.time >= self.end:
                    break
                self.frames_read, last = self.frames_read + 1, frame.time
                yield round(frame.time, 3), frame.to_image()
                due = self.start + step * (1 + math.floor((frame.time - self.start) / step + 1e-6))  # the next one
        except (av.FFmpegError, EOFError) as e:
            self.error = f"decoding stopped after {self.frames_read} sampled frames: {e}"
        finally:
            container.close()
        self._check_length(last)

    def _check_length(self, last: float | None) -> None:
        """A stream that ends well before the length its header states was cut short."""
        end = self.duration if self.end is None or self.duration is None else min(self.end, self.duration)
        if self.error or end is None:
            return
        if (last if last is not None else self.start) < end - max(2.0 / self.fps, 1.0):
            self.error = (f"the frames stop at {last or 0.0:.1f} s but the file says it lasts {end:.1f} s: "
                          "it is probably truncated (a copy cut short)")
