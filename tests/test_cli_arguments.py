"""A model argument that is plainly not a model folder gets a message that says what it is."""

from __future__ import annotations

import pytest
from conftest import make_class_folder, write_image

from headstart.cli.arguments import check_model_arg
from headstart.errors import HeadstartError

USAGE = "headstart predict MODEL_DIR PATHS..."


@pytest.mark.parametrize("make, says", [
    (lambda d: "https://example.com/model.zip", "is a URL"),
    (lambda d: "-", "standard input"),
    (lambda d: str(write_image(d / "photo.jpg")), "is an image file, not a model folder: the model comes first"),
    (lambda d: str(make_class_folder(d / "new", n=2)), "is a folder of images, not a model folder"),
    (lambda d: str(make_class_folder(d / "flat", classes=("a",), n=2) / "a"), "were the arguments swapped?"),
])
def test_plain_mistakes_with_the_model_argument_are_named(tmp_path, make, says):
    with pytest.raises(HeadstartError, match="Usage: headstart predict") as e:
        check_model_arg(make(tmp_path), USAGE)
    assert says in str(e.value)


def test_an_exported_file_is_named_as_one(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    with pytest.raises(HeadstartError, match="an exported model, for ONNX Runtime"):
        check_model_arg(str(tmp_path / "model.onnx"), USAGE)


def test_a_model_folder_or_an_empty_one_is_left_to_the_loader(trained_model, tmp_path):
    check_model_arg(str(trained_model[0]), USAGE)
    check_model_arg(str(tmp_path), USAGE)
    check_model_arg(str(tmp_path / "missing"), USAGE)
