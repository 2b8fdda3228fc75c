"""Which of a disk's nodes are mounted, by device number (not by name, which can be a symlink
or a by-uuid path). The parsing lives in bootmedia.disks.system; this is the engine's view."""

from __future__ import annotations

import os

from bootmedia.disks.system import Mount, read_mounts


def mounts_of(devices: list[str]) -> list[Mount]:
    """Mounts whose source is one of these block devices."""
    wanted = {
        f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        for st in (os.stat(d) for d in devices if os.path.exists(d))
    }
    return [m for m in read_mounts() if m.devnum in wanted]
