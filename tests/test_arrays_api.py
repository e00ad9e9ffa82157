"""fit / predict / predict_proba / score on in-memory arrays, as a scikit-learn or Keras user has them."""

from __future__ import annotations

import numpy as np
import pytest

from headstart import HeadstartError, ImageClassifier, NotFittedError, load
from headstart.data.arrays import as_uint8

from test_end_to_end import SPEC, stripes


def test_scratch_on_arrays_keeps_label_types_and_round_trips(tmp_path):
    x, y = stripes(120, 16)
    codes = np.array([0 if v == "vertical" else 1 for v in y])  # integer labels, as in Keras
    clf = ImageClassifier(SPEC, epochs=8, val_fraction=0.15, engine="torch").fit(x, codes)
    assert clf.backbone_.input_size == 16 and clf.backbone_.preprocess.channels == 1
    xt, yt = stripes(40, 16, seed=7)
    truth = np.array([0 if v == "vertical" else 1 for v in yt])
    assert clf.score(xt, truth) >= 0.9
    pred = clf.predict(xt)
    assert set(pred) <= {0, 1} and all(isinstance(p, int) for p in pred)
    proba = clf.predict_proba(xt)
    assert proba.shape == (40, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)
    # float images in 0..1 are the same images
    np.testing.assert_allclose(clf.predict_proba(xt / 255.0), proba, atol=1e-5)
    clf.save(tmp_path / "model")
    np.testing.assert_allclose(load(tmp_path / "model", engine="torch").predict_proba(xt), proba, atol=1e-4)


def test_pretrained_backbone_on_arrays_resizes_and_converts_grey(backbone):
    rng = np.random.default_rng(0)
    colours = np.array([(220, 40, 40), (40, 180, 60), (50, 70, 220)])
    idx = np.arange(24) % 3
    x = np.clip(colours[idx][:, None, None, :] + rng.integers(-30, 30, (24, 40, 40, 3)), 0, 255)
    names = np.array(["red", "green", "blue"])[idx]
    # engine="torch": no ONNX export, to stay fast; the export is covered by the folder tests
    clf = ImageClassifier(val_fraction=0.25, engine="torch").fit(x.astype(np.uint8), names)
    assert clf.score(x.astype(np.uint8), names) >= 0.9
    assert clf.predict(x[:3].astype(np.float32) / 255) == list(names[:3])
    grey = x.mean(-1).astype(np.uint8)  # (N, H, W): made RGB for the colour backbone
    assert clf.predict_proba(grey[:4]).shape == (4, 3)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((4, 3, 16, 16, 2), np.uint8), "shape (4, 3, 16, 16, 2)"),
    (np.zeros((4, 16, 16, 4), np.uint8), "drop the alpha"),
    (np.full((4, 16, 16), 300.0), "0..1 (float) or 0..255, got 300..300"),
    (np.full((4, 16, 16), np.nan), "NaN"),
])
def test_bad_arrays_say_what_was_received_and_what_works(bad, message):
    with pytest.raises(HeadstartError) as e:
        as_uint8(bad)
    assert message in str(e.value)


def test_labels_must_match_the_images_and_fitting_comes_first():
    x, _ = stripes(10, 16)
    with pytest.raises(HeadstartError, match="10 images, but y has shape \\(9,\\)"):
        ImageClassifier(SPEC).fit(x, ["a"] * 9)
    with pytest.raises(HeadstartError, match="needs one label per image"):
        ImageClassifier(SPEC).fit(x)
    with pytest.raises(NotFittedError):
        ImageClassifier(SPEC).predict(x)


def test_one_seed_gives_one_scratch_model_within_a_process():
    """The scratch CNN's first weights follow ``seed`` even when torch's global generator has
    moved on (a second fit in the same process, a notebook re-run)."""
    x, y = stripes(60, 16)
    import torch

    first = ImageClassifier(SPEC, epochs=2, val_fraction=0.2, engine="torch", seed=3).fit(x, y)
    torch.rand(1000)  # the global generator moves on between the two fits
    second = ImageClassifier(SPEC, epochs=2, val_fraction=0.2, engine="torch", seed=3).fit(x, y)
    np.testing.assert_array_equal(first.predict_proba(x), second.predict_proba(x))
