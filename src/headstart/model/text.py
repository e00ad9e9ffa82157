"""A text model in the same folder: ``config.json`` (with the vocabulary, as a JSON list) and
``head.safetensors`` (the whole text CNN: embeddings, convolutions, output layer; and the TF-IDF
part's idf and weights, ``tfidf.*``, its n-grams in ``config.json``). No pickle.

``config.json`` says ``"kind": "text"``; ``load_model`` hands such a folder to ``load_text_model``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

KIND = "text"


@dataclass
class SavedTextModel:
    """A text model folder brought back to life: tokenise, encode, score."""

    network: object            # a headstart.backbones.text_cnn.TextCNN, in eval mode
    vocabulary: object         # a headstart.data.text.Vocabulary
    task: object               # a fitted headstart.tasks.Task
    labels: list[str]
    config: dict               # config.json as written
    tfidf: object = None       # a headstart.backbones.text_tfidf.TfidfLogistic, or None: the CNN alone
    kind: str = KIND

    def encode(self, texts: list[str]) -> np.ndarray:
        from ..data.text import tokenize

        net = self.network.config
        return self.vocabulary.encode([tokenize(t, net.level) for t in texts], net.length)

    def scores(self, texts: list[str]) -> np.ndarray:
        """Task scores (N, out_width) for raw texts: the CNN's, averaged with the TF-IDF part's."""
        from ..backbones.text_tfidf import blend
        from ..training.text import predict_text_scores

        cnn = predict_text_scores(self.network, self.task, self.encode(list(texts)))
        return blend(cnn, self.tfidf, list(texts), self.config.get("estimator", {}).get("tfidf", 0))


def is_text_config(config: dict) -> bool:
    return config.get("kind") == KIND


def text_folder(network, vocabulary, task, config: dict, tfidf=None) -> tuple[dict, dict]:
    """The config and weights of a text model: ``ModelFolder(*text_folder(...))`` for ``save_folder``."""
    state = {k: v.detach().clone() for k, v in network.state_dict().items()}
    c = {"kind": KIND, "network": network.config.to_dict(), "vocabulary": list(vocabulary.tokens),
         "task": task.to_dict(), "labels": list(task.labels), **config}
    if tfidf is not None:
        c["tfidf"] = tfidf.to_config()
        state.update(tfidf.state())
    return c, state


def load_text_model(folder) -> SavedTextModel:
    """A text model from a read ``ModelFolder`` (``load_model`` calls this for ``"kind": "text"``)."""
    from ..backbones.text_cnn import TextCNNConfig, build_text_cnn
    from ..backbones.text_tfidf import TfidfLogistic, split_state
    from ..data.text import Vocabulary
    from ..tasks import task_from_dict

    c = folder.config
    task = task_from_dict(c["task"])
    vocab = Vocabulary(list(c["vocabulary"]))
    net = build_text_cnn(TextCNNConfig.from_dict(c["network"]), len(vocab), task.out_dim, task.output)
    cnn_state, tfidf_state = split_state(folder.head_state)
    net.load_state_dict(cnn_state)
    tfidf = TfidfLogistic.from_saved(c["tfidf"], tfidf_state) if c.get("tfidf") else None
    return SavedTextModel(net.eval(), vocab, task, list(c["labels"]), c, tfidf)


def export_text_model(saved: SavedTextModel, fmt: str, out: str | Path, texts: list[str]) -> float:
    """Write the text CNN (token ids (N, L) -> raw outputs) as ONNX or TorchScript and return the
    largest difference from PyTorch on ``texts``; tokenising stays outside (``config.json`` holds
    the vocabulary and ``data.text.TOKEN_RE``)."""
    import torch

    from ..errors import HeadstartError

    net = saved.network.eval()
    ids = torch.from_numpy(saved.encode(texts))
    with torch.inference_mode():
        want = net(ids).numpy()
    if fmt == "torchscript":
        traced = torch.jit.trace(net, (ids,))
        traced.save(str(out))
        with torch.inference_mode():
            got = torch.jit.load(str(out))(ids).numpy()
    elif fmt == "onnx":
        import onnxruntime as ort

        torch.onnx.export(net, (ids,), str(out), opset_version=17, dynamo=False, input_names=["ids"],
                          output_names=["output"], dynamic_axes={"ids": {0: "batch"}, "output": {0: "batch"}})
        got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"ids": ids.numpy()})[0]
    else:
        raise HeadstartError(f"export format {fmt!r} is not known; expected onnx or torchscript.")
    diff = float(np.abs(got - want).max())
    if diff > 1e-3:
        raise HeadstartError(f"the exported {fmt} model differs from PyTorch by {diff:.2e}; not trusted.")
    return diff
