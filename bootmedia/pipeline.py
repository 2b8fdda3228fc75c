"""The bounded copy loop: a reader thread, a pool of workers, results in input order.

    reader thread --(bounded queue of futures)--> workers (zstd / blake3 release the GIL)
                                               --> consumer, in input order

At most `depth` items are in flight, and with a `weight` (an item's bytes) at most `budget`
bytes (one item alone may weigh more), so memory is a constant whatever the disk size or a
hostile image's frame sizes. An error
anywhere travels to the consumer and is re-raised there (bmaptool's pattern); cancellation is an
Event checked between items.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_END = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)))


class OrderedPool(Generic[T, R]):
    def __init__(
        self,
        fn: Callable[[T], R],
        threads: int | None = None,
        depth: int | None = None,
        weight: Callable[[T], int] | None = None,
        budget: int = 64 << 20,
    ):
        self.fn = fn
        self.threads = threads or default_threads()
        self.depth = depth or self.threads * 3
        self.weight = weight
        self.budget = budget

    def run(
        self, items: Iterable[T], cancel: threading.Event | None = None
    ) -> Iterator[tuple[T, R]]:
        """Yield (item, fn(item)) in the order items come. Closing the iterator early (an
        error in the consumer) stops the reader and the workers cleanly."""
        stop = threading.Event()
        q: queue.Queue[object] = queue.Queue(maxsize=self.depth)
        weight = self.weight
        room = threading.Condition()
        inflight = [0]  # bytes submitted and not yet consumed
        with ThreadPoolExecutor(self.threads, thread_name_prefix="bm-worker") as pool:

            def put(obj: object) -> bool:
                while not stop.is_set():
                    try:
                        q.put(obj, timeout=0.1)
                        return True
                    except queue.Full:
                        continue
                return False

            def reader() -> None:
                try:
                    for item in items:
                        if stop.is_set() or (cancel is not None and cancel.is_set()):
                            break
                        w = weight(item) if weight is not None else 0
                        if w:
                            with room:
                                while inflight[0] and inflight[0] + w > self.budget:
                                    if stop.is_set():
                                        return
                                    room.wait(0.1)
                                inflight[0] += w
                        if not put((item, pool.submit(self.fn, item), w)):
                            return
                except BaseException as exc:  # travels to the consumer
                    put(_Failure(exc))
                    return
                put(_END)

            thread = threading.Thread(target=reader, name="bm-reader", daemon=True)
            thread.start()
            try:
                while True:
                    obj = q.get()
                    if obj is _END:
                        break
                    if isinstance(obj, _Failure):
                        raise obj.exc
                    assert isinstance(obj, tuple)
                    pending: Future[R] = obj[1]
                    yield obj[0], pending.result()
                    if obj[2]:
                        with room:
                            inflight[0] -= obj[2]
                            room.notify()
            finally:
                stop.set()
                while True:  # unblock the reader and let queued work finish or cancel
                    try:
                        obj = q.get_nowait()
                    except queue.Empty:
                        if not thread.is_alive():
                            break
                        thread.join(0.05)
                        continue
                    if isinstance(obj, tuple):
                        obj[1].cancel()
                thread.join()
