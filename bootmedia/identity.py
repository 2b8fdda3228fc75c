"""Who a disk is (model, serial, size, sector sizes), for manifests and job results."""

from __future__ import annotations

import json
import os

from bootmedia import blockdev
from bootmedia.repo.manifest import SourceDisk
from bootmedia.run import run


def source_identity(device: str) -> SourceDisk:
    fd = blockdev.open_device(device)
    try:
        size = blockdev.size_of(fd)
        logical, physical = blockdev.sector_sizes(fd)
    finally:
        os.close(fd)
    model = serial = ""
    proc = run(["lsblk", "-J", "-d", "-o", "MODEL,SERIAL", device], check=False)
    if proc.returncode == 0:
        dev = json.loads(proc.stdout)["blockdevices"][0]
        model = (dev.get("model") or "").strip()
        serial = (dev.get("serial") or "").strip()
    return SourceDisk(device, model, serial, size, logical, physical)
