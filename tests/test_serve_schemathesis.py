"""The API's OpenAPI document holds: Schemathesis, run as a user runs it against the real
``headstart serve`` on loopback, with every check on and its stateful phase (teach -> job ->
model.zip through the documented links), finds nothing.

What a schema cannot say (image parts are real images; as many labels as images) is in
``schemathesis_hooks.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from serve_server import Server

pytest.importorskip("fastapi")
pytest.importorskip("schemathesis")

TESTS = Path(__file__).parent


def test_schemathesis_finds_nothing(trained_model, tmp_path):
    model, _ = trained_model
    log = tmp_path / "calls.txt"
    with Server([model, "--timeout", "20", "--work-dir", tmp_path / "work"], log=tmp_path / "server.log") as srv:
        env = {**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks", "HEADSTART_SCHEMATHESIS_LOG": str(log),
               "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
        cli = Path(sys.executable).parent / "schemathesis"
        run = subprocess.run([str(cli), "run", f"{srv.url}/openapi.json", "--checks", "all", "--max-examples", "10",
                              "--seed", "21", "--no-color", "--wait-for-schema", "30"],
                             env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert srv.alive()
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", out)
    assert generated and generated.group(1) == generated.group(2), out[-3000:]
    assert int(generated.group(1)) > 100, out[-3000:]
    print(f"schemathesis: {generated.group(0)}")
    calls = log.read_text().splitlines()
    statuses = {c.rsplit(" ", 1)[0]: set() for c in calls}
    for c in calls:
        op, status = c.rsplit(" ", 1)
        statuses[op].add(int(status))
    print({op: sorted(s) for op, s in statuses.items()})
    # every operation answered; real images were predicted and teach jobs started and followed
    assert 200 in statuses["POST /v1/predict"]
    assert 202 in statuses["POST /v1/teach/jobs"]
    assert 200 in statuses["GET /v1/teach/jobs/{job_id}"]
    assert statuses["GET /v1/teach/jobs/{job_id}/model.zip"] & {200, 409}
    assert all(s < 500 for ss in statuses.values() for s in ss), statuses
