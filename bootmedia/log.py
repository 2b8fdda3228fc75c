"""Logging to a file as well as the screen. The file is what a technician sends in a bug report."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from bootmedia.text import printable

# The pid tells apart the processes sharing the file (the TUI, a CLI job in the shell, an
# unattended run): the TUI's Log screen shows its own by default.
_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


class PrintableFormatter(logging.Formatter):
    """Each record's message without control characters (a hostile name cannot rewrite the
    terminal that shows the log); tracebacks keep their lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)


def default_log_dir() -> Path:
    """BOOTMEDIA_LOG_DIR, else /var/log/bootmedia when writable (the live system), else ~/.cache."""
    env = os.environ.get("BOOTMEDIA_LOG_DIR")
    if env:
        return Path(env)
    system = Path("/var/log/bootmedia")
    try:
        system.mkdir(parents=True, exist_ok=True)
        if os.access(system, os.W_OK):
            return system
    except OSError:
        pass
    return Path.home() / ".cache" / "bootmedia"


def setup_logging(verbose: bool = False, log_dir: Path | None = None) -> Path:
    """Log everything to bootmedia.log; warnings (or everything with -v) to stderr."""
    directory = log_dir or default_log_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "bootmedia.log"
    root = logging.getLogger("bootmedia")
    root.setLevel(logging.DEBUG)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    file_handler = logging.FileHandler(path)
    file_handler.setFormatter(PrintableFormatter(_FORMAT))
    file_handler.setLevel(logging.DEBUG)
    root.addHandler(file_handler)
    if verbose:
        stream = logging.StreamHandler()
        stream.setFormatter(PrintableFormatter("%(levelname)s %(message)s"))
        stream.setLevel(logging.INFO)
        root.addHandler(stream)
    return path


def log_file() -> str | None:
    """The file this process logs to (setup_logging's), None when it has none."""
    for handler in logging.getLogger("bootmedia").handlers:
        if isinstance(handler, logging.FileHandler):
            return handler.baseFilename
    return None


def log_to_file(path: str) -> bool:
    """A helper process of a job (the image view's server): its records go to the job's log
    file as well (the pid in each line tells them apart). A file that cannot be opened (its
    directory gone) is no reason to stop the helper: False, and its stderr is all it has."""
    try:
        handler = logging.FileHandler(path)
    except OSError:
        return False
    handler.setFormatter(PrintableFormatter(_FORMAT))
    root = logging.getLogger("bootmedia")
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    return True
