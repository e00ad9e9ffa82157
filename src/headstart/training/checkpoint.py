"""Per-epoch checkpoints that survive Ctrl-C and kill -9, without pickle.

One file, ``checkpoint.safetensors``, written atomically (temporary name, then one rename):
every tensor (model weights, optimizer moments, RNG states, any extra tensors such as the
best epoch's weights) is a safetensors tensor; everything else (optimizer hyper-parameters,
scheduler counters, NumPy / Python RNG states, the run's settings, the history) is JSON in the
file's metadata. ``torch.save`` would pickle the optimizer state, so it is flattened instead.

>>> ck = Checkpoint("run/", settings={"lr": 1e-3, "data": digest})          # doctest: +SKIP
>>> start = ck.restore(model, opt, sched, rngs).epoch if ck.exists() else 0  # doctest: +SKIP
>>> for epoch in range(start, epochs):                                       # doctest: +SKIP
...     ...; ck.save(epoch + 1, model, opt, sched, rngs, state={"history": h})

``restore`` refuses (``HeadstartError``) a checkpoint written with other settings, naming the
first setting that differs, so a resumed run never mixes two experiments.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import HeadstartError
from ..paths import atomic_path

FILE = "checkpoint.safetensors"
FORMAT = "headstart-checkpoint-1"

RNG = torch.Generator | np.random.Generator


@dataclass
class Restored:
    epoch: int                                         # epochs completed
    state: dict = field(default_factory=dict)          # the JSON ``state`` given to save
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # the ``tensors`` given to save


class Checkpoint:
    """The checkpoint of one training run, kept in ``folder``; ``settings`` identify the run."""

    def __init__(self, folder: str | Path, settings: dict):
        self.folder = Path(folder)
        self.path = self.folder / FILE
        self.settings = json.loads(json.dumps(settings, default=str))  # normalised as stored

    def exists(self) -> bool:
        return self.path.is_file()

    def save(self, epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scheduler=None, rngs: dict[str, RNG] | None = None, *, state: dict | None = None,
             tensors: dict[str, torch.Tensor] | None = None) -> Path:
        """Write the state after ``epoch`` completed epochs; atomic (old file kept until done)."""
        from safetensors.torch import save_file

        flat: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in model.state_dict().items()}
        opt_json = _flatten_optimizer(optimizer.state_dict(), flat)
        flat["rng.torch"] = torch.get_rng_state()
        rng_json = {"python": random.getstate()}
        for name, g in (rngs or {}).items():
            if isinstance(g, torch.Generator):
                flat[f"rng.{name}"] = g.get_state()
            else:
                rng_json[name] = g.bit_generator.state
        for k, v in (tensors or {}).items():
            flat[f"extra.{k}"] = v
        meta = {"format": FORMAT, "epoch": epoch, "settings": self.settings, "optimizer": opt_json,
                "scheduler": _jsonable_state(scheduler.state_dict()) if scheduler is not None else None,
                "rng": rng_json, "state": state or {}}
        flat = {k: v.detach().cpu().contiguous() for k, v in flat.items()}
        with atomic_path(self.path) as tmp:
            save_file(flat, str(tmp), metadata={"headstart": json.dumps(meta, default=_json_default)})
        return self.path

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler=None,
                rngs: dict[str, RNG] | None = None) -> Restored:
        """Load the checkpoint into the given objects (in place) and return what else it holds.

        Raises ``HeadstartError`` when it was written by a run with other settings."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(self.path), "pt") as f:
            meta = json.loads(f.metadata()["headstart"])
        if meta.get("format") != FORMAT:
            raise HeadstartError(f"{str(self.path)!r} is not a checkpoint this headstart can read "
                                 f"(format {meta.get('format')!r}); delete it to start over.")
        self.check_settings(meta["settings"])
        flat = load_file(str(self.path))
        model.load_state_dict({k[6:]: v for k, v in flat.items() if k.startswith("model.")})
        optimizer.load_state_dict(_unflatten_optimizer(meta["optimizer"], flat))
        if scheduler is not None and meta["scheduler"] is not None:
            scheduler.load_state_dict({**scheduler.state_dict(), **meta["scheduler"]})
        torch.set_rng_state(flat["rng.torch"])
        random.setstate(_tuplify(meta["rng"]["python"]))
        for name, g in (rngs or {}).items():
            if isinstance(g, torch.Generator):
                g.set_state(flat[f"rng.{name}"])
            else:
                g.bit_generator.state = meta["rng"][name]
        extra = {k[6:]: v for k, v in flat.items() if k.startswith("extra.")}
        return Restored(int(meta["epoch"]), meta["state"], extra)

    def check_settings(self, saved: dict) -> None:
        for key in sorted(set(saved) | set(self.settings)):
            if saved.get(key) != self.settings.get(key):
                raise HeadstartError(
                    f"cannot resume from {str(self.path)!r}: setting {key!r} differs (checkpoint "
                    f"{_short(saved.get(key))}, this run {_short(self.settings.get(key))}). Run with the same "
                    f"data and settings to continue, or delete {str(self.path)!r} (or pass --restart) to start over.")

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


# ---- optimizer state <-> tensors + JSON ------------------------------------------------------
def _flatten_optimizer(sd: dict, flat: dict[str, torch.Tensor]) -> dict:
    """Tensors of ``sd["state"]`` go into ``flat``; the rest is returned as JSON."""
    state_json: dict[str, dict] = {}
    for pid, s in sd["state"].items():
        entry = {}
        for name, v in s.items():
            if isinstance(v, torch.Tensor):
                flat[f"optim.{pid}.{name}"] = v
                entry[name] = {"tensor": True}
            else:
                entry[name] = v
        state_json[str(pid)] = entry
    return {"state": state_json, "param_groups": _jsonable_state({"g": sd["param_groups"]})["g"]}


def _unflatten_optimizer(j: dict, flat: dict[str, torch.Tensor]) -> dict:
    state = {}
    for pid, entry in j["state"].items():
        state[int(pid)] = {name: flat[f"optim.{pid}.{name}"] if isinstance(v, dict) and v.get("tensor") else v
                           for name, v in entry.items()}
    return {"state": state, "param_groups": j["param_groups"]}


def _jsonable_state(d: dict) -> dict:
    """Drop what JSON cannot hold (a LambdaLR keeps its functions' slots as None anyway)."""
    out = {}
    for k, v in d.items():
        try:
            json.dumps(v, default=_json_default)
        except TypeError:
            continue
        out[k] = v
    return out


def _json_default(o):
    if isinstance(o, torch.Tensor) and o.numel() == 1:
        return o.item()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, list) else x


def _short(v) -> str:
    s = json.dumps(v, default=str)
    return s if len(s) <= 80 else s[:77] + "..."
