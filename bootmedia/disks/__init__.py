"""The machine's disks: discovery, hotplug events and the one answer to "may we write here?".

from bootmedia.disks import find_disks, find_disk, check_writable, confirm_matches
"""

from bootmedia.disks.discover import (
    SystemFacts,
    build_disks,
    find_disk,
    find_disks,
    load_machine,
)
from bootmedia.disks.hotplug import DiskEvent, DiskMonitor
from bootmedia.disks.model import INCOMPLETE_MARKER, Disk, Partition
from bootmedia.disks.safety import (
    check_confirm,
    check_writable,
    confirm_hint,
    confirm_matches,
    live_system_disks,
    snapshot_refusal,
    write_refusal,
)

__all__ = [
    "INCOMPLETE_MARKER",
    "Disk",
    "DiskEvent",
    "DiskMonitor",
    "Partition",
    "SystemFacts",
    "build_disks",
    "check_confirm",
    "check_writable",
    "confirm_hint",
    "confirm_matches",
    "find_disk",
    "find_disks",
    "live_system_disks",
    "load_machine",
    "snapshot_refusal",
    "write_refusal",
]
