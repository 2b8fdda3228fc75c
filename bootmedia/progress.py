"""Progress is data: jobs report Progress events through a callback; the CLI and the TUI render them."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from bootmedia.errors import Cancelled

log = logging.getLogger("bootmedia.job")


@dataclass(frozen=True)
class Progress:
    """One snapshot of a running job.

    `step` is the current step's name and `steps` the trail of step names so far (nested steps are
    joined with " › "). `done`/`total` count bytes for the whole job, so the ETA is the job's.
    """

    step: str
    done: int
    total: int
    rate: float  # bytes per second, smoothed
    eta: float | None  # seconds, None when unknown
    elapsed: float
    steps: tuple[str, ...] = ()
    message: str = ""

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0


ProgressCallback = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    pass


@dataclass
class Reporter:
    """Turns byte counts and step changes into rate-limited Progress events.

    Thread-safe: pipeline workers call advance() directly. The cancel Event is checked by
    check_cancel(), which jobs call between chunks.
    """

    callback: ProgressCallback = no_progress
    total: int = 0
    cancel: threading.Event = field(default_factory=threading.Event)
    interval: float = 0.2
    done: int = 0
    _stack: list[str] = field(default_factory=list)
    _trail: list[str] = field(default_factory=list)
    _start: float = field(default_factory=time.monotonic)
    _last_emit: float = 0.0
    _rate: float = 0.0
    _rate_mark: tuple[float, int] = (0.0, 0)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def current(self) -> str:
        return " › ".join(self._stack)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """A named step; nests. Logged with its duration."""
        self._stack.append(name)
        self._trail.append(self.current)
        log.info("step: %s", self.current)
        started = time.monotonic()
        self.emit(force=True)
        try:
            yield
        finally:
            log.info("done: %s (%.1f s)", self.current, time.monotonic() - started)
            self._stack.pop()

    def add_total(self, nbytes: int) -> None:
        with self._lock:
            self.total += nbytes

    def advance(self, nbytes: int) -> None:
        with self._lock:
            self.done += nbytes
        self.emit()

    def message(self, text: str) -> None:
        log.info("%s", text)
        self.emit(force=True, message=text)

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("cancelled by the user")

    def snapshot(self, message: str = "") -> Progress:
        now = time.monotonic()
        mark_t, mark_done = self._rate_mark
        if now - mark_t >= 1.0 or not mark_t:
            if mark_t:
                inst = (self.done - mark_done) / (now - mark_t)
                # Smooth over a few seconds so the ETA does not jump with every chunk.
                self._rate = inst if not self._rate else 0.7 * self._rate + 0.3 * inst
            self._rate_mark = (now, self.done)
        remaining = max(0, self.total - self.done)
        eta = remaining / self._rate if self._rate > 0 and self.total else None
        return Progress(
            step=self.current,
            done=self.done,
            total=self.total,
            rate=self._rate,
            eta=eta,
            elapsed=now - self._start,
            steps=tuple(self._trail),
            message=message,
        )

    def emit(self, *, force: bool = False, message: str = "") -> None:
        now = time.monotonic()
        if not force and now - self._last_emit < self.interval:
            return
        self._last_emit = now
        with self._lock:
            snap = self.snapshot(message)
        self.callback(snap)


def human_bytes(n: float) -> str:
    """Bytes in decimal units (kB, MB, GB: 1 GB = 10^9 bytes), the way disk vendors print sizes
    on labels. The one unit system of every screen and command: sizes, amounts and speeds."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


human_size = human_bytes  # disk sizes: the same units as everything else


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    s = int(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"
