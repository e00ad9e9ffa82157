"""Join concurrent prediction requests into batches for a few worker threads.

Each request hands over its images (as model inputs) and gets a ``Future``. A free worker takes
the first waiting request, waits up to ``wait_ms`` for more (up to ``max_batch`` images in all),
runs the model once on all of them, and hands each request its own rows back. Only one worker
gathers at a time, so while the others compute, requests pile up into the next batch.

Waiting requests are taken from their clients in turn (round robin, oldest first within a
client), so a client with one image is not queued behind another client's flood.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

Predict = Callable[[Sequence[Any], int], list[dict]]  # (one input per image, top_k) -> rows


@dataclass
class _Request:
    images: list[Any]
    top_k: int
    client: Any = None
    future: Future = field(default_factory=Future)


@dataclass
class BatchStats:
    batches: int = 0
    images: int = 0
    requests: int = 0
    largest: int = 0


class Batcher:
    """``submit(images, top_k)`` from any thread -> a ``Future`` of one result dict per image.

    >>> b = Batcher(clf.predict_images, wait_ms=5)       # doctest: +SKIP
    >>> b.submit([img], top_k=3).result()                 # doctest: +SKIP
    [{'label': 'cat', 'probability': 0.93, 'top': [...]}]

    With ``workers`` > 1, one worker gathers the next batch while the others run theirs, so
    the model is called on one batch while the next one fills (``predict`` must then be
    safe to call from several threads, as an ONNX Runtime session is).
    """

    def __init__(self, predict: Predict, *, wait_ms: float = 5.0, max_batch: int = 64, workers: int = 1,
                 name: str = "model"):
        self.predict = predict
        self.wait_s = max(0.0, wait_ms) / 1000
        self.max_batch = max(1, max_batch)
        self.stats = BatchStats()
        self.queued = 0  # images submitted and not yet taken into a batch
        self._waiting: OrderedDict[Any, deque[_Request]] = OrderedDict()  # by client, in turn
        self._ready = threading.Condition()
        self._closed = False
        self._gathering = threading.Lock()  # one worker gathers at a time
        self._carry: _Request | None = None  # a request that did not fit the last batch
        self._stats_lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, name=f"headstart-batcher-{name}-{i}", daemon=True)
                         for i in range(max(1, workers))]
        for t in self._threads:
            t.start()

    def submit(self, images: list[Any], top_k: int, client: Any = None) -> Future:
        """``client``: whom the request is from (any hashable); clients are served in turn."""
        req = _Request(list(images), top_k, client)
        with self._stats_lock:
            self.queued += len(req.images)
        with self._ready:
            self._waiting.setdefault(client, deque()).append(req)
            self._ready.notify()
        return req.future

    def close(self) -> None:
        with self._ready:  # the workers finish what is waiting, then stop
            self._closed = True
            self._ready.notify_all()
        for t in self._threads:
            t.join(timeout=10)

    def _take(self, timeout: float | None) -> _Request | None:
        """The next client's oldest request; None when closed and empty, or at the timeout."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._ready:
            while not self._waiting:
                left = None if end is None else end - time.monotonic()
                if self._closed or (left is not None and left <= 0):
                    return None
                self._ready.wait(left)
            client, reqs = self._waiting.popitem(last=False)
            req = reqs.popleft()
            if reqs:
                self._waiting[client] = reqs  # back of the line
            return req

    def _run(self) -> None:
        while True:
            with self._gathering:
                batch = self._gather()
            if batch is None:
                return
            with self._stats_lock:
                self.queued -= sum(len(r.images) for r in batch)
            self._run_batch([r for r in batch if r.future.set_running_or_notify_cancel()])

    def _gather(self) -> list[_Request] | None:
        first = self._carry or self._take(None)
        self._carry = None
        if first is None:
            return None
        batch, n = [first], len(first.images)
        deadline = time.monotonic() + self.wait_s
        while n < self.max_batch:
            nxt = self._take(max(0.0, deadline - time.monotonic()))
            if nxt is None:
                break
            if n + len(nxt.images) > self.max_batch:
                self._carry = nxt  # starts the next batch
                break
            batch.append(nxt)
            n += len(nxt.images)
        return batch

    def _run_batch(self, batch: list[_Request]) -> None:
        # Requests asking for different top_k are decoded separately (rare; same model call cost).
        by_k: dict[int, list[_Request]] = {}
        for r in batch:
            by_k.setdefault(r.top_k, []).append(r)
        for k, reqs in by_k.items():
            try:
                rows = self.predict([im for r in reqs for im in r.images], k)
            except BaseException as e:  # the worker survives; each waiting request gets the error
                for r in reqs:
                    r.future.set_exception(e)
                continue
            s = 0
            for r in reqs:
                r.future.set_result(rows[s:s + len(r.images)])
                s += len(r.images)
        n = sum(len(r.images) for r in batch)
        with self._stats_lock:
            self.stats.batches += 1
            self.stats.images += n
            self.stats.requests += len(batch)
            self.stats.largest = max(self.stats.largest, n)
