"""Messages that travel up: from thread workers to their screen, from widgets to their screen."""

from __future__ import annotations

from typing import Any

from textual.message import Message

from bootmedia.progress import Progress


class JobProgress(Message):
    """A running job reported progress (posted from the job's thread)."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress


class Loaded(Message):
    """A worker finished loading something a screen shows (disks, images, a plan...)."""

    def __init__(self, what: str, value: Any) -> None:
        super().__init__()
        self.what = what
        self.value = value


class LoadFailed(Message):
    """A worker's load failed with a one-line reason a technician can act on."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__()
        self.what = what
        self.reason = reason
