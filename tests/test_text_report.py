"""The HTML report of a text model: written by ``train`` (MODEL_DIR/report.html) and ``evaluate``,
one offline page with the confusion matrix, per-class figures and the worst-predicted sentences.
Checked by parsing the page, not by looking for strings in it."""

from __future__ import annotations

import random
from html.parser import HTMLParser

from conftest import write_csv
from test_report_html import decoded

from headstart.cli.main import main
from headstart.estimator.text import load_text

WORDS = {"sport": ["goal", "match", "team", "coach"], "food": ["soup", "bread", "cheese", "salad"],
         "music": ["song", "guitar", "band", "album"]}
HOSTILE = "<b>soup</b> & guitar <script>x</script>"


class _Tables(HTMLParser):
    """Section ids, images, and every table's rows as lists of cell texts, by section."""

    def __init__(self):
        super().__init__()
        self.sections, self.images, self.rows, self.tags = [], [], {}, []
        self._cell, self._row = None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "section":
            self.sections.append(a.get("id"))
        elif tag == "img" and a.get("src"):
            self.images.append(a["src"])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None:
            self._row.append(self._cell.strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.setdefault(self.sections[-1], []).append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _rows(n, seed):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = rng.choice(sorted(WORDS))
        out.append((f"item {i} : {' '.join(rng.sample(WORDS[label], 2))} today", label))
    return out


def test_train_and_evaluate_write_a_text_report_with_confusion_per_class_and_worst_sentences(tmp_path, capsys):
    write_csv(tmp_path / "train.csv", ["text", "label"], _rows(300, 0))
    test = _rows(40, 1) + [("soup and bread with cheese", "music"), ("the band played a song", "sport"),
                           (HOSTILE, "sport")]                 # three wrong labels: the worst sentences
    write_csv(tmp_path / "test.csv", ["text", "label"], test)
    out = tmp_path / "model"
    assert main(["train", str(tmp_path / "train.csv"), "--out", str(out), "--epochs", "8", "--widths", "1,2",
                 "--filters", "8", "--embed-dim", "16", "--members", "1", "--quiet"]) == 0
    page = _Tables()
    page.feed((out / "report.html").read_text(encoding="utf-8"))
    assert {"confusion-matrix", "per-class", "training-curves", "worst-predicted-sentences"} <= set(page.sections)
    assert decoded(page.images[0]).size[0] > 100               # the confusion matrix, a real PNG
    assert "script" not in page.tags                          # the hostile sentence stays text
    per_class = {r[0]: r for r in page.rows["per-class"][1:]}
    assert set(per_class) == set(WORDS) and all(0 <= float(v) <= 1 for r in per_class.values() for v in r[1:4])
    worst = page.rows["worst-predicted-sentences"][1:]
    clf = load_text(out)  # the sentences shown are test rows the model gets wrong, with their labels
    truth = dict(test)
    assert worst and all(r[0] in truth for r in worst), worst
    assert "soup and bread with cheese" in [r[0] for r in worst]
    for sentence, true, predicted, _ in worst:
        assert true.startswith(truth[sentence]) and predicted.startswith(clf.predict([sentence])[0])
        assert clf.predict([sentence])[0] != truth[sentence]
    assert HOSTILE in [r[0] for r in worst] or clf.predict([HOSTILE])[0] == "sport"  # shown as text, never markup
    capsys.readouterr()
    assert main(["evaluate", str(out), str(tmp_path / "test.csv")]) == 0
    written = out / "evaluations" / "test.csv.html"
    assert f"report written to {written}" in capsys.readouterr().out
    again = _Tables()
    again.feed(written.read_text(encoding="utf-8"))
    assert "worst-predicted-sentences" in again.sections and "script" not in again.tags
