"""What a fit learns, as one value (each way of fitting returns it, the estimator keeps it), and
the steps every way of fitting shares."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import HeadstartError


@dataclass
class Fitted:
    """The learned state of ``ImageClassifier`` (its attributes with a trailing underscore)."""

    backbone: object              # backbone_: a headstart.backbones.Backbone (trained, for a scratch CNN)
    head: object                  # head_
    task: object                  # task_: fitted on the training targets
    head_config: object           # head_config_: the head's training settings (training.head.HeadConfig)
    history: list[dict]           # history_: per epoch
    metrics: dict                 # metrics_: "validation", "test" (when there is a test split), ...
    info: dict                    # fit_info_: data, seconds, counts, task and why, ...
    dataset: object = None        # dataset_: the headstart.data.Dataset it was fitted on (None for arrays)
    skipped: list[dict] = field(default_factory=list)   # skipped_: files that failed to decode
    data_check: dict | None = None                      # data_check_: leaks, conflicts, suspect labels

    @property
    def classes(self) -> list[str]:
        return list(self.task.labels)


# ---- steps every way of fitting shares ------------------------------------------------------
def fit_task(est, dataset, targets: list, log) -> tuple[object, dict]:
    """The task, fitted on the training ``targets``, and what the fit record says of it: which
    task and why (``dataset.task`` from a CSV or a list; else class folders, or ``est.task``)."""
    from ..tasks import infer_task, make_task

    task, reason = getattr(dataset, "task", None), getattr(dataset, "task_reason", "")
    if task is None and est.task == "auto":  # folder names are class names
        task = make_task(infer_task(targets).name, est.loss)
        reason = "folder names are class names: 2 -> binary, more -> multiclass"
    elif task is None:  # folder names read as the task's targets, e.g. counts 0/ 1/ 2/
        task, reason = make_task(est.task, est.loss), "set by you (task=)"
        for name in sorted(set(targets)):
            try:
                task.parse(name)
            except ValueError as e:
                raise HeadstartError(f"task {est.task!r} reads each folder name as a target, but folder "
                                     f"{name!r} is not one: {e}. Rename the folders, or give targets in a "
                                     "CSV with labels= (--labels).") from None
    log(f"task: {task.name} ({reason})")
    info = {"task": task.name, "task_reason": reason}
    if dataset is not None and dataset.from_table:
        info.update({"labels_csv": dataset.source, "path_column": dataset.path_column,
                     "target_column": dataset.target_column, "n_skipped_rows": len(dataset.skipped_rows)})
    return task.fit_targets(targets), info


def check_splits(where: str, n_train: int, n_val: int) -> None:
    if not n_train or not n_val:
        raise HeadstartError(
            f"{where} has {n_train} training and {n_val} validation images after skipping bad files; need at "
            "least one of each. Add images, or set val_fraction / --val-fraction.")


def check_known(task, held_out: list) -> None:
    missing = task.unknown(held_out)
    if missing:
        raise HeadstartError(f"classes {missing} have validation/test images but none for training; "
                             "add training images for them or remove those folders.")
