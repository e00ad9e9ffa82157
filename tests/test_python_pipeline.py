"""What the command line does, Python does alone: fine-tuning with per-epoch checkpoints that an
interrupted fit resumes from, without importing anything of ``headstart.cli``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from conftest import make_class_folder

SCRIPT = textwrap.dedent("""
    import json, sys
    from headstart import ImageClassifier

    data, ck, mode = sys.argv[1:4]
    real_log = ImageClassifier._log

    def interrupt(self, msg):  # as Ctrl-C while epoch 2 is logged: the checkpoint of epoch 1 is on disk
        if msg.lstrip().startswith("epoch 2/"):
            raise KeyboardInterrupt
        real_log(self, msg)

    if mode == "interrupt":
        ImageClassifier._log = interrupt
    clf = ImageClassifier(finetune=1, finetune_epochs=3, checkpoint_dir=ck, seed=0, verbose=True)
    try:
        clf.fit(data)
    except KeyboardInterrupt:
        print(json.dumps({"interrupted": True}))
        sys.exit(0)
    ft = clf.metrics_["finetune"]
    print(json.dumps({"interrupted": False, "cli_imported": any(m.startswith("headstart.cli") for m in sys.modules),
                      "losses": [row["loss"] for row in ft["history"]], "epochs": len(ft["history"]),
                      "stages": ft["config"]["stages"], "test": "test" in clf.metrics_}))
""")


def _fit(data, ck, mode: str, env) -> tuple[dict, str]:
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(data), str(ck), mode], capture_output=True, text=True,
                       timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1]), p.stderr


def test_finetune_resumes_from_python_to_the_same_epochs(tmp_path):
    import os

    data = make_class_folder(tmp_path / "photos", classes=("red", "green", "blue"), n=12)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HEADSTART_CACHE_DIR": str(tmp_path / "cache")}
    whole, _ = _fit(data, tmp_path / "ck-whole", "whole", env)
    assert not whole["cli_imported"] and whole["stages"] == 1 and whole["epochs"] == 3 and whole["test"]
    assert not (tmp_path / "ck-whole").exists()  # a finished fit removes its checkpoint

    ck = tmp_path / "ck"
    stopped, _ = _fit(data, ck, "interrupt", env)
    assert stopped["interrupted"] and (ck / "checkpoint.safetensors").is_file()
    resumed, log = _fit(data, ck, "resume", env)
    assert "resumed from the checkpoint after epoch 1" in log
    assert not resumed["cli_imported"] and resumed["epochs"] == 3
    assert resumed["losses"] == whole["losses"]  # the same steps as the uninterrupted fit
    assert not ck.exists()
