"""One object per output type: its output size, loss, decoding and metrics together.

Adding a task touches this file only. A task is fitted on the training targets
(``fit_targets``: learns the label set or the scaling), encodes targets for the loss,
turns raw head outputs into task-shaped scores (``activate``), tunes a decision rule on the
validation split (``tune``), and decodes and scores predictions.

=============  ==========================  ==========================  =========================
task           head output                 loss                        prediction
=============  ==========================  ==========================  =========================
binary         1 logit                     BCE (label smoothing)       label, tuned threshold
multiclass     one logit per class         cross-entropy (smoothing)   label, top-k
multilabel     one logit per label         BCE per label               label set, tuned thresholds
continuous     1 value, standardised       MSE or Huber                number
count          log(rate / mean count)      Poisson                     expected, rounded, P, 90 %
=============  ==========================  ==========================  =========================
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import HeadstartError
from .base import LABEL_SEP, Task
from .classes import Binary, Multiclass
from .multilabel import Multilabel
from .numbers import Continuous, Count, poisson_interval, poisson_pmf

__all__ = ["LABEL_SEP", "TASKS", "Binary", "Continuous", "Count", "Multiclass", "Multilabel", "Task",
           "infer_task", "make_task", "poisson_interval", "poisson_pmf", "task_from_dict"]

TASKS: dict[str, type[Task]] = {"binary": Binary, "multiclass": Multiclass, "multilabel": Multilabel,
                               "continuous": Continuous, "count": Count}


def task_from_dict(d: dict) -> Task:
    d = dict(d)
    name = d.pop("name")
    if name not in TASKS:
        raise HeadstartError(f"unknown task {name!r} in the model folder; this headstart knows {sorted(TASKS)}. "
                             "Upgrade headstart to load it.")
    return TASKS[name](**d)


def infer_task(labels: Sequence[str]) -> Task:
    """Class names from folders: two classes -> binary, more -> multiclass."""
    n = len(set(labels))
    return (Binary() if n == 2 else Multiclass()).fit_targets(labels)


def make_task(name: str, loss: str = "auto") -> Task:
    """An unfitted task by name; ``loss`` picks among the task's losses ("auto": its default).

    >>> make_task("continuous", loss="huber").loss_name
    'huber'
    """
    if name not in TASKS:
        import difflib

        close = difflib.get_close_matches(str(name), list(TASKS), n=2)
        raise HeadstartError(f"unknown task {name!r}; expected one of {list(TASKS)} or 'auto'"
                             + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else "") + ".")
    cls = TASKS[name]
    if loss == "auto":
        return cls()
    losses = getattr(cls, "LOSSES", ())
    if loss not in losses:
        raise HeadstartError(f"loss {loss!r} does not apply to the {name} task"
                             + (f"; it takes one of {list(losses)}." if losses else "; it has one loss. Drop --loss."))
    return cls(loss=loss)
