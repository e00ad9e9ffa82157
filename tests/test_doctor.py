"""The data doctor: planted problems in generated photos are found; nothing is changed.

The photos are crops of scikit-image's bundled pictures (a cat, a cup of coffee, a
rocket), so the real embedded backbone separates the classes as it would real photos.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import folder_state
from headstart.evaluation.doctor import (DoctorReport, find_suspects, near_pairs, quick_check, similar_groups,
                              warning_line)

SOURCES = {"cat": "chelsea", "cup": "coffee", "rocket": "rocket"}


def photo_crop(name: str, rng: np.random.Generator, size: int = 384) -> Image.Image:
    """A random crop (45-75 % of the short side) of a bundled photo, resized, slightly recoloured."""
    import skimage.data

    a = getattr(skimage.data, name)()
    h, w = a.shape[:2]
    side = int(min(h, w) * rng.uniform(0.45, 0.75))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    img = Image.fromarray(a[y:y + side, x:x + side]).resize((size, size), Image.BILINEAR)
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    gain = rng.uniform(0.85, 1.15, 3)
    return Image.fromarray(np.clip(np.asarray(img) * gain, 0, 255).astype(np.uint8))


def near_copy(src: Path, dst: Path) -> Path:
    """Resized to 85 %, 4 px cropped off each side, re-encoded as JPEG quality 75."""
    img = Image.open(src).convert("RGB")
    w, h = img.size
    img = img.resize((int(w * 0.85), int(h * 0.85)), Image.LANCZOS)
    img = img.crop((4, 4, img.width - 4, img.height - 4))
    dst.parent.mkdir(parents=True, exist_ok=True)
    img.save(dst, format="JPEG", quality=75)
    return dst


def make_planted(root: Path, n_train: int = 16, n_test: int = 3) -> dict:
    """train/ and test/ class folders of photo crops, with planted problems:
    two cat photos filed under cup, one cat photo copied into test (exact leak), and a
    re-encoded, resized, cropped copy of a rocket photo in test (near-duplicate leak)."""
    rng = np.random.default_rng(7)
    for label, source in SOURCES.items():
        for split, n in (("train", n_train), ("test", n_test)):
            for i in range(n):
                path = root / split / label / f"{label}_{i:02d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                photo_crop(source, rng).save(path)
    wrong = []
    for i in range(2):
        path = root / "train" / "cup" / f"mislabelled_{i}.png"
        photo_crop("chelsea", rng).save(path)
        wrong.append(path.relative_to(root).as_posix())
    shutil.copyfile(root / "train/cat/cat_03.png", root / "test/cat/copy_of_cat_03.png")
    near_copy(root / "train/rocket/rocket_05.png", root / "test/rocket/rocket_05_small.jpg")
    return {"wrong": wrong, "exact": ("train/cat/cat_03.png", "test/cat/copy_of_cat_03.png"),
            "near": ("train/rocket/rocket_05.png", "test/rocket/rocket_05_small.jpg")}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    from headstart.evaluation.doctor import check_data

    root = tmp_path_factory.mktemp("doctor") / "data"
    plants = make_planted(root)
    before = folder_state(root)
    report = check_data(root)
    return root, plants, report, before


# ---- planted problems, real backbone -------------------------------------------------------

def test_mislabelled_images_rank_at_the_top(planted):
    _, plants, report, _ = planted
    top = [s.rel for s in report.suspects[:3]]
    assert set(plants["wrong"]) <= set(top), report.suspects[:5]
    for s in report.suspects:
        if s.rel in plants["wrong"]:
            assert (s.label, s.suggested) == ("cup", "cat")
            assert s.p_suggested > s.p_label


def test_file_copied_into_test_is_an_exact_leak(planted):
    _, plants, report, _ = planted
    group = next(g for g in report.groups if plants["exact"][0] in g.rels)
    assert group.kind == "exact" and group.leak and not group.spans_classes
    assert sorted(group.rels) == sorted(plants["exact"])


def test_resized_recompressed_cropped_copy_is_grouped_with_its_original(planted):
    _, plants, report, _ = planted
    group = next((g for g in report.groups if plants["near"][1] in g.rels), None)
    assert group is not None, [g.rels for g in report.groups]
    assert plants["near"][0] in group.rels and group.kind == "near" and group.leak
    assert len(group.rels) <= 3  # a match, not a whole class lumped together


def test_doctor_leaves_the_folder_unchanged(planted):
    root, _, _, before = planted
    assert folder_state(root) == before


def test_summary_counts_and_cv(planted):
    _, _, report, _ = planted
    assert report.n_images == 3 * 19 + 2 + 2
    assert report.cv_accuracy > 0.8
    d = report.to_dict()
    assert d["summary"]["leaks"] >= 2 and d["summary"]["suspect_labels"] >= 2
    assert report.small_classes == []  # 20-21 images per class
    json.dumps(d)


def test_cli_doctor_table_json_and_html(planted, tmp_path, capsys):
    from headstart.cli.main import main

    root, plants, _, before = planted
    js, page = tmp_path / "doctor.json", tmp_path / "doctor.html"
    assert main(["doctor", str(root), "--json", str(js), "--report", str(page), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "likely wrong labels" in out and plants["wrong"][0] in out and "LEAK" in out
    assert "nothing was changed" in out
    d = json.loads(js.read_text())
    assert d["summary"]["leaks"] >= 2
    assert plants["wrong"][0] in [s["rel"] for s in d["suspects"][:3]]
    html = page.read_text()
    assert 'id="doctor"' in html or "id='doctor'" in html
    assert html.count("data:image/jpeg;base64,") >= 6
    assert folder_state(root) == before


def test_cli_doctor_rejects_bad_settings(tmp_path, capsys):
    from headstart.cli.main import main

    assert main(["doctor", str(tmp_path), "--folds", "1"]) == 2
    assert "--folds must be at least 2, got 1" in capsys.readouterr().err
    assert main(["doctor", str(tmp_path), "--near", "1.5"]) == 2
    assert "--near is a cosine similarity in (0, 1], got 1.5" in capsys.readouterr().err


# ---- the pure functions, on made-up features -------------------------------------------------

def test_near_pairs_match_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(700, 16)).astype(np.float32)
    x[650:] = x[:50] + 0.01 * rng.normal(size=(50, 16))        # 50 planted near copies
    got = {(i, j) for i, j, _ in near_pairs(x, 0.95, block=128)}
    z = x - x.mean(0)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    s = z @ z.T
    want = {(i, j) for i in range(700) for j in range(i + 1, 700) if s[i, j] >= 0.95}
    assert got == want and {(i, 650 + i) for i in range(50)} <= got


def test_similar_groups_flag_conflicts_and_leaks():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 8)).astype(np.float32)
    x[5] = x[4] * 1.001
    labels = ["a", "b", "a", "b", "a", "a"]
    splits = ["train", "train", "train", "test", "val", "val"]
    digests = ["d0", "d0", "d2", "d3", "d4", "d5"]
    groups = similar_groups(x, labels, splits, [f"f{i}" for i in range(6)], digests, threshold=0.99)
    by_first = {g.rels[0]: g for g in groups}
    assert by_first["f0"].kind == "exact" and by_first["f0"].spans_classes and not by_first["f0"].leak
    assert by_first["f4"].kind == "near" and not by_first["f4"].leak and by_first["f4"].rels == ["f4", "f5"]
    assert len(groups) == 2


def test_find_suspects_uses_per_class_confidence():
    names = ["a", "b"]
    y = np.array([0, 0, 0, 1, 1, 1])
    proba = np.array([[.9, .1], [.8, .2], [.2, .8], [.1, .9], [.3, .7], [.55, .45]])
    s = find_suspects(proba, y, names, [f"f{i}" for i in range(6)], ["train"] * 6)
    # threshold 0.5 / 2 classes: f2 (a with p_a = .2) is flagged; f5 (b, p_b = .45, but > .25) is not
    assert [x.rel for x in s] == ["f2"] and s[0].suggested == "b"


def test_quick_check_and_warning_line():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 8)).astype(np.float32)
    x[3] = x[0]
    q = quick_check(x, ["a", "a", "b", "a", "b", "b"], ["train", "train", "train", "test", "val", "test"],
                    ["d0", "d1", "d2", "d3", "d1", "d4"])
    assert q == {"leaked": 2, "n_eval": 3, "label_conflicts": 1}   # rows 3 (near) and 4 (exact)
    line = warning_line(q, "my photos")
    assert "2 of 3 val/test images" in line and "headstart doctor 'my photos'" in line and "\n" not in line
    assert warning_line({"leaked": 0, "n_eval": 3, "label_conflicts": 0}, "x") is None
    clean = {"leaked": 0, "n_eval": 200, "label_conflicts": 0, "n_val": 100}
    assert warning_line({**clean, "suspect_val": 4}, "x") is None            # 4 %: not many
    assert "9 of 100 validation images look mislabelled" in warning_line({**clean, "suspect_val": 9}, "x")


def test_train_counts_suspect_validation_labels(tmp_path):
    from conftest import make_class_folder
    from headstart import ImageClassifier

    from conftest import CLASS_COLORS, write_image

    data = make_class_folder(tmp_path / "d", n=20, size=(48, 48))
    for i in (0, 4):  # fish-coloured pictures filed under cat; these names hash into val
        write_image(data / "cat" / f"odd_{i}.png", (48, 48), color=CLASS_COLORS[2])
    clf = ImageClassifier(val_fraction=0.3, test_fraction=0.0).fit(data)
    val = [s for s in clf.dataset_.samples if s.split == "val"]
    planted_in_val = sum("odd_" in s.rel for s in val)
    assert planted_in_val == 2 and clf.data_check_["n_val"] == len(val)
    assert planted_in_val <= clf.data_check_["suspect_val"] <= planted_in_val + 1


def test_small_classes_and_outliers_on_made_up_features():
    from headstart.evaluation.doctor import diagnose

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(3, 32)) * 4
    labels = ["a"] * 40 + ["b"] * 40 + ["c"] * 5
    x = np.concatenate([centres[0] + rng.normal(size=(40, 32)), centres[1] + rng.normal(size=(40, 32)),
                        centres[2] + rng.normal(size=(5, 32))]).astype(np.float32)
    x[7] = -3 * centres.sum(0) + rng.normal(size=32)            # far from every class
    r = diagnose(x, labels, ["train"] * 85, [f"f{i}" for i in range(85)], folds=3)
    assert [c["label"] for c in r.small_classes] == ["c"]
    assert r.outliers and r.outliers[0].rel == "f7"
    assert r.cv_accuracy > 0.9


def test_report_to_dict_is_json():
    r = DoctorReport(n_images=0, labels=[], counts={}, cv_accuracy=0.0, suspects=[], groups=[],
                     small_classes=[], confused_pairs=[], outliers=[])
    assert json.loads(json.dumps(r.to_dict()))["summary"]["leaks"] == 0


def test_doctor_reads_csv_labels_for_every_task(planted, tmp_path, capsys):
    from conftest import write_csv
    from headstart.cli.main import main

    root, plants, _, before = planted
    rels = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    classes = write_csv(tmp_path / "classes.csv", ["path", "label"], [(r, r.split("/")[1]) for r in rels])
    values = write_csv(tmp_path / "values.csv", ["path", "value"], [(r, f"{i / 7:.3f}") for i, r in enumerate(rels)])

    assert main(["doctor", str(root), "--labels", str(classes), "--json", str(tmp_path / "c.json"), "--quiet"]) == 0
    found = json.loads((tmp_path / "c.json").read_text())
    top = [s["rel"] for s in found["suspects"][:3]]
    assert set(plants["wrong"]) <= set(top)

    assert main(["doctor", str(root), "--labels", str(values), "--json", str(tmp_path / "v.json"), "--quiet"]) == 0
    numeric = json.loads((tmp_path / "v.json").read_text())
    assert numeric["suspects"] == [] and numeric["small_classes"] == []  # label checks do not apply
    exact = [g for g in numeric["groups"] if g["kind"] == "exact"]
    assert [sorted(g["rels"]) for g in exact] == [sorted(plants["exact"])]
    assert folder_state(root) == before


def _softmax_regression(xs: np.ndarray, y: np.ndarray, k: int, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """W, b minimising mean cross-entropy + l2 * sum(W^2), by scipy's L-BFGS on the plain formula."""
    from scipy.optimize import minimize

    d = xs.shape[1]

    def loss(p):
        w, b = p[:d * k].reshape(d, k), p[d * k:]
        logits = xs @ w + b
        logz = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
        return (logz - logits[np.arange(len(xs)), y]).mean() + l2 * (w * w).sum()

    p = minimize(loss, np.zeros((d + 1) * k), method="L-BFGS-B", options={"gtol": 1e-10, "maxiter": 5000}).x
    return p[:d * k].reshape(d, k), p[d * k:]


def test_cross_val_head_minimises_the_stated_objective():
    """The fold head is mean cross-entropy + l2 * sum(W^2) (bias free): checked against a direct
    minimisation, for two classes (one weight vector in scikit-learn) and for three."""
    from headstart.evaluation.doctor import _fit_predict

    rng = np.random.default_rng(4)
    for k in (2, 3):
        z = rng.normal(size=(90, 6)).astype(np.float32)
        y = (z[:, 0] + 0.5 * z[:, 1] + rng.normal(size=90) > 0).astype(np.int64) + (k == 3) * (z[:, 2] > 1)
        l2, train = 0.05, np.arange(90) < 70
        mu, sd = z[train].mean(0), z[train].std() + 1e-6
        w, b = _softmax_regression((z[train] - mu) / sd, y[train], k, l2)
        logits = (z[~train] - mu) / sd @ w + b
        want = np.exp(logits - logits.max(1, keepdims=True))
        want /= want.sum(1, keepdims=True)
        got = _fit_predict(z[train], y[train], z[~train], k, l2)
        assert np.abs(got - want).max() < 1e-3, (k, np.abs(got - want).max())


def test_cross_val_proba_with_tiny_classes_and_folds_warns_nothing():
    import warnings

    from headstart.evaluation.doctor import cross_val_proba

    rng = np.random.default_rng(5)
    y = np.array([0] * 12 + [1] * 3 + [2])                      # classes smaller than the 5 folds
    x = (rng.normal(size=(16, 20)) + 3 * np.eye(3, 20)[y]).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = cross_val_proba(x, y, 3, folds=5)
        single = cross_val_proba(x[:2], np.array([0, 1]), 2, folds=5)   # no class has two images
    assert p.shape == (16, 3) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert (p[:12].argmax(1) == 0).mean() > 0.8
    assert np.allclose(single, 0.5)                               # no folds: no opinion


def test_outliers_match_brute_force_neighbours():
    from headstart.evaluation.doctor import find_outliers

    rng = np.random.default_rng(6)
    x = rng.normal(size=(300, 12)).astype(np.float32) + 4
    x[17] = -x[17]                                                # points the other way
    x[40] = x[41]                                                 # an exact copy is a neighbour
    y = np.arange(300) % 3
    found = find_outliers(x, y, ["a", "b", "c"], [f"f{i}" for i in range(300)], ["train"] * 300, block=64)
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = z @ z.T
    np.fill_diagonal(s, -2)
    top = np.sort(s, 1)[:, -5:].mean(1)
    assert found and found[0].rel == "f17"
    assert found[0].similarity == pytest.approx(round(float(top[17]), 4), abs=2e-4)
    assert found[0].nearest_class == ["a", "b", "c"][y[s[17].argmax()]]
    assert "f40" not in {o.rel for o in found}
