"""The serve batcher on its own: a fake model that records its calls (no server, no backbone)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from headstart.serve.batching import Batcher


class FakeModel:
    """Answers each input x with {"label": x, "k": top_k}; remembers batch sizes and overlap."""

    def __init__(self, seconds: float = 0.0, fail_on=None):
        self.seconds = seconds
        self.fail_on = fail_on
        self.batches: list[int] = []
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def __call__(self, inputs, top_k):
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.batches.append(len(inputs))
        try:
            time.sleep(self.seconds)
            if self.fail_on is not None and self.fail_on in inputs:
                raise ValueError(f"cannot predict {self.fail_on!r}")
            return [{"label": x, "k": top_k} for x in inputs]
        finally:
            with self._lock:
                self.running -= 1


@pytest.mark.parametrize("workers", [1, 2])
def test_every_request_gets_its_own_rows_in_order(workers):
    model = FakeModel(seconds=0.002)
    b = Batcher(model, wait_ms=3, max_batch=8, workers=workers)
    try:
        with ThreadPoolExecutor(16) as pool:
            futures = list(pool.map(lambda i: b.submit([f"{i}a", f"{i}b", f"{i}c"][: 1 + i % 3], top_k=1 + i % 2),
                                    range(200)))
        for i, f in enumerate(futures):
            want = [f"{i}a", f"{i}b", f"{i}c"][: 1 + i % 3]
            assert f.result(timeout=10) == [{"label": x, "k": 1 + i % 2} for x in want]
    finally:
        b.close()
    assert max(model.batches) <= 8
    assert b.stats.requests == 200 and b.stats.images == sum(1 + i % 3 for i in range(200))


def test_two_workers_compute_two_batches_at_once():
    model = FakeModel(seconds=0.05)
    b = Batcher(model, wait_ms=1, max_batch=4, workers=2)
    try:
        futures = [b.submit([i], top_k=1) for i in range(16)]
        assert [f.result(timeout=10)[0]["label"] for f in futures] == list(range(16))
    finally:
        b.close()
    assert model.most_at_once == 2


def test_a_failing_batch_fails_its_requests_and_the_workers_go_on():
    model = FakeModel(fail_on="bad")
    b = Batcher(model, wait_ms=20, max_batch=8, workers=2)
    try:
        bad, good = b.submit(["bad"], top_k=1), b.submit(["ok"], top_k=1)
        with pytest.raises(ValueError, match="cannot predict 'bad'"):
            bad.result(timeout=10)
        try:  # in the same batch as the bad one, it fails too; otherwise it succeeds
            assert good.result(timeout=10) == [{"label": "ok", "k": 1}]
        except ValueError:
            pass
        assert b.submit(["later"], top_k=2).result(timeout=10) == [{"label": "later", "k": 2}]
    finally:
        b.close()


def test_close_stops_every_worker():
    b = Batcher(FakeModel(), workers=3)
    assert b.submit([1], top_k=1).result(timeout=10)
    b.close()
    assert not any(t.is_alive() for t in b._threads)
