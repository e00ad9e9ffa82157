"""The HTML report: one offline file whose sections follow the metrics, plots and thumbnails
embedded; written by `train`, `evaluate` and `doctor`."""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import folder_state, make_class_folder


class _Page(HTMLParser):
    """Section ids, headings and embedded images of a page."""

    def __init__(self):
        super().__init__()
        self.sections, self.headings, self.images, self.external = [], [], [], []
        self._in_h = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id"))
        if tag in ("h2", "h3"):
            self._in_h = True
        if tag == "img" and a.get("src"):
            self.images.append(a["src"])
        if tag in ("script", "link") or (tag == "img" and a.get("src", "").startswith("http")):
            self.external.append(tag)

    def handle_endtag(self, tag):
        if tag in ("h2", "h3"):
            self._in_h = False

    def handle_data(self, data):
        if self._in_h:
            self.headings.append(data.strip())


def parse(html: str) -> _Page:
    p = _Page()
    p.feed(html)
    return p


def decoded(src: str) -> Image.Image:
    head, data = src.split(",", 1)
    assert head in ("data:image/png;base64", "data:image/jpeg;base64"), head
    img = Image.open(io.BytesIO(base64.b64decode(data)))
    img.load()
    return img


def test_evaluate_writes_a_self_contained_report_with_the_models_reports(trained_model, capsys):
    from headstart.cli.main import main

    model, data = trained_model
    before = folder_state(model)
    assert main(["evaluate", str(model), str(data), "--quiet"]) == 0
    page_path = model / "evaluations" / f"{data.name}.html"
    assert f"report written to {page_path}" in capsys.readouterr().out
    after = folder_state(model)
    assert {k: v for k, v in after.items() if not k.startswith("evaluations")} == before  # the model is untouched
    p = parse(page_path.read_text())
    assert {"headline", "confusion-matrix", "per-class", "training-curves"} <= set(p.sections)
    assert not p.external
    plots = [decoded(s) for s in p.images if s.startswith("data:image/png")]
    assert len(plots) >= 2 and all(im.width > 300 for im in plots)
    # every image of the folder gets evaluated (classes layout); a worst-predicted gallery
    # appears only when something is wrong, with thumbnails read from DATA
    if "worst-predicted-images" in p.sections:
        assert any(s.startswith("data:image/jpeg") for s in p.images)


def test_evaluate_report_flags(trained_model, tmp_path):
    from headstart.cli.main import main

    model, data = trained_model
    out = tmp_path / "mine.html"
    assert main(["evaluate", str(model), str(data), "--quiet", "--report", str(out)]) == 0
    assert out.read_text().startswith("<!doctype html>")
    default = model / "evaluations" / f"{data.name}.html"
    default.unlink(missing_ok=True)
    assert main(["evaluate", str(model), str(data), "--quiet", "--no-report"]) == 0
    assert not default.exists()


def test_train_writes_report_into_the_model_folder(tmp_path, capsys):
    from headstart.cli.main import main

    data = make_class_folder(tmp_path / "data", n=10, size=(40, 40))
    shutil.copyfile(data / "cat" / "cat_000.png", data / "dog" / "dog_copy_of_cat.png")  # a label conflict
    out = tmp_path / "model"
    assert main(["train", str(data), "--out", str(out), "--quiet", "--epochs", "5"]) == 0
    text = capsys.readouterr().out
    page = (out / "report.html").read_text()
    assert "data check:" in text and "identical images are filed under different classes" in text
    assert f"headstart doctor {data}" in text
    p = parse(page)
    assert "headline" in p.sections and "training-curves" in p.sections
    assert "data check:" in page  # the same warning, on the page


def test_worst_gallery_has_thumbnails_with_labels(tmp_path):
    from headstart.evaluation.html import render_report

    root = make_class_folder(tmp_path / "d", classes=("cat", "dog"), n=2, size=(300, 200), ext=".jpg")
    m = {"task": "binary", "n_images": 4, "accuracy": 0.5, "labels": ["cat", "dog"],
         "baseline": {"name": "majority class", "label": "cat", "accuracy": 0.5},
         "per_class": {"cat": {"precision": .5, "recall": .5, "f1": .5, "support": 2},
                       "dog": {"precision": .5, "recall": .5, "f1": .5, "support": 2}},
         "confusion_matrix": [[1, 1], [1, 1]],
         "worst": [{"file": "cat/cat_001.jpg", "true": "cat", "predicted": "dog", "p_true": 0.1, "p_predicted": 0.9},
                   {"file": "gone.jpg", "true": "dog", "predicted": "cat", "p_true": 0.2, "p_predicted": 0.8}]}
    html = render_report(m, image_root=root, title="t <&>")
    p = parse(html)
    thumbs = [decoded(s) for s in p.images if s.startswith("data:image/jpeg")]
    assert len(thumbs) == 1 and max(thumbs[0].size) <= 300  # the missing file gets a placeholder
    assert "could not read gone.jpg" in html and "predicted <b>dog</b> (0.90)" in html
    assert "t &lt;&amp;&gt;" in html


def test_numeric_task_gets_scatter_and_residuals_not_a_confusion_matrix():
    from headstart.evaluation.html import render_report

    rng = np.random.default_rng(0)
    t = rng.uniform(0, 10, 50)
    m = {"task": "continuous", "n_images": 50, "mae": 0.4, "rmse": 0.5, "r2": 0.93,
         "baseline": {"name": "training mean", "value": 5.0, "mae": 2.5, "rmse": 2.9, "r2": -0.01},
         "values": {"true": t.tolist(), "predicted": (t + rng.normal(0, .5, 50)).tolist()},
         "worst": [{"file": "a.jpg", "true": 3.0, "predicted": 7.5, "error": 4.5}]}
    html = render_report(m, history=[{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5, "val_score": 0.9}])
    p = parse(html)
    assert "predicted-vs-true" in p.sections and "confusion-matrix" not in p.sections
    assert "R\u00b2" in html and "training mean" in html and "worst-predicted-images" in p.sections
    assert sum(s.startswith("data:image/png") for s in p.images) == 2


def test_multilabel_metrics_render_without_classes_sections():
    from headstart.evaluation.html import render_report

    m = {"task": "multilabel", "n_images": 10, "micro_f1": 0.8, "macro_f1": 0.7, "subset_accuracy": 0.5,
         "baseline": {"name": "training label frequencies", "micro_f1": 0.3},
         "worst": [{"file": "x.jpg", "true": "a|b", "predicted": "a", "wrong_labels": 1}]}
    p = parse(render_report(m))
    assert p.sections[:1] == ["headline"] and "confusion-matrix" not in p.sections


@pytest.mark.browser
def test_report_renders_in_headless_chromium(trained_model, tmp_path):
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("needs /usr/bin/chromium (apt-get install -y chromium)")
    from headstart.cli.main import main

    model, data = trained_model
    page = tmp_path / "r.html"
    assert main(["evaluate", str(model), str(data), "--quiet", "--report", str(page)]) == 0
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,1600", page.as_uri()], check=True, capture_output=True, timeout=120)
    a = np.asarray(Image.open(shot).convert("L"))
    assert a.std() > 10  # text and plots, not a blank page


def _doctor_report(root, n_suspects=30):
    from headstart.evaluation.doctor import DoctorReport, Outlier, SimilarGroup, Suspect

    suspects = [Suspect(f"cat/cat_{i % 2:03d}.jpg", "train", "cat", "<dog>", 0.01, 0.9) for i in range(n_suspects)]
    groups = [SimilarGroup("near", ["cat/cat_000.jpg", "dog/dog_000.jpg"], ["cat", "dog"], ["train", "test"],
                           0.9612, True, True)]
    return DoctorReport(n_images=4, labels=["cat", "dog"], counts={"cat": 2, "dog": 2}, cv_accuracy=0.75,
                        suspects=suspects, groups=groups, small_classes=[{"label": "dog", "n": 2, "median": 2.0}],
                        confused_pairs=[{"a": "cat", "b": "dog", "a_as_b": 1, "b_as_a": 0, "rate": 0.25}],
                        outliers=[Outlier("dog/dog_001.jpg", "val", "dog", "cat", 0.4321)], settings={"folds": 5},
                        root=str(root))


def test_doctor_page_from_templates_escapes_and_limits_the_gallery(tmp_path):
    from headstart.evaluation.html import GALLERY_MAX, doctor_section, render_doctor

    root = make_class_folder(tmp_path / "d", classes=("cat", "dog"), n=2, size=(60, 40), ext=".jpg")
    report = _doctor_report(root)
    page = render_doctor(report, title="doctor <t>")
    p = parse(page)
    assert page.startswith("<!doctype html>") and p.sections == ["doctor"] and not p.external
    assert "doctor &lt;t&gt;" in page and "&lt;dog&gt;" in page and "<dog>" not in page
    assert f"Showing {GALLERY_MAX} of 30; the JSON output has all." in page
    assert {"Likely wrong labels", "Duplicates and near-duplicates", "Small classes", "Most confused class pairs",
            "Outliers: unlike every other image"} <= set(p.headings)
    assert "near 0.961" in page and "leak: spans splits" in page and "25.0%" in page and "(most like a cat, 0.43)" in page
    assert sum(s.startswith("data:image/jpeg") for s in p.images) == GALLERY_MAX + 2 + 1
    section = doctor_section(report)
    assert section.startswith("<section id=\"doctor\">") and section.count("<section") == 1
    assert "Showing" not in doctor_section(_doctor_report(root, n_suspects=3))


def test_report_says_how_to_get_plots_without_matplotlib(monkeypatch):
    from headstart.evaluation import html

    monkeypatch.setattr(html, "_plot", lambda draw, size: None)
    page = html.render_report({"n_images": 2, "mae": 1.0, "values": {"true": [1.0, 2.0], "predicted": [2.0, 2.0]}})
    assert "predicted-vs-true" in parse(page).sections
    assert "Plots need matplotlib: pip install 'headstart[report]'." in page
