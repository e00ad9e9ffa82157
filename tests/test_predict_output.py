"""``headstart predict``'s output: input order and paths as given, an aligned table,
``--min-confidence`` with an ``unsure`` folder, and ``--sort-into`` run twice."""

from __future__ import annotations

import csv
import io
import json
import shutil

import pytest

from conftest import write_image
from headstart.cli.main import main


def run_cli(*args) -> int:
    return main([str(a) for a in args])


@pytest.fixture
def inbox(trained_model, tmp_path, monkeypatch):
    """tmp_path/inbox/{fish_b, cat_a}.png and tmp_path/dog.png; the current folder is tmp_path."""
    model, data = trained_model
    shutil.copy(sorted((data / "fish").glob("*.png"))[0], tmp_path / "fish_b.png")
    (tmp_path / "inbox").mkdir()
    shutil.move(tmp_path / "fish_b.png", tmp_path / "inbox" / "fish_b.png")
    shutil.copy(sorted((data / "cat").glob("*.png"))[0], tmp_path / "inbox" / "cat_a.png")
    shutil.copy(sorted((data / "dog").glob("*.png"))[0], tmp_path / "dog.png")
    monkeypatch.chdir(tmp_path)
    return model


def test_rows_keep_the_input_order_repeats_and_spelling(inbox, capsys):
    assert run_cli("predict", inbox, "dog.png", "inbox", "./dog.png", "--format", "csv", "--quiet") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    # the folder's images follow its spelling, sorted; nothing made absolute, nothing dropped
    assert [r["file"] for r in rows] == ["dog.png", "inbox/cat_a.png", "inbox/fish_b.png", "dog.png"]
    assert [r["label"] for r in rows] == ["dog", "cat", "fish", "dog"]


def test_the_table_has_a_header_and_aligned_columns(inbox, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a jpeg")
    assert run_cli("predict", inbox, "inbox", "broken.jpg", "--top-k", "2", "--quiet") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["FILE", "LABEL", "PROB", "TOP", "2", "NOTE"]
    start = lines[0].index("LABEL")
    assert [ln[start:].split()[0] for ln in lines[1:]] == ["cat", "fish", "ERROR"]
    assert [ln.split()[0] for ln in lines[1:]] == ["inbox/cat_a.png", "inbox/fish_b.png", "broken.jpg"]
    prob = lines[0].index("PROB")
    assert 0.3 < float(lines[1][prob:prob + 4]) <= 1.0
    assert lines[1].count(",") == 1  # top 2: "cat 0.9x, dog 0.0x"
    assert "not_an_image" in lines[3] or "corrupt" in lines[3] or "truncated" in lines[3]


def test_min_confidence_marks_rows_and_sorts_them_into_unsure(inbox, tmp_path, capsys):
    out = tmp_path / "sorted"
    assert run_cli("predict", inbox, "inbox", "dog.png", "--format", "json", "--min-confidence", "1",
                   "--sort-into", out, "--quiet") == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert [r["unsure"] for r in rows] == [True, True, True]  # no probability reaches 1
    assert sorted(p.name for p in (out / "unsure").iterdir()) == ["cat_a.png", "dog.png", "fish_b.png"]
    assert sorted(p.name for p in out.iterdir()) == ["unsure"]
    assert "3 of them below --min-confidence are in" in captured.err

    assert run_cli("predict", inbox, "inbox", "--min-confidence", "0.01", "--format", "csv", "--quiet") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["unsure"] for r in rows] == ["no", "no"]
    assert run_cli("predict", inbox, "inbox", "--min-confidence", "1", "--quiet") == 0
    table = capsys.readouterr().out.splitlines()
    assert all("unsure: below --min-confidence 1" in ln for ln in table[1:])


@pytest.mark.parametrize("bad", ["1.5", "0", "high"])
def test_min_confidence_must_be_a_probability(inbox, bad, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli("predict", inbox, "inbox", "--min-confidence", bad)
    assert e.value.code == 2
    assert "expected a probability between 0 and 1" in capsys.readouterr().err


def test_sort_into_twice_skips_what_is_already_there(inbox, tmp_path, capsys):
    out = tmp_path / "sorted"
    assert run_cli("predict", inbox, "inbox", "dog.png", "--sort-into", out, "--quiet") == 0
    assert "copied 3 images" in capsys.readouterr().err
    assert run_cli("predict", inbox, "inbox", "dog.png", "--sort-into", out, "--quiet") == 0
    assert "copied 0 images" in (err := capsys.readouterr().err) and "skipped 3 already there" in err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "cat/cat_a.png", "dog/dog.png", "fish/fish_b.png"]
    # another image under a name already taken is still copied, beside it
    write_image(tmp_path / "other" / "dog.png", size=(48, 48), color=(40, 200, 40), seed=9)
    assert run_cli("predict", inbox, tmp_path / "other" / "dog.png", "--sort-into", out, "--quiet") == 0
    assert "copied 1 images" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "dog").iterdir()) == ["dog-1.png", "dog.png"]


def test_a_link_with_the_same_name_is_never_taken_for_a_copy(tmp_path):
    from headstart.estimator.sorting import sort_into

    src = write_image(tmp_path / "in" / "x.png")
    (tmp_path / "out" / "cat").mkdir(parents=True)
    (tmp_path / "out" / "cat" / "x.png").symlink_to(src)  # same bytes, but through a link
    done = sort_into([{"file": str(src), "label": "cat"}], tmp_path / "out")
    assert (done.copied, done.skipped) == (1, 0)
    assert (tmp_path / "out" / "cat" / "x-1.png").read_bytes() == src.read_bytes()


def test_a_class_named_unsure_keeps_its_folder(tmp_path):
    from headstart.estimator.sorting import sort_into

    a, b = write_image(tmp_path / "in" / "a.png", seed=1), write_image(tmp_path / "in" / "b.png", seed=2)
    notes: list[str] = []
    done = sort_into([{"file": str(a), "label": "unsure"}, {"file": str(b), "label": "cat", "unsure": True}],
                     tmp_path / "out", notes)
    assert (tmp_path / "out" / "unsure" / "a.png").is_file() and (tmp_path / "out" / "_unsure" / "b.png").is_file()
    assert done.unsure == 1 and any("'_unsure'" in n for n in notes)
