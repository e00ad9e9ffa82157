"""The record of training runs: each model folder's settings, per-epoch figures and results.

``train`` writes ``history.csv`` (one row per epoch, as Keras' CSVLogger and Ultralytics'
results.csv do) beside ``config.json``, which holds the settings and the final figures.
``headstart runs DIR...`` lists the model folders found and compares them: the figures, and
the settings that differ between them.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import HeadstartError

SKIP_PARAMS = {"verbose", "engine", "checkpoint_dir", "ray", "distributed"}  # how a run ran, not what it learned


def history_csv(history: list[dict]) -> str:
    """Per-epoch rows as CSV text; the columns are every key any row has, in first-seen order."""
    columns = list(dict.fromkeys(k for row in history for k in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return out.getvalue()


@dataclass
class Run:
    folder: Path
    config: dict

    @property
    def figures(self) -> dict:
        """The run's headline figures: when, on what, how long, validation and test."""
        c, m = self.config, self.config.get("metrics", {})
        val, test, training = m.get("validation", {}), m.get("test", {}), c.get("training", {})
        main = next((k for k in ("accuracy", "mean_average_precision", "r2", "mae") if k in test), None)
        counts = training.get("counts")  # label -> split -> images
        return {"created": str(c.get("created", ""))[:16].replace("T", " "),
                "task": c.get("task", {}).get("name", "?"), "backbone": _backbone(c.get("backbone")),
                "images": sum(sum(v.values()) for v in counts.values()) if isinstance(counts, dict) else "",
                "epochs": _epochs(c, val), "validation": _num(val.get("score")),
                "test": f"{main} {_num(test[main])}" if main else "",
                "seconds": _num(training.get("seconds"), ".0f")}

    @property
    def settings(self) -> dict:
        return {k: v for k, v in self.config.get("params", {}).items() if k not in SKIP_PARAMS}


def find_runs(paths: list[str | Path]) -> list[Run]:
    """Model folders: each path given that is one, else those one or two levels below it."""
    runs = []
    for p in map(Path, paths):
        if not p.exists():
            raise HeadstartError(f"{str(p)!r} does not exist. Give model folders, or folders that hold them.")
        found = [p] if (p / "config.json").is_file() else sorted(
            c.parent for pattern in ("*/config.json", "*/*/config.json") for c in p.glob(pattern))
        runs += [r for r in map(_read, found) if r is not None]
    return sorted(runs, key=lambda r: r.figures["created"])


def _read(folder: Path) -> Run | None:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # not a model folder we can read: `headstart runs` lists, it does not judge
    return Run(folder, config) if isinstance(config, dict) and config.get("format") == "headstart-model" else None


def compare(runs: list[Run]) -> list[dict]:
    """One row per run: its figures, then each setting that is not the same in every run."""
    keys = list(dict.fromkeys(k for r in runs for k in r.settings))
    differ = [k for k in keys if len({json.dumps(r.settings.get(k), sort_keys=True, default=str) for r in runs}) > 1]
    return [{"run": str(r.folder), **r.figures, **{k: r.settings.get(k) for k in differ}} for r in runs]


def table(rows: list[dict]) -> str:
    """Rows as an aligned text table (a column per key, a header, a rule)."""
    if not rows:
        return ""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, cells)])


def _cell(v) -> str:
    return "" if v is None else v if isinstance(v, str) else json.dumps(v, default=str)


def _num(v, fmt: str = ".4f") -> str:
    return format(v, fmt) if isinstance(v, (int, float)) else ""


def _backbone(spec) -> str:
    return spec.get("name", "?") if isinstance(spec, dict) else str(spec or "?")


def _epochs(config: dict, val: dict) -> str:
    if "best_epoch" in val and "epochs" in val:
        return f"{val['best_epoch']}/{val['epochs']}"
    return str(len(config.get("history", [])) or "")


def log_tensorboard(runs: list[Run], logdir: str | Path) -> list[Path]:
    """Write each run's per-epoch figures and final metrics as TensorBoard event files, one
    sub-folder per run (named after its model folder), for `tensorboard --logdir LOGDIR`."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise HeadstartError("TensorBoard is not installed. Install it with: pip install 'headstart[tensorboard]'") from None
    written = []
    for run in runs:
        path = Path(logdir) / run.folder.name
        with SummaryWriter(str(path)) as w:
            for row in run.config.get("history", []):
                for key, value in row.items():
                    if key != "epoch" and isinstance(value, (int, float)):
                        w.add_scalar(f"epoch/{key}", value, row["epoch"])
            finals = {f"{split}/{k}": v for split, m in run.config.get("metrics", {}).items() if isinstance(m, dict)
                      for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            hparams = {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v, default=str)
                       for k, v in run.settings.items()}
            w.add_hparams(hparams, finals, run_name=".")
        written.append(path)
    return written
