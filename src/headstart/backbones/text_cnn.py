"""Kim's (2014) CNN for sentences: token embeddings, parallel 1-D convolutions of several widths,
max-over-time pooling, dropout, one linear layer whose outputs a task reads.

A sentence of L tokens becomes an (E, L) "image" one pixel high: each filter of width w is a
detector of one w-word group ("Word -> Word-group"), and max-over-time pooling keeps its
strongest match anywhere in the sentence, so a sentence of any length gives a fixed-size
vector. The character level does the same over characters ("Character -> Word").

>>> net = TextCNN(TextCNNConfig(embed_dim=8, widths=(2, 3), filters=4), vocab_size=10, out_dim=3)
>>> net(torch.zeros(5, 7, dtype=torch.long)).shape
torch.Size([5, 3])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import HeadstartError


@dataclass(frozen=True)
class TextCNNConfig:
    """The network's shape; saved in ``config.json``. Defaults: docs/text.md and benchmarks/text_cnn.py."""

    level: str = "word"                      # "word" or "char"
    embed_dim: int = 128
    widths: tuple[int, ...] = (3, 4, 5)      # filter widths, in tokens
    filters: int = 100                       # feature maps per width
    dropout: float = 0.5
    length: int = 0                          # padded length of a text in tokens; 0: from the training texts
    edge_pad: bool = True                    # Kim's zeros before and after: the widest filter sees the first word alone
    members: int = 1                         # CNNs trained from different seeds, their outputs averaged

    def __post_init__(self):
        if self.level not in ("word", "char"):
            raise HeadstartError(f"text level {self.level!r} is not known; expected 'word' or 'char'.")
        widths = tuple(int(w) for w in self.widths)
        if not widths or min(widths) < 1 or self.filters < 1 or self.embed_dim < 1:
            raise HeadstartError(f"a text CNN needs widths >= 1, filters >= 1 and embed_dim >= 1; got widths "
                                 f"{self.widths}, filters {self.filters}, embed_dim {self.embed_dim}.")
        if not 1 <= int(self.members) <= 16:
            raise HeadstartError(f"members is the number of CNNs averaged, 1 to 16; got {self.members}.")
        if not 0 <= self.dropout < 1:
            raise HeadstartError(f"dropout must be in [0, 1), got {self.dropout}.")
        object.__setattr__(self, "widths", widths)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TextCNNConfig":
        return cls(**{"edge_pad": False, **d, "widths": tuple(d["widths"])})  # folders before edge_pad had none

    def describe(self) -> str:
        return (f"{self.members} x " if self.members > 1 else "") + (f"{self.level} CNN: embeddings {self.embed_dim}, widths {','.join(map(str, self.widths))} x "
                f"{self.filters} filters, max-over-time pooling, dropout {self.dropout}")


class TextCNN(nn.Module):
    def __init__(self, config: TextCNNConfig, vocab_size: int, out_dim: int):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(vocab_size, config.embed_dim, padding_idx=0)
        with torch.no_grad():                                 # Kim's U[-0.25, 0.25]: N(0, 1) swamps the filters
            self.embed.weight.uniform_(-0.25, 0.25)
            self.embed.weight[0].zero_()
        self.convs = nn.ModuleList(nn.Conv1d(config.embed_dim, config.filters, w) for w in config.widths)
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Linear(config.filters * len(config.widths), out_dim)

    @property
    def feature_dim(self) -> int:
        return self.out.in_features

    def features(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L) -> the pooled sentence vector (B, filters * widths)."""
        x = self.embed(ids).transpose(1, 2)                   # (B, E, L): channels first, as Conv1d wants
        edge = max(self.config.widths) - 1 if self.config.edge_pad else 0
        short = max(self.config.widths) - x.shape[2] - 2 * edge
        x = F.pad(x, (edge, edge + max(0, short)))            # zeros: a text shorter than the widest filter fits
        pooled = [F.relu(conv(x)).amax(dim=2) for conv in self.convs]  # each (B, filters): max over time
        return torch.cat(pooled, dim=1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(self.features(ids)))    # (B, out_dim)

    def set_embeddings(self, vectors: torch.Tensor, trainable: bool) -> None:
        """Start from pretrained word vectors (V, E); ``trainable=False`` keeps them static."""
        if tuple(vectors.shape) != tuple(self.embed.weight.shape):
            raise HeadstartError(f"word vectors of shape {tuple(vectors.shape)} do not fit the embedding "
                                 f"{tuple(self.embed.weight.shape)}.")
        with torch.no_grad():
            self.embed.weight.copy_(vectors)
        self.embed.weight.requires_grad_(trainable)


class TextCNNEnsemble(nn.Module):
    """Several ``TextCNN`` of one shape, each trained from its own seed (seeds err on different
    sentences), in one module so that an export holds them all. Their probabilities are averaged
    (``output``: the task's "softmax" or "sigmoid"; on validation a little ahead of averaging
    logits) and handed on as raw outputs the task turns back into those means; "raw": the mean."""

    def __init__(self, members: list[TextCNN], output: str = "raw"):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.config, self.output = members[0].config, output

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        outs = torch.stack([m(ids) for m in self.members])                # (M, B, out_dim)
        if self.output == "softmax":
            return outs.softmax(-1).mean(0).clamp_min(1e-30).log()       # softmax(log p) = p
        if self.output == "sigmoid":
            p = outs.sigmoid().mean(0).clamp(1e-7, 1 - 1e-7)
            return torch.log(p) - torch.log1p(-p)                         # sigmoid(logit p) = p
        return outs.mean(0)


def build_text_cnn(config: TextCNNConfig, vocab_size: int, out_dim: int, output: str = "raw") -> nn.Module:
    """The network ``config`` describes: one ``TextCNN``, or ``config.members`` of them averaged;
    ``output``: the task's (``Task.output``)."""
    if config.members == 1:
        return TextCNN(config, vocab_size, out_dim)
    return TextCNNEnsemble([TextCNN(config, vocab_size, out_dim) for _ in range(config.members)], output)
