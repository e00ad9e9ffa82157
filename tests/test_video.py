"""Videos: frames sampled by PyAV, a timeline and the segments where each class appears, a clear
message and the frames read for a damaged file; memory flat in the video's length."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from objects import draw

from headstart import HeadstartError
from headstart.cli.main import main

av = pytest.importorskip("av", reason="videos need PyAV: pip install 'headstart[video]'")


def write_video(path: Path, kinds: list[str], fps: int = 10, size: int = 48, seed: int = 0) -> Path:
    """One frame per entry of ``kinds`` ("cross" / "square": the object on fresh clutter)."""
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps, options={"crf": "0"})  # lossless: the object stays sharp
        s.width = s.height = size
        s.pix_fmt = "yuv444p"
        for kind in kinds:
            for packet in s.encode(av.VideoFrame.from_ndarray(draw(kind, size, rng)[0], format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


@pytest.fixture(scope="module")
def game(tmp_path_factory) -> Path:
    """6 s at 10 frames per second: a cross for 3 s, then a square for 3 s."""
    return write_video(tmp_path_factory.mktemp("video") / "game.mp4", ["cross"] * 30 + ["square"] * 30)


def test_timeline_and_segments(objects_model, game):
    from headstart.estimator.video import predict_video

    v = predict_video(objects_model, game, fps=2)
    assert [r["time"] for r in v.rows] == [k / 2 for k in range(12)] and v.frames_read == 12
    assert v.duration == pytest.approx(6.0) and v.error == ""
    labels = [r["label"] for r in v.rows]
    assert labels[:6].count("cross") >= 5 and labels[6:].count("square") >= 5, labels
    main_ones = [s for s in v.segments if s.frames >= 4]
    assert [(s.label, s.start) for s in main_ones][:1] == [("cross", 0.0)]
    assert main_ones[-1].label == "square" and main_ones[-1].end == 6.0
    assert "square from 00:0" in v.summary() and "to 00:06.0" in v.summary()


def test_cli_writes_csv_and_json_timelines(objects_model, game, tmp_path, capsys):
    model = objects_model.save(tmp_path / "model")
    assert main(["predict", str(model), str(game), "--fps", "2", "--timeline", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert "12 frames at 2 per second of 6.0 s" in out and "cross from 00:00.0 to" in out, out
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[0] == "time,label,probability" and len(lines) == 13 and lines[1].startswith("0.0000,")
    assert main(["predict", str(model), str(game), "--fps", "1", "--min-confidence", "0.999999",
                 "--timeline", str(tmp_path / "t.json")]) == 0
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["frames_read"] == 6 and all(r["probability"] >= 0.999999 for r in data["timeline"])
    assert len(data["timeline"]) < 6 and set(data) >= {"segments", "timeline", "error"}


def test_a_truncated_video_keeps_the_frames_read_and_says_so(objects_model, tmp_path):
    from headstart.estimator.video import predict_video

    full = write_video(tmp_path / "full.mkv", ["cross"] * 100)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    v = predict_video(objects_model, cut, fps=2)
    assert 3 <= v.frames_read < 20 and len(v.rows) == v.frames_read
    assert "probably truncated" in v.error and "WARNING" in v.summary()


def test_unreadable_videos_and_mixed_inputs_are_refused(objects_model, game, tmp_path, capsys):
    from headstart.estimator.video import predict_video

    cut = tmp_path / "cut.mp4"  # mp4 keeps its index at the end: cut short, it cannot be opened
    cut.write_bytes(game.read_bytes()[: game.stat().st_size // 2])
    with pytest.raises(HeadstartError, match=r"cannot open video .*cut.mp4.*complete"):
        predict_video(objects_model, cut)
    with pytest.raises(HeadstartError, match="fps must be a positive number"):
        predict_video(objects_model, game, fps=0)
    model = objects_model.save(tmp_path / "model")
    (tmp_path / "a.png").write_bytes(b"")
    assert main(["predict", str(model), str(game), str(tmp_path / "a.png")]) == 2
    assert "either videos or images" in capsys.readouterr().err
    assert main(["predict", str(model), str(tmp_path / "missing.mp4")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_memory_stays_flat_in_the_videos_length(objects_model, tmp_path):
    from headstart.estimator.video import AHEAD, predict_video

    p = objects_model.backbone_.preprocess
    frame = 4 * p.channels * p.input_size ** 2  # one preprocessed frame, float32
    # what may be in flight whatever the length: the queued batches, the one being decoded, the
    # one predicted and its stacked copy (a short video may never fill the queue, so its own peak
    # is no yardstick)
    bound = (AHEAD + 3) * 8 * frame + 512 * 1024
    assert bound < 0.5 * 5 * 36 * frame  # well under what keeping the long video's frames would take
    for seconds in (6, 36):
        path = write_video(tmp_path / f"{seconds}.mp4", ["cross"] * (10 * seconds))
        tracemalloc.start()
        v = predict_video(objects_model, path, fps=5, batch_size=8)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert v.frames_read == 5 * seconds
        assert peak < bound, (seconds, peak, bound)  # the result's rows are a few kB of it


@pytest.mark.slow
def test_ray_chunks_give_the_single_machine_timeline(objects_model, game, local_ray, tmp_path, capsys):
    from headstart.estimator.video import predict_video
    from headstart.estimator.video_ray import predict_video_ray
    from headstart.features.ray import RayConfig

    one = predict_video(objects_model, game, fps=2)
    spread = predict_video_ray(objects_model, game, RayConfig(num_workers=1), fps=2)
    assert [r["time"] for r in spread.rows] == [r["time"] for r in one.rows]
    assert [r["label"] for r in spread.rows] == [r["label"] for r in one.rows]
    assert spread.frames_read == one.frames_read and spread.summary() == one.summary()
    model = objects_model.save(tmp_path / "model")
    other = write_video(tmp_path / "other.mkv", ["square"] * 25, seed=7)
    assert main(["predict", str(model), str(game), str(other), "--ray", "--timeline", str(tmp_path / "t.csv")]) == 0
    assert (tmp_path / "t-game.csv").read_text().count("\n") == 13
    assert (tmp_path / "t-other.csv").read_text().count("\n") == 6  # 2.5 s at 2 per second, and the header
    assert "other.mkv: 5 frames" in capsys.readouterr().out
