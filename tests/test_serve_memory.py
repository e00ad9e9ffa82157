"""What a teach job leaves in the server's memory: no arena sessions, no dropout bank, the heap trimmed."""

from __future__ import annotations

import threading
import time

import pytest
from serve_server import shape_folder

pytest.importorskip("fastapi")


def test_a_teach_job_leaves_no_arena_session_and_its_model_no_dropout_bank(tmp_path):
    from headstart.backbones.engines import OnnxEngine
    from headstart.heads import BankDropout
    from headstart.serve.app import ServeSettings
    from headstart.serve.teach import TeachJobs

    taught = []
    jobs = TeachJobs(ServeSettings(work_dir=str(tmp_path / "work"), engine="onnxruntime"),
                     on_model=lambda job, clf: taught.append(clf))
    examples = [(p.parent.name, p.name, p.read_bytes()) for p in sorted(shape_folder(tmp_path / "shapes").glob("*/*.png"))]
    job = jobs.start(examples)
    deadline = time.monotonic() + 300
    while job.status == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job.status == "done", job.public()
    for t in threading.enumerate():  # "done" is said before the job's clean-up: wait for that too
        if t.name == f"headstart-teach-{job.id}":
            t.join(60)
    assert not [k for k in OnnxEngine._sessions if k[3]]  # extraction's arena sessions are gone
    (clf,) = taught
    assert all(m._bank is None for m in clf.head_.modules() if isinstance(m, BankDropout))


def test_large_blocks_are_mapped_not_kept_in_the_heap():
    import ctypes.util

    from headstart.serve.guard import fix_mmap_threshold, release_memory

    release_memory()  # never raises, glibc or not
    assert fix_mmap_threshold() is bool(ctypes.util.find_library("c") and hasattr(ctypes.CDLL(None), "mallopt"))
