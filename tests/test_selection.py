"""Source-model selection: candidates chosen on validation within a budget, the test split read
only once the model is fixed, and what was tried in config.json and both reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import CLASS_COLORS, write_image

import headstart
from headstart.backbones import backbone_from_spec, create_backbone
from headstart.errors import HeadstartError
from headstart.estimator.selection import Candidate, _better, candidates, check_budget


def split_folder(root, n=(8, 3, 3), classes=("cat", "dog")):
    for split, k in zip(("train", "val", "test"), n):
        for c, name in enumerate(classes):
            for i in range(k):
                write_image(root / split / name / f"{name}_{i}.png", (32, 32), color=CLASS_COLORS[c])
    return root


@pytest.fixture(scope="module")
def selected(tmp_path_factory):
    """A real selecting fit (three backbones, no cache, PyTorch engine) with every image decode and
    every head fit recorded in order."""
    import headstart.features.extract as extract
    import headstart.training.head as head

    root = split_folder(tmp_path_factory.mktemp("sel") / "data", n=(5, 2, 2))
    events = []
    decode, fit = extract.load_input, head.fit_head

    def recording_decode(path, p):
        events.append(("read", str(path)))
        return decode(path, p)

    def recording_fit(*a, **k):
        events.append(("fit", None))
        return fit(*a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(extract, "load_input", recording_decode)
        mp.setattr(head, "fit_head", recording_fit)
        clf = headstart.ImageClassifier(engine="torch", use_cache=False, epochs=2, budget=10_000).fit(root)
    return clf, events, root


def test_the_test_split_is_read_only_after_the_final_model_is_fixed(selected):
    clf, events, root = selected
    tried = [r for r in clf.fit_info_["source_selection"]["tried"] if r["status"] == "tried"]
    assert {r["backbone"] for r in tried} == {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}
    is_test = [kind == "read" and "/test/" in path for kind, path in events]
    last_fit = max(i for i, (kind, _) in enumerate(events) if kind == "fit")
    assert sum(is_test) == 4  # each test image read once, by the chosen backbone only
    assert is_test.index(True) > last_fit  # every head (each candidate's) was fitted before
    reads_before = [p for kind, p in events[:last_fit] if kind == "read"]
    assert len(reads_before) == 3 * 14  # train + val, once per backbone
    assert clf.metrics_["test"]["n_images"] == 4


def test_the_best_validation_score_is_chosen_and_kept_in_the_model(selected, tmp_path):
    clf, _, root = selected
    sel = clf.fit_info_["source_selection"]
    tried = [r for r in sel["tried"] if r["status"] == "tried"]
    chosen = [r for r in tried if r.get("chosen")]
    keep = tried[0]
    for r in tried[1:]:  # the recorded rows replay to the recorded choice
        keep = r if _better(r["val_score"], keep["val_score"], 2 * 2) else keep
    assert chosen == [keep]
    assert clf.backbone_.name == chosen[0]["backbone"]
    assert clf.backbone_.tapped == (() if chosen[0]["features"] == "pooled" else (4, 5, 6))
    assert len(tried) == 6 and {r["features"] for r in tried} == {"four-stage", "pooled"}
    out = clf.save(tmp_path / "m")
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["source_selection"]["tried"] == json.loads(json.dumps(sel["tried"]))
    again = headstart.load(out, engine="torch")
    assert again.backbone_.spec() == clf.backbone_.spec()
    assert again.predict(root / "test") == clf.predict(root / "test")


def test_both_reports_say_what_was_tried_and_what_was_chosen(selected):
    from headstart.evaluation.html import model_report
    from headstart.evaluation.report import format_selection

    clf, _, root = selected
    sel = clf.fit_info_["source_selection"]
    text = format_selection(sel)
    chosen = next(r for r in sel["tried"] if r.get("chosen"))
    rows = text.splitlines()[1:-1]
    assert f"* {chosen['name']}" in text and sum(" validation " in line for line in rows) == 6
    page = model_report(clf, clf.metrics_["test"], title="t", data=root)
    assert "Source model" in page and "<b>chosen</b>" in page
    assert all(r["name"] in page for r in sel["tried"])


def test_a_spent_budget_stops_after_the_cheapest_candidate(tmp_path):
    root = split_folder(tmp_path / "data", n=(4, 2, 1))
    clf = headstart.ImageClassifier(engine="torch", use_cache=False, epochs=1, budget=0).fit(root)
    rows = clf.fit_info_["source_selection"]["tried"]
    assert [r["status"] for r in rows] == ["tried", "tried", "skipped", "skipped"]
    assert clf.backbone_.name == "efficientnet_lite0" and "of 0 s spent" in rows[-1]["note"]


def test_a_named_backbone_is_used_without_selection(tmp_path):
    root = split_folder(tmp_path / "data", n=(4, 2, 1))
    clf = headstart.ImageClassifier("efficientnet_lite0", engine="torch", use_cache=False, epochs=1).fit(root)
    assert "source_selection" not in clf.fit_info_ and clf.backbone_.spec() == {"name": "efficientnet_lite0"}


def test_the_larger_input_is_tried_only_on_photos_that_hold_its_detail():
    small = candidates(128)
    assert [(c.backbone, c.input_size) for c in small] == [
        ("efficientnet_lite0", 224), ("efficientnet_lite1", 240), ("efficientnet_lite2", 260)]
    big = candidates(600)
    assert len(big) == 6 and ("efficientnet_lite0", 288) in [(c.backbone, c.input_size) for c in big]
    assert [c.cost for c in big] == sorted(c.cost for c in big)
    assert candidates(None) == small


def test_a_pooled_or_larger_backbone_gives_the_columns_selection_scored_and_round_trips():
    from PIL import Image
    from skimage import data as skdata

    four = create_backbone("efficientnet_lite0")
    pooled = Candidate("efficientnet_lite0", 224).create(stages=())
    img = Image.fromarray(skdata.chelsea())
    x = load_input_array(img, four.preprocess)
    a, b = four.engine(prefer="torch")(x), pooled.engine(prefer="torch")(x)
    assert b.shape == (1, 1280) and np.allclose(a[:, -1280:], b, atol=1e-5)
    big = Candidate("efficientnet_lite0", 288).create()
    assert big.preprocess.input_size == 288 and big.cache_key != four.cache_key != pooled.cache_key
    for bb in (pooled, big):
        again = backbone_from_spec(bb.spec())
        assert again.cache_key == bb.cache_key and again.feature_dim == bb.feature_dim


def load_input_array(img, p):
    from headstart.data.transforms import preprocess

    return preprocess(img, p)[None]


@pytest.mark.parametrize("bad", [-1, float("nan"), "fast", True])
def test_a_bad_budget_is_refused_with_what_to_give(bad):
    with pytest.raises(HeadstartError, match="budget must be None"):
        check_budget(bad)


def test_a_larger_source_model_must_beat_the_cheaper_by_more_than_the_noise():
    assert not _better(0.8944, 0.8827, 341)  # +1.2 points on 341 images: within one standard error
    assert _better(0.93, 0.8827, 341)
    assert _better(0.5, float("nan"), 10) and not _better(float("nan"), 0.5, 10)
