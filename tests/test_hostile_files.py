"""Hostile files, folders and caches: odd names, unreadable folders, pipes, unwritable --out,
a damaged feature cache, killed saves, --sort-into traps, Lab TIFFs and warning floods. Each is
made for real in a temporary folder and must end in a clear message or a correct result, never a
traceback, a hang or a write outside where it belongs."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_class_folder, write_image
from PIL import Image

from headstart.cli.main import main
from headstart.data.images import image_problem, open_image
from headstart.data.scan import find_images, scan
from headstart.errors import HeadstartError

NOT_UTF8 = os.fsdecode(b"bad\xff.png")  # a name no UTF-8 codec can encode as it is


# ---- names that are not UTF-8 -----------------------------------------------------------------
def test_a_file_name_that_is_not_utf8_is_scanned_and_printed(tmp_path):
    data = make_class_folder(tmp_path / "d", n=4)
    write_image(data / "cat" / NOT_UTF8, color=(1, 2, 3), seed=7)
    found = scan(data)
    odd = [s for s in found.samples if s.path.name == NOT_UTF8]
    assert len(odd) == 1 and odd[0].split in ("train", "val", "test")
    r = subprocess.run([sys.executable, "-m", "headstart.cli", "scan", str(data), "--quiet"],
                       capture_output=True, timeout=120)
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr.decode(errors="replace")
    assert b"found 13 images" in r.stdout


def test_a_report_with_such_a_name_is_still_written(tmp_path):
    from headstart.paths import atomic_write_text

    atomic_write_text(tmp_path / "r.html", f"<p>{NOT_UTF8}</p>")
    assert (tmp_path / "r.html").read_text(encoding="utf-8") == "<p>bad\\udcff.png</p>"


# ---- folders that cannot be read, pipes, devices ----------------------------------------------
@contextlib.contextmanager
def _unprivileged():
    """Permission bits bind root only after it drops its effective uid (restored after)."""
    if os.geteuid() != 0:
        yield
        return
    Image.init()  # Pillow's plugins load before the drop
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


@pytest.fixture
def public_tmp():
    """A temporary folder any user may enter (pytest's own is private to its owner)."""
    path = Path(tempfile.mkdtemp(prefix="headstart-hostile-"))
    path.chmod(0o755)
    yield path
    for p in path.rglob("*"):
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)
    shutil.rmtree(path)


def test_an_unreadable_sub_folder_is_reported_not_skipped_silently(public_tmp, capsys):
    data = make_class_folder(public_tmp / "d", n=4)
    for p in [data, *data.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    write_image(data / "dog" / "locked" / "x.png")
    (data / "dog" / "locked").chmod(0)
    with _unprivileged():
        notes = scan(data).notes
        files = find_images([data])
    locked = str(data / "dog" / "locked")
    assert any(f"Cannot read folder '{locked}'" in n and "chmod" in n for n in notes), notes
    assert len(files) == 12 and f"cannot read folder '{locked}'" in capsys.readouterr().err


def test_a_fifo_is_refused_by_name_and_never_opened(tmp_path):
    data = make_class_folder(tmp_path / "d", n=4)
    os.mkfifo(data / "cat" / "pipe.png")
    bad = {b.rel: b for b in scan(data, deep=True).bad}  # opening the pipe would hang here
    assert bad["cat/pipe.png"].reason == "unreadable" and "FIFO" in bad["cat/pipe.png"].detail
    assert data / "cat" / "pipe.png" not in find_images([data])
    with pytest.raises(HeadstartError, match="is a FIFO"):
        find_images([data / "cat" / "pipe.png"])
    assert image_problem(Path("/dev/null"), deep=True)[1].endswith("a character device")


# ---- --out that cannot be written --------------------------------------------------------------
@pytest.mark.parametrize("where", ["/proc/m", "file.jpg/m", "file.jpg"])
def test_train_refuses_an_unwritable_out_before_training(tmp_path, capsys, where):
    data = make_class_folder(tmp_path / "d", n=4)
    write_image(tmp_path / "file.jpg")
    out = where if where.startswith("/") else str(tmp_path / where)
    start = time.perf_counter()
    assert main(["train", str(data), "--out", out, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot save the model to") and "--out" in err, err
    assert time.perf_counter() - start < 5  # refused at once: no features were computed


# ---- the feature cache -------------------------------------------------------------------------
def _damage_pages(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    data = bytearray(path.read_bytes())
    page = struct.unpack(">H", data[16:18])[0]
    for off in range(page, len(data), page):  # the header of every b-tree page after the schema's
        data[off:off + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["not a database", "damaged pages"])
def test_a_damaged_feature_cache_is_quarantined_and_rebuilt(tmp_path, capsys, damage):
    from headstart.features.cache import FeatureCache

    path = tmp_path / "features.sqlite"
    if damage == "not a database":
        path.write_bytes(b"this is not SQLite " * 500)
    else:
        cache = FeatureCache(path)
        cache.put("bb", [(f"d{i}", np.ones(300, np.float32)) for i in range(2000)])
        cache.close()
        _damage_pages(path)
    cache = FeatureCache(path)
    assert cache.get("bb", ["d1"]) == {}  # the damaged rows are gone, not trusted
    cache.put("bb", [("d1", np.full(4, 2.0, np.float32))])
    assert cache.get("bb", ["d1"])["d1"].tolist() == [2.0] * 4 and cache.count() == 1
    err = capsys.readouterr().err
    assert cache.quarantined.exists() and str(cache.quarantined) in err and "is damaged" in err, err


# ---- saves killed half-way -----------------------------------------------------------------------
def _folder(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(text)
    return path


def test_leftovers_of_killed_saves_are_cleaned_and_the_model_restored(tmp_path):
    from headstart.paths import atomic_dir

    dead = 2 ** 22 + 12345  # above any pid this machine hands out (pid_max is at most 2^22)
    model = tmp_path / "model"
    _folder(tmp_path / f".model.{dead}.abcd.tmp", "half")     # killed while writing the new one
    _folder(tmp_path / f".model.old-{dead}", "previous")       # killed between the two renames
    from headstart.paths import recover_dir

    assert recover_dir(model) and (model / "config.json").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with atomic_dir(model) as tmp:
        (tmp / "config.json").write_text("new")
    assert (model / "config.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # nothing hidden left behind


def test_a_save_killed_at_random_points_never_leaves_a_missing_or_half_model(tmp_path):
    """kill -9 a process that keeps replacing a folder; after each kill a complete folder loads."""
    script = ("import sys, os\nfrom headstart.paths import atomic_dir\n"
              "for i in range(10**6):\n"
              "    with atomic_dir(sys.argv[1]) as t:\n"
              "        (t / 'a').write_text(str(i))\n"
              "        (t / 'config.json').write_text(str(i))\n")
    model = tmp_path / "model"
    for delay in (0.01, 0.05, 0.13):
        shutil.rmtree(model, ignore_errors=True)
        p = subprocess.Popen([sys.executable, "-c", script, str(model)])
        deadline = time.monotonic() + 60
        while not (model / "config.json").exists() and time.monotonic() < deadline:
            time.sleep(0.005)  # the first save is done: from now on every kill lands mid-replace
        time.sleep(delay)
        p.kill()
        p.wait()
        from headstart.paths import recover_dir

        recover_dir(model)
        assert (model / "config.json").read_text() == (model / "a").read_text()
        assert [q.name for q in tmp_path.iterdir()] == ["model"]


# ---- predict --sort-into --------------------------------------------------------------------------
def test_sort_into_gives_colliding_labels_their_own_folders(tmp_path):
    from headstart.estimator.sorting import label_folders, sort_into

    labels = ["cat?", "cat!", "a/b", "a?b", "dog", "Dog_"]
    folders = label_folders(labels)
    assert len(set(folders.values())) == len(labels) and folders["dog"] == "dog"
    assert len({f.casefold() for f in folders.values()}) == len(labels)
    rows = [{"file": str(write_image(tmp_path / "in" / f"{i}.png")), "label": lab} for i, lab in enumerate(labels)]
    notes: list[str] = []
    assert sort_into(rows, tmp_path / "out", notes).copied == len(labels)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(folders.values())
    assert any("'cat?'" in n for n in notes)
    assert label_folders([0, 1]) == {0: "0", 1: "1"} and len(set(label_folders([0, "0"]).values())) == 2
    assert sort_into([{"file": rows[0]["file"], "label": 7}], tmp_path / "numbers").copied == 1  # numeric labels too
    assert (tmp_path / "numbers" / "7" / "0.png").is_file()


def test_sort_into_never_writes_through_a_planted_link(tmp_path):
    from headstart.estimator.sorting import sort_into

    src = write_image(tmp_path / "in" / "x.png")
    out = tmp_path / "out"
    (out / "cat").mkdir(parents=True)
    (out / "cat" / "x.png").symlink_to(tmp_path / "outside.png")  # dangling: copy2 would create it
    assert sort_into([{"file": str(src), "label": "cat"}], out).copied == 1
    assert not (tmp_path / "outside.png").exists()
    assert (out / "cat" / "x-1.png").read_bytes() == src.read_bytes()
    (out / "dog").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(HeadstartError, match="symbolic link"):
        sort_into([{"file": str(src), "label": "dog"}], out)


# ---- Lab TIFFs and warning floods ------------------------------------------------------------------
def test_a_lab_tiff_gets_one_answer_from_scan_and_predict(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (40, 40, 3)).astype(np.uint8)
    path = tmp_path / "lab.tif"
    Image.fromarray(rgb).convert("LAB").save(path)
    assert image_problem(path, deep=True) is None and image_problem(path, deep=False) is None
    assert open_image(path, mode="L").size == (40, 40)
    assert np.abs(np.asarray(open_image(path), dtype=int) - rgb).mean() < 3  # real colours back


def _warning_tiff(path: Path, seed: int) -> None:
    """A TIFF whose ImageDescription claims a million bytes: Pillow warns and skips the tag."""
    write_image(path, seed=seed, description="a description")
    data = bytearray(path.read_bytes())
    ifd = struct.unpack("<I", data[4:8])[0]
    for i in range(struct.unpack("<H", data[ifd:ifd + 2])[0]):
        e = ifd + 2 + 12 * i
        if struct.unpack("<H", data[e:e + 2])[0] == 270:
            data[e + 4:e + 8] = struct.pack("<I", 10 ** 6)
    path.write_bytes(bytes(data))


def test_decoder_warnings_are_counted_and_shown_with_verbose(tmp_path, capsys):
    for label in ("cat", "dog"):
        for i in range(4):
            _warning_tiff(tmp_path / "d" / label / f"{i}.tif", seed=i + len(label))
    assert main(["scan", str(tmp_path / "d"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "UserWarning" not in err.replace("'UserWarning: Tag", "")
    assert "warning(s) from the image decoders" in err and "--verbose" in err, err
    assert main(["scan", str(tmp_path / "d"), "--quiet", "--verbose"]) == 0
    assert capsys.readouterr().err.count("Tag data larger than file") >= 8


def _garbled_lzw_tiff(path: Path) -> None:
    """An LZW TIFF whose compressed strips are garbled: libtiff itself complains, in C."""
    pixels = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, compression="tiff_lzw")
    data = bytearray(path.read_bytes())
    for i in range(2000, len(data) - 2000, 7):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def test_libtiff_s_own_messages_are_counted_not_printed(tmp_path, capfd):
    for label in ("cat", "dog"):
        _garbled_lzw_tiff(tmp_path / "d" / label / "bad.tif")
        write_image(tmp_path / "d" / label / "good.png", seed=len(label))
    assert main(["scan", str(tmp_path / "d"), "--quiet"]) == 0
    err = capfd.readouterr().err  # fd-level: libtiff writes past sys.stderr
    assert "Using code not yet in table" not in err.replace("'libtiff: Using code", ""), err
    assert "warning(s) from the image decoders" in err and "libtiff" in err, err
    assert main(["scan", str(tmp_path / "d"), "--quiet", "--verbose"]) == 0
    assert capfd.readouterr().err.count("libtiff: tempfile.tif: Using code not yet in table") == 2
