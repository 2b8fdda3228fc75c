"""Who a disk is (model, serial, size, sector sizes), for manifests and job results."""

from __future__ import annotations

import os

from bootmedia import blockdev
from bootmedia.disks import find_disk
from bootmedia.disks.files import file_disk, is_image_file
from bootmedia.repo.manifest import SourceDisk


def source_identity(device: str) -> SourceDisk:
    """The disk's identity from discovery (udev or sysfs): the model as a technician reads it
    (a loop device is named by its backing file), the serial, and the sizes the kernel uses."""
    disk = file_disk(device) if is_image_file(device) else find_disk(device)
    fd = blockdev.open_device(device)
    try:
        size = blockdev.size_of(fd)
        logical, physical = blockdev.sector_sizes(fd)
    finally:
        os.close(fd)
    return SourceDisk(device, disk.title, disk.serial, size, logical, physical)
