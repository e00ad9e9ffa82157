"""The five tasks end to end on real rendered images and the real backbone: counts of dots,
the size of a circle, which of three shapes are present, a yes/no and one of three classes.
Each trains, evaluates, saves, loads and predicts, through the API and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import headstart
from conftest import write_csv
from headstart.cli.main import main
from headstart.errors import HeadstartError
from headstart.tasks import TASKS, Binary, Continuous, Count, Multiclass, Multilabel, poisson_interval, poisson_pmf, \
    task_from_dict

SIZE = 64
SHAPE_COLORS = {"circle": (220, 40, 40), "square": (40, 160, 60), "triangle": (50, 70, 220)}
BACKGROUNDS = {"grey": (200, 200, 200), "yellow": (240, 220, 120), "cyan": (140, 220, 230)}


# --- images -----------------------------------------------------------------------------------

def _shape(d: ImageDraw.ImageDraw, kind: str, cx: int, cy: int, r: int, color) -> None:
    if kind == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
    elif kind == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=color)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=color)


def make_counts(root: Path, n: int = 80, seed: int = 0) -> Path:
    """``n`` images with 0-9 dark dots on a 4 x 4 grid; labels.csv: path,count."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        k = i % 10
        img = Image.new("RGB", (SIZE, SIZE), (235, 235, 235))
        d = ImageDraw.Draw(img)
        for c in rng.permutation(16)[:k]:
            cx, cy = 8 + 16 * (c % 4) + int(rng.integers(-2, 3)), 8 + 16 * (c // 4) + int(rng.integers(-2, 3))
            d.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], fill=(20, 20, 20))
        img.save(root / f"dots_{i:03d}.png")
        rows.append((f"dots_{i:03d}.png", k))
    write_csv(root / "labels.csv", ["path", "count"], rows)
    return root


def make_sizes(root: Path, n: int = 60, seed: int = 1) -> Path:
    """One grey disc of radius 4-28 px per image; labels.csv: path,radius (a real number)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        r = 4 + 24 * (i + rng.random()) / n
        img = Image.new("RGB", (SIZE, SIZE), (235, 235, 235))
        cx, cy = SIZE // 2 + int(rng.integers(-3, 4)), SIZE // 2 + int(rng.integers(-3, 4))
        ImageDraw.Draw(img).ellipse([cx - r, cy - r, cx + r, cy + r], fill=(60, 60, 60))
        img.save(root / f"disc_{i:03d}.png")
        rows.append((f"disc_{i:03d}.png", f"{r:.3f}"))
    write_csv(root / "labels.csv", ["path", "radius"], rows)
    return root


def make_shapes(root: Path, n: int = 80, seed: int = 2) -> Path:
    """Any subset of {circle, square, triangle} on one of three backgrounds, in sub-folders.
    labels.csv: path, label ('circle|square', '' for none), has_circle (yes/no), background."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        present = [s for j, s in enumerate(SHAPE_COLORS) if (i >> j) & 1]  # every subset, evenly
        bg = list(BACKGROUNDS)[(i // 8 + int(rng.integers(0, 3))) % 3]
        img = Image.new("RGB", (SIZE, SIZE), BACKGROUNDS[bg])
        d = ImageDraw.Draw(img)
        slots = rng.permutation(4)
        for s, slot in zip(present, slots):
            cx, cy = 16 + 32 * (slot % 2) + int(rng.integers(-3, 4)), 16 + 32 * (slot // 2) + int(rng.integers(-3, 4))
            _shape(d, s, cx, cy, 10, SHAPE_COLORS[s])
        rel = f"set{i % 2}/shape_{i:03d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        img.save(root / rel)
        rows.append((rel, "|".join(present), "yes" if "circle" in present else "no", bg))
    write_csv(root / "labels.csv", ["path", "label", "has_circle", "background"], rows)
    return root


# --- trained models (module scope: each trains once) ----------------------------------------

SPLIT = {"val_fraction": 0.2, "test_fraction": 0.25}


@pytest.fixture(scope="module")
def count_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("count")
    data = make_counts(root / "data")
    clf = headstart.ImageClassifier(**SPLIT).fit(data, data / "labels.csv")
    clf.save(root / "model")
    return clf, root / "model", data


@pytest.fixture(scope="module")
def size_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("size")
    data = make_sizes(root / "data")
    clf = headstart.ImageClassifier(loss="huber", **SPLIT).fit(data, data / "labels.csv")
    clf.save(root / "model")
    return clf, root / "model", data


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp("shapes") / "data")


def _cli_train(data: Path, out: Path, *extra: str) -> tuple[int, str]:
    return main(["train", str(data), "--labels", str(data / "labels.csv"), "--out", str(out), "--quiet",
                 "--no-report", "--val-fraction", "0.2", "--test-fraction", "0.25", "--json", str(out) + ".json",
                 *extra])


@pytest.fixture(scope="module")
def multilabel_model(shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("ml") / "model"
    assert _cli_train(shapes, out) == 0
    return out


@pytest.fixture(scope="module")
def binary_model(shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("bin") / "model"
    assert _cli_train(shapes, out, "--target-column", "has_circle") == 0
    return out


# --- count ------------------------------------------------------------------------------------

def test_count_beats_the_mean_count_baseline(count_model):
    clf, _, _ = count_model
    m = clf.metrics_["test"]
    assert m["task"] == "count" and clf.fit_info_["task"] == "count"
    assert "named 'count'" in clf.fit_info_["task_reason"]
    assert m["mae"] < 0.5 * m["baseline"]["mae"], m
    assert m["exact_count_accuracy"] > m["baseline"]["exact_count_accuracy"]
    assert m["poisson_deviance"] < m["baseline"]["poisson_deviance"]
    assert set(m) >= {"task", "n_images", "mae", "rmse", "exact_count_accuracy", "poisson_deviance", "baseline"}


def test_count_predictions_load_and_api(count_model):
    clf, model, data = count_model
    loaded = headstart.load(model)
    files = sorted(data.glob("dots_00*.png"))
    rows = loaded.predict_files(files)
    assert np.allclose([r["expected"] for r in rows], clf.predict(files), rtol=1e-4)
    for r in rows:
        assert r["count"] == math.floor(r["expected"] + 0.5)
        assert r["probability"] == pytest.approx(float(poisson_pmf(r["count"], r["expected"])))
        lo, hi = r["interval"]
        assert lo <= r["count"] <= hi
    assert loaded.classes_ == [] and isinstance(loaded.predict(files[:1])[0], float)
    with pytest.raises(HeadstartError, match="task is count"):
        loaded.predict_proba(files[:1])
    assert loaded.score(data, data / "labels.csv") == pytest.approx(
        loaded.evaluate(data, data / "labels.csv")["d2_poisson"])


def test_count_cli_evaluate_and_predict(count_model, tmp_path, capsys):
    _, model, data = count_model
    out = tmp_path / "m.json"
    assert main(["evaluate", str(model), str(data), "--labels", str(data / "labels.csv"), "--json", str(out),
                 "--no-report", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "exact-count accuracy" in text and "training mean count" in text
    m = json.loads(out.read_text())
    assert m["task"] == "count" and m["n_images"] == 80 and m["mae"] < m["baseline"]["mae"]

    assert main(["predict", str(model), str(data / "dots_003.png"), "--format", "csv", "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "file,expected,count,probability,interval_low,interval_high,error"
    cells = lines[1].split(",")
    assert int(cells[4]) <= int(cells[2]) <= int(cells[5])
    write_csv(tmp_path / "some.csv", ["path"], [["dots_001.png"], ["dots_002.png"]])
    assert main(["predict", str(model), str(data), "--labels", str(tmp_path / "some.csv"), "--format", "json",
                 "--quiet"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [Path(r["file"]).name for r in rows] == ["dots_001.png", "dots_002.png"]
    assert {"expected", "count", "probability", "interval"} <= set(rows[0])
    assert main(["predict", str(model), str(data / "dots_009.png"), "--quiet"]) == 0
    assert "90% interval" in capsys.readouterr().out.lower()  # the table's column: 90% INTERVAL, e.g. 4-14
    # a bad row: a clear error by default; left out and reported with --skip-bad-rows
    rows = [[f"dots_{i:03d}.png", i % 10] for i in range(20)] + [["dots_000.png", 0], ["dots_001.png", "-1"]]
    bad = write_csv(tmp_path / "bad.csv", ["path", "count"], rows)
    args = ["evaluate", str(model), str(data), "--labels", str(bad), "--no-report", "--quiet"]
    assert main(args) == 2
    assert "'-1' is negative" in capsys.readouterr().err
    assert main(args + ["--skip-bad-rows", "--json", str(tmp_path / "s.json")]) == 0
    assert "skipped 2 bad rows" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "s.json").read_text())["skipped_rows"]) == 2


# --- continuous -------------------------------------------------------------------------------

def test_continuous_r2_and_api(size_model):
    clf, model, data = size_model
    m = clf.metrics_["test"]
    assert m["task"] == "continuous" and clf.task_.loss_name == "huber"
    assert m["r2"] > 0.8, m
    assert m["mae"] < m["baseline"]["mae"] and {"mae", "rmse", "r2", "baseline", "n_images"} <= set(m)
    loaded = headstart.load(model)
    files = [data / "disc_000.png", data / "disc_059.png"]
    small, big = loaded.predict(files)
    assert small < big  # radius 4 vs radius 28
    assert loaded.predict_files(files)[1]["value"] == pytest.approx(big, rel=1e-4)


def test_continuous_cli(size_model, tmp_path, capsys):
    _, model, data = size_model
    assert main(["evaluate", str(model), str(data), "--labels", str(data / "labels.csv"), "--no-report",
                 "--quiet", "--json", str(tmp_path / "m.json")]) == 0
    assert "R^2" in capsys.readouterr().out
    assert json.loads((tmp_path / "m.json").read_text())["r2"] > 0.8
    assert main(["predict", str(model), str(data / "disc_030.png"), "--format", "csv", "--quiet"]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    assert header == "file,value,error" and 4 < float(row.split(",")[1]) < 28


# --- multilabel, binary, multiclass -----------------------------------------------------------

def test_multilabel_from_the_cli(multilabel_model, shapes, capsys):
    m = json.loads(Path(str(multilabel_model) + ".json").read_text())["test"]
    assert m["task"] == "multilabel" and m["labels"] == ["circle", "square", "triangle"]
    assert m["micro_f1"] > m["baseline"]["micro_f1"] and m["micro_f1"] > 0.8, m
    assert m["mean_average_precision"] > m["baseline"]["mean_average_precision"]
    assert len(m["per_label"]["circle"]) >= 5
    clf = headstart.load(multilabel_model)
    assert len(clf.task_.thresholds) == 3
    got = clf.predict([shapes / "set1/shape_007.png", shapes / "set0/shape_000.png"])  # all three; none
    assert got[0] == ["circle", "square", "triangle"] and got[1] == []
    assert clf.predict_proba([shapes / "set1/shape_007.png"]).shape == (1, 3)
    assert main(["predict", str(multilabel_model), str(shapes / "set1/shape_007.png"), "--quiet"]) == 0
    assert "circle|square|triangle" in capsys.readouterr().out
    assert main(["evaluate", str(multilabel_model), str(shapes), "--labels", str(shapes / "labels.csv"),
                 "--no-report", "--quiet"]) == 0
    assert "mean_average_precision" in capsys.readouterr().out


def test_binary_from_a_csv_column(binary_model, shapes, capsys):
    m = json.loads(Path(str(binary_model) + ".json").read_text())["test"]
    assert m["task"] == "binary" and {"accuracy", "roc_auc", "pr_auc", "f1", "threshold", "baseline"} <= set(m)
    assert m["accuracy"] > m["baseline"]["accuracy"]
    clf = headstart.load(binary_model)
    assert clf.classes_ == ["no", "yes"]
    assert clf.predict([shapes / "set1/shape_001.png"]) == ["yes"]  # a circle only
    assert main(["evaluate", str(binary_model), str(shapes), "--labels", str(shapes / "labels.csv"),
                 "--target-column", "has_circle", "--no-report", "--quiet"]) == 0
    assert "roc_auc" in capsys.readouterr().out


def test_multiclass_api_and_cli(shapes, tmp_path, capsys):
    clf = headstart.ImageClassifier(**SPLIT).fit(shapes, shapes / "labels.csv", target_column="background")
    m = clf.metrics_["test"]
    assert m["task"] == "multiclass" and m["accuracy"] > m["baseline"]["accuracy"]
    assert "accuracy" in m and "confusion_matrix" in m and "per_class" in m  # classification keys unchanged
    clf.save(tmp_path / "model")
    assert main(["predict", str(tmp_path / "model"), str(shapes / "set0"), "--format", "csv", "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "file,label,probability,top,error" and len(lines) == 41


def test_task_override_reads_folder_names_as_counts(tmp_path):
    for k in range(4):
        for i in range(6):
            img = Image.new("RGB", (SIZE, SIZE), (235, 235, 235))
            for j in range(k):
                ImageDraw.Draw(img).ellipse([4 + 15 * j, 4 + 9 * i, 14 + 15 * j, 14 + 9 * i], fill=(0, 0, 0))
            (tmp_path / "data" / str(k)).mkdir(parents=True, exist_ok=True)
            img.save(tmp_path / "data" / str(k) / f"{k}_{i}.png")  # the split hashes the name
    clf = headstart.ImageClassifier(task="count", val_fraction=0.3, test_fraction=0.0).fit(tmp_path / "data")
    assert clf.task_.name == "count" and clf.fit_info_["task_reason"].startswith("set by you")
    with pytest.raises(HeadstartError, match="folder 'cat' is not one"):
        (tmp_path / "data" / "cat").mkdir()
        Image.new("RGB", (SIZE, SIZE)).save(tmp_path / "data" / "cat" / "x.png")
        headstart.ImageClassifier(task="count", val_fraction=0.3, test_fraction=0.0).fit(tmp_path / "data")


# --- the task objects on their own (no backbone) ---------------------------------------------

def test_every_task_round_trips_through_its_dict():
    tasks = [Binary().fit_targets(["a", "b"]), Multiclass().fit_targets(["a", "b", "c"]),
             Multilabel().fit_targets(["a|b", "", "c"]), Continuous(loss="huber").fit_targets(["1.5", "2", "7"]),
             Count().fit_targets([0, 3, 5])]
    assert [t.name for t in tasks] == list(TASKS)
    rng = np.random.default_rng(0)
    for t in tasks:
        again = task_from_dict(json.loads(json.dumps(t.to_dict())))
        raw = rng.normal(size=(4, t.out_dim)).astype(np.float32)
        assert np.allclose(t.activate(raw), again.activate(raw))
        assert t.activate(raw).shape == (4, t.out_width)
        assert again.predict_values(t.activate(raw)) == t.predict_values(t.activate(raw))


def test_multiclass_label_smoothing_is_torchs_in_value_and_gradient():
    gen = torch.Generator().manual_seed(0)
    raw = (3 * torch.randn(64, 7, generator=gen, dtype=torch.float64)).requires_grad_(True)
    target = torch.randint(0, 7, (64,), generator=gen)
    task = Multiclass([str(i) for i in range(7)])
    for eps in (0.0, 0.1, 0.3):
        ours = task.loss(raw, target, eps)
        theirs = torch.nn.functional.cross_entropy(raw, target, label_smoothing=eps)
        (g_ours,) = torch.autograd.grad(ours, raw)
        (g_theirs,) = torch.autograd.grad(theirs, raw)
        assert abs(float(ours - theirs)) < 1e-12
        assert torch.allclose(g_ours, g_theirs, rtol=0, atol=1e-15)


def test_numeric_tasks_ignore_label_smoothing_and_standardise():
    c = Continuous().fit_targets([10.0, 20.0, 30.0])
    y = c.encode([10.0, 20.0, 30.0])
    assert y.mean().abs() < 1e-6 and abs(float(y.std(unbiased=False)) - 1) < 1e-5
    out = torch.zeros(3, 1)
    assert c.loss(out, y, 0.1) == c.loss(out, y, 0.0)
    n = Count().fit_targets([0, 2, 4])
    assert n.activate(np.zeros((1, 1)))[0, 0] == pytest.approx(2.0)  # starts at the mean count
    assert n.loss(out, n.encode([0, 2, 4]), 0.1) == n.loss(out, n.encode([0, 2, 4]), 0.0)


def test_count_parse_and_poisson_interval():
    n = Count()
    assert n.parse("3") == 3 and n.parse("3.0") == 3
    for bad, why in (("-1", "negative"), ("2.5", "fractional"), ("many", "not a count")):
        with pytest.raises(ValueError, match=why):
            n.parse(bad)
    mu = np.array([0.05, 1.0, 4.2, 30.0])
    lo, hi = poisson_interval(mu, 0.9)
    for m, a, b in zip(mu, lo, hi):
        k = np.arange(0, 200)
        p = poisson_pmf(k, np.full(len(k), m))
        assert p[a:b + 1].sum() >= 0.9
        assert p[:a].sum() <= 0.05 + 1e-9 and p[b + 1:].sum() <= 0.05 + 1e-9


# --- the metrics (scikit-learn underneath), against hand-computed values and on edge cases -----

def test_metrics_match_hand_computed_values():
    from headstart.tasks import metrics as M

    y, pred = np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 2, 0])
    m = M.classification_metrics(y, np.eye(3)[pred], pred, ["a", "b", "c"])
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert m["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["per_class"]["b"]["precision"] == 0.5 and m["per_class"]["b"]["recall"] == 1.0
    assert m["per_class"]["c"]["f1"] == pytest.approx(0.8)
    assert m["accuracy"] == pytest.approx(4 / 6) and m["baseline"] == {"name": "majority class", "label": "c",
                                                                       "accuracy": 0.5}
    assert m["most_confused"][0]["count"] == 1 and "top5_accuracy" not in m
    proba = np.tile(np.linspace(1, 0, 7), (3, 1))             # class 0 most probable, class 6 least
    big = M.classification_metrics(np.array([0, 4, 6]), proba, np.zeros(3, int), list("abcdefg"))
    assert big["top5_accuracy"] == pytest.approx(2 / 3)
    # ROC AUC as the rank statistic, ties counting one half: 3 of 4 pairs ordered, one tied
    assert M.roc_auc(np.array([0, 1, 0, 1]), np.array([0.1, 0.4, 0.4, 0.8])) == pytest.approx(0.875)
    # average precision: precision at each positive, tied scores one step
    assert M.average_precision(np.array([1, 0, 1]), np.array([0.9, 0.8, 0.7])) == pytest.approx((1 + 2 / 3) / 2)
    b = M.binary_metrics(np.array([0, 1, 1, 0]), np.array([0.2, 0.9, 0.4, 0.6]), 0.5)
    assert b["f1"] == pytest.approx(0.5) and b["threshold"] == 0.5
    r = M.regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]), 2.0)
    assert (r["mae"], r["rmse"], r["r2"]) == pytest.approx((2 / 3, math.sqrt(4 / 3), 1 - 4 / 2))
    assert r["baseline"]["r2"] == pytest.approx(0.0)
    y, mu = np.array([0, 2, 3]), np.array([0.5, 2.0, 1.0])
    by_hand = np.mean([2 * 0.5, 0.0, 2 * (3 * math.log(3) - 2)])
    assert M.poisson_deviance(y, mu) == pytest.approx(by_hand)
    c = M.count_metrics(y, mu, 1.0, np.zeros(3), np.full(3, 2))
    assert c["interval_coverage"] == pytest.approx(2 / 3) and c["exact_count_accuracy"] == pytest.approx(1 / 3)


def test_metrics_edge_cases_keep_their_answers_without_warnings():
    import warnings

    from headstart.tasks import metrics as M

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one_class = np.array([1, 1, 1])
        assert math.isnan(M.roc_auc(one_class, np.array([0.1, 0.5, 0.9])))
        assert math.isnan(M.average_precision(1 - one_class, np.array([0.1, 0.5, 0.9])))
        assert M.average_precision(one_class, np.array([0.1, 0.5, 0.9])) == 1.0
        b = M.binary_metrics(1 - one_class, np.array([0.1, 0.5, 0.9]), 0.95)
        assert math.isnan(b["roc_auc"]) and math.isnan(b["pr_auc"]) and b["f1"] == 0.0
        assert math.isnan(M.regression_metrics(np.full(4, 2.0), np.arange(4.0), 2.0)["r2"])
        assert math.isnan(M.count_metrics(np.full(3, 2), np.full(3, 2.0), 2.0, np.zeros(3), np.full(3, 4))["d2_poisson"])
        e, f = np.zeros(0, np.int64), np.zeros(0)
        m = M.classification_metrics(e, np.zeros((0, 7)), e, list("abcdefg"))
        assert m["accuracy"] == 0.0 and m["confusion_matrix"] == [[0] * 7] * 7 and math.isnan(m["top5_accuracy"])
        assert m["per_class"]["a"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
        assert M.binary_metrics(e, f, 0.5)["f1"] == 0.0
        assert M.regression_metrics(f, f, 1.0)["mae"] == 0.0 and math.isnan(M.regression_metrics(f, f, 1.0)["r2"])
        assert M.count_metrics(e, f, 1.0, e, e)["poisson_deviance"] == 0.0
        ml = M.multilabel_metrics(np.zeros((0, 2), bool), np.zeros((0, 2)), np.zeros((0, 2), bool), ["a", "b"],
                                  np.array([0.2, 0.7]), np.array([0.5, 0.5]))
        assert ml["micro_f1"] == 0.0 and math.isnan(ml["mean_average_precision"])
