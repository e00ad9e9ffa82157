"""Run ``finetune`` once, on one process or as one rank of ``torchrun`` (gloo):
``python ddp_finetune_run.py DATA OUT``. Rank 0 writes the checkpoint (``OUT/checkpoint.safetensors``:
the weights after the last epoch, whichever epoch was best) and the history (``OUT/result.json``).

The head's dropout is switched off, so the run is deterministic: two processes, each with half
of every batch and DDP averaging the gradients, must take the same steps as one process.
Used by ``test_distributed.py``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(data: str, out: str) -> None:
    from headstart import ImageClassifier
    from headstart.heads import Head
    from headstart.training.finetune import FinetuneConfig, finetune

    dist = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from headstart.training.distributed import init_from_env
        from headstart.training.finetune_distributed import ProcessGroup

        init_from_env()
        dist = ProcessGroup()
    clf = ImageClassifier(val_fraction=0.25, test_fraction=0.0, head="linear", verbose=False).fit(data)
    head = Head(clf.head_.in_dim, clf.head_.out_dim, "linear", input_dropout=0.0)
    head.load_state_dict(clf.head_.state_dict())
    part = {k: [s for s in clf.dataset_.samples if s.split == k] for k in ("train", "val")}
    train, val = ([[s.path for s in part[k]], [s.digest for s in part[k]], [s.label for s in part[k]]]
                  for k in ("train", "val"))
    config = FinetuneConfig(stages=1, epochs=3, patience=10, lr_body=1e-3, lr_head=1e-3)
    r = finetune(clf.backbone_, head, clf.task_, train, val, config, checkpoint_dir=out, dist=dist)
    if dist is None or dist.is_main:
        Path(out, "result.json").write_text(json.dumps({"history": r.history, "best_epoch": r.best_epoch}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
