"""``headstart export MODEL_DIR --format onnx|torchscript|openvino``: one self-checking file.

Heavy imports (torch, onnx) happen inside the command so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse

from .common import examples


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL_DIR", help="model folder written by `headstart train`")
    p.add_argument("--format", choices=["onnx", "torchscript", "openvino"], default="onnx",
                   help="onnx (ONNX Runtime, any language), torchscript (torch.jit.load) or openvino (OpenVINO IR: "
                        "model.xml with its weights in model.bin beside it); default onnx")
    p.add_argument("--out", metavar="FILE", help="the file to write (default MODEL_DIR/model.onnx, model.pt or model.xml)")
    p.add_argument("--min-accuracy", type=float, metavar="X",
                   help="refuse to export unless the model's recorded test accuracy is at least X (e.g. 0.9)")
    p.add_argument("--quantize", choices=["int8"],
                   help="int8 weights and activations, calibrated on up to 64 of the model's training images "
                        "(onnx: ONNX Runtime static QDQ; openvino: NNCF, pip install 'headstart[int8]'); weights only when "
                        "the data folder is gone. Reports size, images/s, agreement with fp32 and the test "
                        "accuracy change, which can cost points (docs/benchmarks.md)")


def run(args: argparse.Namespace) -> int:
    from ..model.export import export_model
    from .text import is_text_model

    if is_text_model(args.model):
        return _export_text(args)
    from .arguments import check_model_arg

    check_model_arg(args.model, "headstart export MODEL_DIR [--format onnx|torchscript|openvino]")
    r = export_model(args.model, args.format, args.out, min_accuracy=args.min_accuracy, quantize=args.quantize)
    q = r.quantized
    print(f"exported {r.format} to {r.path}  (parity {r.max_abs_diff:.2e} on {r.n_check_images} images, "
          f"{r.seconds:.1f} s)")
    if "test_accuracy_int8" in q:
        print(f"int8 test accuracy {q['test_accuracy_int8']:.4f} vs fp32 {q['test_accuracy_fp32']:.4f} "
              f"({100 * (q['test_accuracy_int8'] - q['test_accuracy_fp32']):+.2f} points)")
    return 0


def _export_text(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import HeadstartError
    from ..model.folder import load_model
    from ..model.text import export_text_model

    if args.quantize or args.min_accuracy is not None:
        raise HeadstartError("--quantize and --min-accuracy apply to image models; a text model exports as it is.")
    if args.format == "openvino":
        raise HeadstartError("a text model exports to onnx or torchscript; OpenVINO reads the .onnx file: "
                             "headstart export MODEL_DIR --format onnx")
    saved = load_model(args.model)
    out = args.out or str(Path(args.model) / ("model.onnx" if args.format == "onnx" else "model.pt"))
    diff = export_text_model(saved, args.format, out, ["what is the capital of france ?", "a fine film", "x"])
    print(f"exported {args.format} to {out}  (parity {diff:.2e}; input: token ids from config.json's vocabulary)")
    if saved.tfidf is not None:
        print("note: the file holds the CNNs alone; this model also averages in its TF-IDF + logistic regression "
              "part, which stays in the folder (headstart predict/serve use both), so the file's predictions "
              "differ from them. For a file that is the whole model: headstart train DATA --tfidf 0")
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="export a model folder to ONNX, TorchScript or OpenVINO IR, checked against "
                                      "PyTorch",
                       **examples("headstart export model/                      # model/model.onnx",
                                  "headstart export model/ --format torchscript --out model.pt",
                                  "headstart export model/ --format openvino       # model/model.xml + .bin",
                                  "headstart export model/ --quantize int8         # model/model-int8.onnx",
                                  "headstart export model/ --format openvino --quantize int8   # model-int8.xml + .bin"))
    add_arguments(p)
    p.set_defaults(run=run)
