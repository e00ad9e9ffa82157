"""scan() reads a folder's layout, splits it stably, reports bad files and duplicates."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from conftest import folder_state, make_class_folder, truncate_file, write_image

from headstart.data import assign_split, find_images, scan
from headstart.data.split import check_fractions
from headstart.errors import HeadstartError


def make_split_folder(root: Path, splits=("train", "val", "test"), classes=("cat", "dog"),
                      n: int = 4) -> Path:
    for split in splits:
        make_class_folder(root / split, classes, n=n, size=(24, 24))
    return root


# --- layouts -------------------------------------------------------------------------------

def test_classes_layout(class_folder):
    result = scan(class_folder)
    assert result.layout == "classes" and result.root == class_folder.resolve()
    assert result.labels == ["cat", "dog", "fish"]
    assert len(result.samples) == 18 and not result.bad and not result.duplicates
    assert [s.rel for s in result.samples] == sorted(s.rel for s in result.samples)
    s = result.samples[0]
    assert s.rel == "cat/cat_000.png" and s.label == "cat" and s.path.is_absolute()
    assert s.digest == hashlib.sha256(s.path.read_bytes()).hexdigest()
    assert s.split == assign_split("cat_000.png", 0.1, 0.1)  # key: path inside the class
    counts = result.counts()
    assert set(counts) == {"cat", "dog", "fish"} and set(counts["cat"]) == {"train", "val", "test"}
    assert sum(counts["cat"].values()) == 6
    assert sum(len(result.subset(split)) for split in ("train", "val", "test")) == 18
    with pytest.raises(HeadstartError, match="Unknown split 'validation'"):
        result.subset("validation")


def test_splits_layout_used_as_given_with_validation_alias(tmp_path):
    root = make_split_folder(tmp_path / "data", splits=("train", "validation", "test"))
    result = scan(root)
    assert result.layout == "splits" and result.labels == ["cat", "dog"]
    by_rel = {s.rel: s.split for s in result.samples}
    assert by_rel["validation/dog/dog_001.png"] == "val"
    assert {by_rel[r] for r in by_rel if r.startswith("train/")} == {"train"}
    assert result.counts() == {label: {"train": 4, "val": 4, "test": 4} for label in ("cat", "dog")}
    assert result.notes == []


def test_missing_val_is_carved_from_train(tmp_path):
    root = make_split_folder(tmp_path / "data", splits=("train", "test"), n=30)
    result = scan(root, val_fraction=0.3)
    train_folder = [s for s in result.samples if s.rel.startswith("train/")]
    assert {s.split for s in train_folder} == {"train", "val"}
    for s in train_folder:
        assert s.split == assign_split(Path(s.rel).name, 0.3, 0.0)
    assert {s.split for s in result.samples if s.rel.startswith("test/")} == {"test"}
    assert any("No val folder: 30% of train" in note for note in result.notes)


def test_missing_test_is_carved_and_zero_fraction_means_none(tmp_path):
    root = make_split_folder(tmp_path / "data", splits=("train", "val"), n=30)
    result = scan(root, test_fraction=0.3)
    assert {s.split for s in result.samples if s.rel.startswith("train/")} == {"train", "test"}
    assert any("No test folder" in note for note in result.notes)
    none = scan(root, test_fraction=0.0)
    assert not none.subset("test")
    assert any("test_fraction=0: there is no test split" in note for note in none.notes)


def test_test_only_class_is_noted(tmp_path):
    root = make_split_folder(tmp_path / "data", splits=("train", "test"))
    write_image(root / "test" / "bird" / "b1.png", (24, 24))
    result = scan(root)
    assert "bird" in result.labels
    assert any("'bird' appear in test but not in train" in note for note in result.notes)


def test_mixed_split_and_class_folders_is_an_error(tmp_path):
    root = make_split_folder(tmp_path / "data", splits=("train",))
    make_class_folder(root, ("cat",), n=2)
    with pytest.raises(HeadstartError, match=r"mixes split folders \(train\) with other "
                                             r"folders \(cat\)"):
        scan(root)


# --- the stable split ---------------------------------------------------------------------

def test_split_fractions_are_roughly_respected():
    splits = [assign_split(f"img_{i:05d}.jpg", 0.2, 0.1) for i in range(1000)]
    assert 150 < splits.count("val") < 250
    assert 60 < splits.count("test") < 140
    assert assign_split("x.jpg", 0.0, 0.0) == "train"


def test_adding_images_moves_none_of_the_old_ones(class_folder):
    before = {s.rel: s.split for s in scan(class_folder).samples}
    for i in range(50):
        write_image(class_folder / ("cat", "dog", "fish")[i % 3] / f"new_{i:02d}.png", (16, 16))
    after = {s.rel: s.split for s in scan(class_folder).samples}
    assert len(after) == len(before) + 50
    assert {rel: after[rel] for rel in before} == before


def test_split_key_ignores_the_class_folder(class_folder):
    before = {s.rel.split("/", 1)[1]: s.split for s in scan(class_folder).samples}
    (class_folder / "fish").rename(class_folder / "goldfish")
    after = {s.rel.split("/", 1)[1]: s.split for s in scan(class_folder).samples}
    assert after == before


@pytest.mark.parametrize("val, test, message", [
    (-0.1, 0.1, r"val_fraction must be a number in \[0, 1\), got -0.1"),
    (0.1, 1.0, r"test_fraction must be a number in \[0, 1\), got 1.0"),
    (0.6, 0.5, r"must be below 1 .* got 0.6 \+ 0.5"),
    ("0.1", 0.1, r"val_fraction must be a number in \[0, 1\), got '0.1'"),
])
def test_bad_fractions_are_explained(val, test, message, class_folder):
    with pytest.raises(HeadstartError, match=message):
        check_fractions(val, test)
    with pytest.raises(HeadstartError, match=message):
        scan(class_folder, val_fraction=val, test_fraction=test)


# --- bad files, duplicates, what is skipped ----------------------------------------------

def test_bad_files_are_reported_not_used(class_folder):
    (class_folder / "cat" / "empty.jpg").write_bytes(b"")
    (class_folder / "dog" / "readme.JPG").write_text("not a picture")
    truncate_file(write_image(class_folder / "fish" / "cut.jpg", (64, 64)))
    fast = scan(class_folder)
    assert [(b.rel, b.reason) for b in fast.bad] == [
        ("cat/empty.jpg", "empty"), ("dog/readme.JPG", "not_an_image")]
    assert "fish/cut.jpg" in {s.rel for s in fast.samples}  # headers look fine
    deep = scan(class_folder, deep=True)
    assert ("fish/cut.jpg", "truncated") in [(b.rel, b.reason) for b in deep.bad]
    assert len(deep.samples) == 18


def test_duplicates_are_grouped_and_flagged(class_folder):
    shutil.copyfile(class_folder / "cat" / "cat_000.png", class_folder / "dog" / "copy.png")
    shutil.copyfile(class_folder / "dog" / "dog_001.png", class_folder / "dog" / "dog_001b.png")
    result = scan(class_folder)
    groups = {tuple(g.rels): g for g in result.duplicates}
    across = groups[("cat/cat_000.png", "dog/copy.png")]
    assert across.labels == ["cat", "dog"] and across.spans_classes
    same = groups[("dog/dog_001.png", "dog/dog_001b.png")]
    assert not same.spans_classes and same.splits == [assign_split(f, 0.1, 0.1) for f in
                                                     ("dog_001.png", "dog_001b.png")]


def test_duplicates_across_splits_are_flagged(tmp_path):
    root = make_split_folder(tmp_path / "data", n=2)
    shutil.copyfile(root / "train/cat/cat_000.png", root / "test/cat/leak.png")
    shutil.copyfile(root / "val/dog/dog_000.png", root / "val/dog/again.png")
    groups = {tuple(g.rels): g for g in scan(root).duplicates}
    leak = groups[("test/cat/leak.png", "train/cat/cat_000.png")]
    assert leak.spans_splits and not leak.spans_classes and leak.splits == ["test", "train"]
    same = groups[("val/dog/again.png", "val/dog/dog_000.png")]
    assert not same.spans_splits and not same.spans_classes


def test_hidden_loose_and_other_files_are_skipped_and_noted(class_folder):
    write_image(class_folder / ".thumbs" / "t.png")
    write_image(class_folder / "cat" / ".hidden.png")
    write_image(class_folder / "cat" / ".cache" / "c.png")
    write_image(class_folder / "loose.png")
    (class_folder / "cat" / "notes.txt").write_text("hi")
    (class_folder / "labels.csv").write_text("a,b")
    (class_folder / "empty_class").mkdir()
    result = scan(class_folder)
    assert len(result.samples) == 18 and result.labels == ["cat", "dog", "fish"]
    notes = " | ".join(result.notes)
    assert "Ignored 1 image(s) lying outside any class folder, e.g. 'loose.png'" in notes
    assert "Ignored 2 file(s) that are not images by their extension (.csv: 1, .txt: 1)" in notes
    assert "'empty_class' has no images" in notes


def test_symlinks_are_followed_without_looping(class_folder, tmp_path):
    outside = write_image(tmp_path / "elsewhere" / "linked.png")
    os.symlink(outside, class_folder / "cat" / "linked.png")
    os.symlink(class_folder / "cat", class_folder / "cat" / "loop")  # a folder loop
    result = scan(class_folder)
    rels = [s.rel for s in result.samples if s.label == "cat"]
    assert "cat/linked.png" in rels and len(rels) == 7


def test_scan_leaves_the_folder_untouched(class_folder):
    truncate_file(write_image(class_folder / "dog" / "cut.jpg", (64, 64)))
    (class_folder / "cat" / "bad.png").write_text("x")
    before = folder_state(class_folder)
    scan(class_folder, deep=True)
    find_images([class_folder])
    assert folder_state(class_folder) == before


def test_progress_bar_goes_to_stderr(class_folder, capsys):
    scan(class_folder, progress=True)
    captured = capsys.readouterr()
    assert "Scanning" in captured.err and "18/18" in captured.err and captured.out == ""


# --- errors -------------------------------------------------------------------------------

def test_missing_folder(tmp_path):
    with pytest.raises(HeadstartError, match=r"'.*nope' does not exist.*one sub-folder per class"):
        scan(tmp_path / "nope")


def test_file_instead_of_folder(tmp_path):
    path = write_image(tmp_path / "a.png")
    with pytest.raises(HeadstartError, match=r"a.png' is a file, not a folder") as info:
        scan(path)
    assert str(tmp_path) in str(info.value)


def test_no_images_explains_the_layout(tmp_path):
    root = tmp_path / "photos"
    write_image(root / "a.jpg")
    (root / "notes.txt").parent.mkdir(exist_ok=True)
    (root / "notes.txt").write_text("x")
    with pytest.raises(HeadstartError) as info:
        scan(root)
    message = str(info.value)
    assert "No images found in class folders" in message
    assert "1 image(s) directly in the folder" in message and "'a.jpg'" in message
    assert ".jpeg" in message and ".webp" in message
    assert "cat/001.jpg" in message and "train/cat/001.jpg" in message


def test_one_class_is_not_enough(tmp_path):
    root = make_class_folder(tmp_path / "photos", ("cat",), n=3)
    with pytest.raises(HeadstartError, match=r"only one class, 'cat' \(3 image\(s\)\).*"
                                             r"at least two classes"):
        scan(root)


def test_data_one_level_too_high_gets_the_folder_it_meant(tmp_path):
    for split in ("train", "test"):
        make_class_folder(tmp_path / "wrap" / "hymenoptera" / split, ("ants", "bees"), n=2)
    with pytest.raises(HeadstartError, match="only one class, 'hymenoptera'") as info:
        scan(tmp_path / "wrap")
    assert f"Did you mean '{tmp_path / 'wrap' / 'hymenoptera'}'?" in str(info.value)
    with pytest.raises(HeadstartError) as flat:  # a plain single class folder gets no such guess
        scan(make_class_folder(tmp_path / "photos", ("cat",), n=3))
    assert "Did you mean" not in str(flat.value)


def test_class_with_only_bad_images(class_folder):
    shutil.rmtree(class_folder / "fish")
    (class_folder / "fish").mkdir()
    (class_folder / "fish" / "a.jpg").write_bytes(b"")
    (class_folder / "fish" / "b.jpg").write_text("text")
    (class_folder / "fish" / "c.jpg").write_text("text")
    with pytest.raises(HeadstartError) as info:
        scan(class_folder)
    message = str(info.value)
    assert "Every image of class(es) 'fish'" in message
    assert "'fish': 1 empty, 2 not_an_image" in message and "Fix:" in message


# --- find_images --------------------------------------------------------------------------

def test_find_images(tmp_path):
    a = write_image(tmp_path / "one" / "A.JPG")
    b = write_image(tmp_path / "one" / "deep" / "b.png")
    write_image(tmp_path / "one" / ".hidden" / "h.png")
    (tmp_path / "one" / "notes.txt").write_text("x")
    c = write_image(tmp_path / "c.webp")
    found = find_images([tmp_path / "one", str(c), tmp_path / "one" / "deep" / "b.png",
                         tmp_path / "one" / ".." / "c.webp"])
    assert found == sorted([a, b, c])
    assert find_images(tmp_path / "one") == sorted([a, b])


def test_find_images_errors(tmp_path):
    with pytest.raises(HeadstartError, match=r"'.*missing.jpg' does not exist"):
        find_images([tmp_path / "missing.jpg"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(HeadstartError, match=r"notes.txt' is not an image file.*\.png"):
        find_images([tmp_path / "notes.txt"])


def test_known_digests_are_taken_instead_of_reading_the_files(class_folder, monkeypatch):
    """`train --ray`: the workers hashed the files; the scan only checks headers."""
    import importlib

    from headstart.data.scan import known_digests

    scan_module = importlib.import_module("headstart.data.scan")  # (the package exports the function scan)

    real = {s.path: s.digest for s in scan(class_folder).samples}
    reads = []
    monkeypatch.setattr(scan_module, "file_sha256", lambda p: reads.append(p) or "read")
    given = {Path(os.path.relpath(p)): "w" + d[1:] for p, d in real.items()}  # relative paths match too
    with known_digests(given):
        inside = scan(class_folder).samples
    assert reads == [] and {s.path: s.digest for s in inside} == {p: "w" + d[1:] for p, d in real.items()}
    after = scan(class_folder).samples  # outside the block the files are read again
    assert len(reads) == len(after) and {s.digest for s in after} == {"read"}
