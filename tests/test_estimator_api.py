"""``ImageClassifier`` keeps scikit-learn's contract: parameters, clone, GridSearchCV, Pipeline,
every setting checked before any image is read, ``load`` restoring the settings, and
``predict`` taking what a user has (a folder, paths, PIL images, arrays)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import make_class_folder

from headstart import HeadstartError, ImageClassifier, load


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """2 classes x 16 distinct class-coloured 32x32 images."""
    return make_class_folder(tmp_path_factory.mktemp("api") / "photos", classes=("cat", "dog"), n=16)


@pytest.fixture(scope="module")
def paths_and_labels(photos) -> tuple[list[str], list[str]]:
    files = sorted(photos.rglob("*.png"))
    return [str(f) for f in files], [f.parent.name for f in files]


def test_get_params_set_params_and_clone():
    from sklearn.base import clone

    clf = ImageClassifier(head="linear", epochs=7, seed=3, finetune=2, checkpoint_dir="ck")
    params = clf.get_params()
    assert params["head"] == "linear" and params["epochs"] == 7 and params["finetune"] == 2
    copy = clone(clf)
    assert copy is not clf and copy.get_params() == params
    assert clf.set_params(head="mlp", seed=5) is clf and clf.get_params()["seed"] == 5
    assert "ImageClassifier(" in repr(clf) and "seed=5" in repr(clf)


@pytest.mark.parametrize("setting, value, words", [
    ("head", "deep", ["head", "'deep'", "mlp, linear"]),
    ("task", "regression", ["task", "'regression'", "continuous"]),
    ("engine", "tensorrt", ["engine", "'tensorrt'", "auto, openvino, onnxruntime, torch"]),
    ("epochs", 0, ["epochs", "0", "whole number >= 1"]),
    ("epochs", 2.5, ["epochs", "2.5"]),
    ("val_fraction", 1.5, ["val_fraction", "1.5"]),
    ("resize", "squash", ["resize", "'squash'", "crop, pad, stretch"]),
    ("finetune", -1, ["finetune", "-1", "'all'"]),
    ("loss", "l1", ["loss", "'l1'", "huber"]),
    ("seed", "zero", ["seed", "'zero'"]),
])
def test_every_setting_is_checked_before_any_image_is_read(setting, value, words, tmp_path):
    missing = tmp_path / "not-there"  # never looked at: the setting fails first
    with pytest.raises(HeadstartError) as e:
        ImageClassifier(**{setting: value}).fit(missing)
    assert all(w in str(e.value) for w in words), str(e.value)
    assert "not-there" not in str(e.value)


def test_data_that_is_neither_a_folder_nor_paths_is_refused_by_name():
    from headstart import read_dataset

    with pytest.raises(HeadstartError, match="a list of image file paths, got int"):
        read_dataset(42, ["a"])
    with pytest.raises(HeadstartError, match="got list of float"):
        read_dataset([1.5, 2.5], ["a", "b"])
    with pytest.raises(HeadstartError, match="needs one target each"):
        read_dataset(["a.jpg", "b.jpg"], ["cat"])


def test_settings_that_need_another_backbone_say_so(tmp_path):
    with pytest.raises(HeadstartError, match="apply to CNNs built from scratch"):
        ImageClassifier(input_size=28).fit(tmp_path / "x")
    with pytest.raises(HeadstartError, match="built from scratch: every layer is already trained"):
        ImageClassifier(backbone="scratch:conv8-relu-gap", finetune=1).fit(tmp_path / "x")
    with pytest.raises(HeadstartError, match="unknown backbone 'resnet9000'"):
        ImageClassifier(backbone="resnet9000").fit(tmp_path / "x")


@pytest.fixture(scope="module")
def fitted(paths_and_labels) -> ImageClassifier:
    return ImageClassifier(epochs=5, val_fraction=0.25, test_fraction=0.0).fit(*paths_and_labels)


def test_fit_on_a_list_of_paths_and_labels(fitted, paths_and_labels, photos):
    paths, labels = paths_and_labels
    clf = fitted
    assert clf.classes_ == ["cat", "dog"] and clf.dataset_.layout == "list"
    assert clf.fit_info_["task"] == "binary"
    assert clf.score(paths, labels) >= 0.9  # the classes are two plain colours
    folder_preds = clf.predict(photos / "cat")  # a folder: its images, not the characters of its name
    assert folder_preds == clf.predict(sorted(str(p) for p in (photos / "cat").glob("*.png")))
    assert len(folder_preds) == 16 and set(folder_preds) <= {"cat", "dog"}


def test_grid_search_over_head_settings_on_cached_features(paths_and_labels):
    from sklearn.model_selection import GridSearchCV

    paths, labels = paths_and_labels
    grid = GridSearchCV(ImageClassifier(epochs=5, val_fraction=0.25, test_fraction=0.0),
                        {"head": ["mlp", "linear"]}, cv=2, refit=False)
    grid.fit(paths, labels)
    assert grid.best_params_["head"] in ("mlp", "linear")
    scores = grid.cv_results_["mean_test_score"]
    assert len(scores) == 2 and np.all((scores >= 0.8) & (scores <= 1.0)), scores


def test_runs_inside_a_pipeline(paths_and_labels):
    from sklearn.pipeline import make_pipeline

    paths, labels = paths_and_labels
    pipe = make_pipeline(ImageClassifier(head="linear", epochs=5, val_fraction=0.25, test_fraction=0.0))
    pipe.fit(paths, labels)
    assert pipe.predict(paths[:3]) == pipe[-1].predict(paths[:3]) and len(pipe.predict(paths[:3])) == 3
    assert pipe.score(paths, labels) >= 0.8


def test_predict_takes_pil_images_and_arrays_and_refuses_the_rest(fitted, paths_and_labels):
    from PIL import Image

    paths, _ = paths_and_labels
    clf = fitted
    images = [Image.open(p).convert("RGB") for p in paths[:4]]
    assert clf.predict(images) == clf.predict(paths[:4])
    arrays = np.stack([np.asarray(im) for im in images])  # (N, H, W, 3) uint8
    assert len(clf.predict(arrays)) == 4 and clf.predict_proba(arrays).shape == (4, 2)
    with pytest.raises(HeadstartError, match="predict takes a folder.*got int"):
        clf.predict(42)
    with pytest.raises(HeadstartError, match="got list of dict"):
        clf.predict([{"a": 1}])
    assert clf.predict(np.array(paths[:3])) == clf.predict(paths[:3])  # paths in a NumPy array too


def test_load_restores_every_setting(photos, tmp_path):
    clf = ImageClassifier(head="linear", epochs=4, seed=2, val_fraction=0.3, test_fraction=0.2, refit=False,
                          batch_size=16, use_cache=False).fit(photos)
    loaded = load(clf.save(tmp_path / "m"), verbose=True)
    want = {k: v for k, v in clf.get_params().items() if k != "verbose"}
    got = {k: v for k, v in loaded.get_params().items() if k != "verbose"}
    assert got == want and loaded.verbose is True
    assert loaded.predict(photos / "dog") == clf.predict(photos / "dog")


def test_the_command_lines_copies_of_library_names_agree():
    """The CLI keeps a few names as text so that ``--help`` does not import torch."""
    from headstart.backbones import is_scratch
    from headstart.cli.common import TASK_NAMES
    from headstart.cli.train import CHECKPOINT_FILE
    from headstart.tasks import TASKS
    from headstart.training.checkpoint import FILE

    assert CHECKPOINT_FILE == FILE and TASK_NAMES == list(TASKS)
    assert is_scratch("scratch:conv8-gap") and is_scratch(" Scratch:conv8") and not is_scratch("efficientnet_lite0")


def test_predicting_does_not_import_scikit_learn(trained_model):
    """Serving and predicting load no scikit-learn (SciPy, pandas): only metrics and sklearn's
    own tools (clone, GridSearchCV) do."""
    import subprocess
    import sys

    model_dir, data = trained_model
    code = ("import sys, headstart; m = headstart.load(sys.argv[1]); print(m.predict(sys.argv[2])[:1]); "
            "print(sorted({k.split('.')[0] for k in sys.modules} & {'sklearn', 'scipy', 'pandas'}))")
    p = subprocess.run([sys.executable, "-c", code, str(model_dir), str(data)], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == "[]", p.stdout
