"""Labels from a CSV: column choice, task inference with its reason, the stable split, and a
clear message for each kind of bad input (no backbone needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import write_csv, write_image
from headstart.cli.main import main
from headstart.data.labels_csv import infer_task_name, listed_files, load_labels
from headstart.data.scan import file_sha256
from headstart.data.split import assign_split
from headstart.errors import HeadstartError


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """12 tiny images: img_00.png ... img_11.png, two in a sub-folder."""
    root = tmp_path / "data"
    for i in range(12):
        write_image(root / ("sub" if i >= 10 else "") / f"img_{i:02d}.png", (24, 24), color=(20 * i, 90, 200))
    return root


def _rel(i: int) -> str:
    return f"sub/img_{i:02d}.png" if i >= 10 else f"img_{i:02d}.png"


# --- task inference ---------------------------------------------------------------------------

@pytest.mark.parametrize("values, column, task, why", [
    (["cat", "dog", "cat"], "label", "binary", "two distinct"),
    (["cat", "dog", "fish"], "label", "multiclass", "names (3 distinct"),
    (["cat|dog", "dog", ""], "label", "multilabel", "separated by '|'"),
    (["0.5", "1.25", "3"], "value", "continuous", "numbers (0.5 to 3)"),
    (["0", "3", "7", "2"], "count", "count", "whole number >= 0 and the column is named 'count'"),
    (["0", "3", "7", "2"], "n_people", "count", "named 'n_people'"),
    (["0", "3", "7", "2"], "target", "continuous", "use --task count for counts"),
    (["0", "1", "1", "0"], "target", "binary", "only two distinct values (0, 1)"),
    (["0", "3", "7", "2"], "class", "multiclass", "class ids"),
])
def test_task_is_inferred_with_a_reason(values, column, task, why):
    name, reason = infer_task_name(values, column)
    assert name == task and why in reason


def test_a_negative_whole_number_is_not_a_count():
    assert infer_task_name(["0", "-3", "7"], "count")[0] == "continuous"


# --- reading ----------------------------------------------------------------------------------

def test_samples_digests_and_the_stable_split(data, tmp_path):
    csv_path = write_csv(tmp_path / "labels.csv", ["path", "count"], [[_rel(i), i % 4] for i in range(12)])
    r = load_labels(data, csv_path, val_fraction=0.3, test_fraction=0.2)
    assert r.task.name == "count" and r.target_column == "count" and len(r.samples) == 12
    for s in r.samples:
        assert s.path == (data / s.rel).resolve() and s.digest == file_sha256(s.path)
        assert s.split == assign_split(s.rel, 0.3, 0.2)
    assert {s.label for s in r.samples} == {"0", "1", "2", "3"}
    assert sum(r.counts()["all"].values()) == 12
    # the same rows in another order, with extra rows: no image changes split
    more = write_csv(tmp_path / "more.csv", ["path", "count"], [[_rel(i), i % 4] for i in reversed(range(12))])
    assert {s.rel: s.split for s in load_labels(data, more, val_fraction=0.3, test_fraction=0.2).samples} == \
           {s.rel: s.split for s in r.samples}


def test_columns_default_and_named(data, tmp_path):
    rows = [[f"x{i}", _rel(i), "cat" if i % 2 else "dog", i] for i in range(12)]
    csv_path = write_csv(tmp_path / "l.csv", ["id", "path", "label", "value"], rows)
    r = load_labels(data, csv_path)
    assert (r.path_column, r.target_column, r.task.name) == ("path", "label", "binary")
    r = load_labels(data, csv_path, target_column="value")
    assert r.task.name == "continuous"
    with pytest.raises(HeadstartError, match=r"no target column 'age'; its columns are \['id', 'path', 'label', 'value'\]"):
        load_labels(data, csv_path, target_column="age")
    # no 'path' column and no known target name: the first two columns
    plain = write_csv(tmp_path / "p.csv", ["file", "kind"], [[_rel(i), "a" if i < 6 else "b"] for i in range(12)])
    assert (load_labels(data, plain).path_column, load_labels(data, plain).target_column) == ("file", "kind")


def test_semicolon_csv_and_a_mapping(data, tmp_path):
    (tmp_path / "semi.csv").write_text("path;value\n" + "".join(f"{_rel(i)};{i / 3:.3f}\n" for i in range(12)))
    assert load_labels(data, tmp_path / "semi.csv").task.name == "continuous"
    r = load_labels(data, {_rel(i): ["a", "b"] if i % 2 else ["c"] for i in range(12)})
    assert r.task.name == "multilabel" and r.samples[1].label in ("a|b", "c")


def test_a_listed_file_that_is_not_an_image_is_skipped_like_scan_does(data, tmp_path):
    (data / "broken.png").write_bytes(b"not a png")
    rows = [[_rel(i), i % 3] for i in range(12)] + [["broken.png", 1]]
    r = load_labels(data, write_csv(tmp_path / "l.csv", ["path", "count"], rows))
    assert len(r.samples) == 12 and [b.rel for b in r.bad] == ["broken.png"]


def test_listed_files_for_predict(data, tmp_path):
    csv_path = write_csv(tmp_path / "l.csv", ["path"], [[_rel(3)], [_rel(11)]])
    assert [p.name for p in listed_files(data, csv_path)] == ["img_03.png", "img_11.png"]
    bad = write_csv(tmp_path / "b.csv", ["path"], [["nope.png"], [_rel(1)], ["gone/x.jpg"]])
    with pytest.raises(HeadstartError, match=r"(?s)2 of the 3 files .*nope.png.*gone/x.jpg"):
        listed_files(data, bad)


# --- bad input --------------------------------------------------------------------------------

def test_every_missing_file_is_listed(data, tmp_path):
    rows = [[_rel(i), "cat" if i % 2 else "dog"] for i in range(12)] + [[f"missing_{k}.png", "cat"] for k in range(7)]
    csv_path = write_csv(tmp_path / "l.csv", ["path", "label"], rows)
    with pytest.raises(HeadstartError) as e:
        load_labels(data, csv_path)
    msg = str(e.value)
    assert "7 missing file" in msg and "--skip-bad-rows" in msg
    assert all(f"missing_{k}.png" in msg for k in range(7))  # all, not only the first
    r = load_labels(data, csv_path, skip_bad_rows=True)
    assert len(r.samples) == 12 and len(r.skipped_rows) == 7
    assert {p.reason for p in r.skipped_rows} == {"missing file"} and "skipped 7 bad row(s)" in r.notes[0]


def test_no_listed_file_exists_hints_at_the_wrong_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    csv_path = write_csv(tmp_path / "l.csv", ["path", "label"], [["a.png", "x"], ["b.png", "y"]])
    with pytest.raises(HeadstartError, match="DATA is probably the wrong folder"):
        load_labels(tmp_path / "empty", csv_path)


def test_duplicate_and_conflicting_rows(data, tmp_path):
    rows = [[_rel(i), "cat" if i % 2 else "dog"] for i in range(12)]
    rows += [[_rel(0), "dog"], [_rel(1), "dog"]]  # 0 repeats itself; 1 was "cat"
    csv_path = write_csv(tmp_path / "l.csv", ["path", "label"], rows)
    with pytest.raises(HeadstartError) as e:
        load_labels(data, csv_path)
    msg = str(e.value)
    assert "duplicate row (1)" in msg and "line 14: 'img_00.png': repeats line 2" in msg
    assert "conflicting duplicate" in msg and "'cat' vs 'dog'" in msg
    r = load_labels(data, csv_path, skip_bad_rows=True)
    assert {s.rel for s in r.samples} == {_rel(i) for i in range(12)} - {_rel(1)}  # both of 1's rows dropped


def test_non_numeric_and_missing_targets_for_a_numeric_task(data, tmp_path):
    rows = [[_rel(i), f"{i * 1.5}"] for i in range(10)] + [[_rel(10), "abc"], [_rel(11), ""]]
    csv_path = write_csv(tmp_path / "l.csv", ["path", "value"], rows)
    with pytest.raises(HeadstartError) as e:
        load_labels(data, csv_path)  # inferred continuous: 10 of 12 are numbers
    msg = str(e.value)
    assert "task continuous" in msg and "line 12: 'sub/img_10.png': target 'abc' is not a number" in msg
    assert "line 13: 'sub/img_11.png': target is missing" in msg
    assert len(load_labels(data, csv_path, skip_bad_rows=True).samples) == 10


def test_negative_and_fractional_counts(data, tmp_path):
    rows = [[_rel(i), i] for i in range(10)] + [[_rel(10), "-2"], [_rel(11), "2.5"]]
    csv_path = write_csv(tmp_path / "l.csv", ["path", "value"], rows)
    with pytest.raises(HeadstartError) as e:
        load_labels(data, csv_path, task="count")
    assert "'-2' is negative" in str(e.value) and "'2.5' is fractional" in str(e.value)


def test_a_single_distinct_value(data, tmp_path):
    csv_path = write_csv(tmp_path / "l.csv", ["path", "count"], [[_rel(i), 3] for i in range(12)])
    with pytest.raises(HeadstartError, match=r"same value in column 'count' \(\['3'\]\); there is nothing to learn"):
        load_labels(data, csv_path)
    labels = write_csv(tmp_path / "m.csv", ["path", "label"], [[_rel(i), "cat"] for i in range(12)])
    with pytest.raises(HeadstartError, match="same value"):
        load_labels(data, labels, task="multiclass")


def test_thousands_of_unique_strings_is_probably_the_wrong_column(data, tmp_path):
    rows = [[f"photo_{i}.jpg", f"customer-{i:05d}"] for i in range(2000)]
    csv_path = write_csv(tmp_path / "l.csv", ["path", "label"], rows)
    with pytest.raises(HeadstartError, match=r"2000 distinct values in 2000 rows .* probably not the label column"):
        load_labels(data, csv_path)


def test_unknown_task_and_wrong_loss(data, tmp_path):
    csv_path = write_csv(tmp_path / "l.csv", ["path", "value"], [[_rel(i), i] for i in range(12)])
    with pytest.raises(HeadstartError, match="did you mean 'count'"):
        load_labels(data, csv_path, task="counts")
    with pytest.raises(HeadstartError, match="loss 'huber' does not apply to the count task"):
        load_labels(data, csv_path, task="count", loss="huber")


def test_cli_train_stops_on_bad_rows_with_the_list(data, tmp_path, capsys):
    rows = [[_rel(i), i] for i in range(12)] + [["gone.png", 1]]
    csv_path = write_csv(tmp_path / "l.csv", ["path", "count"], rows)
    assert main(["train", str(data), "--labels", str(csv_path), "--out", str(tmp_path / "m"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "line 14: 'gone.png': no file at" in err and "--skip-bad-rows" in err
    assert not (tmp_path / "m").exists()
    assert main(["train", str(data), "--out", str(tmp_path / "m"), "--quiet", "--target-column", "x"]) == 2
    assert "pass the CSV with labels= (--labels)" in capsys.readouterr().err
