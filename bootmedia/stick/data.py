"""The stick's data partition: its label, where the live system mounts it, what lives there.

The one home of these names: the live system's fstab (live/overlay) and bootmedia-launch use the
same label and mount point.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from bootmedia.errors import BootmediaError
from bootmedia.run import run
from bootmedia.tools import blkid

RUN_DIR = Path("/run/bootmedia")  # the live system's runtime state (job claims, locks)
DATA_DIR = RUN_DIR / "data"  # where LABEL=BOOTMEDIA is mounted
DATA_LABEL = "BOOTMEDIA"


def data_dir(base: Path = DATA_DIR) -> Path | None:
    """The mounted data partition, or None (booted from CD or network without a stick)."""
    return base if base.is_dir() and os.path.ismount(base) else None


def ensure_data_mounted(base: Path = DATA_DIR) -> Path | None:
    """Mount LABEL=BOOTMEDIA at base if it is there and not mounted yet (a slow stick)."""
    if data_dir(base):
        return base
    device = blkid.find_label(DATA_LABEL)
    if device is None:
        return None
    base.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(BootmediaError):
        run(["mount", "-o", "noatime", device, str(base)])
    return data_dir(base)


def reports_dir(kind: str = "reports") -> Path | None:
    """Where wipe reports (kind="reports") and job results go on the stick, made on demand."""
    base = data_dir()
    if base is None:
        return None
    path = base / kind
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path
