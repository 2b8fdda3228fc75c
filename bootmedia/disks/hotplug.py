"""Tell the UI the moment a disk is plugged in, pulled or repartitioned.

That is how a technician finds out which disk is which: plug it in, watch it light up. Where
udevd runs, pyudev's netlink monitor wakes us as soon as udev has finished with the device (so
by-id links and serials are ready). Where it does not, a cheap sysfs fingerprint is polled.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootmedia.disks import discover, system
from bootmedia.disks.model import Disk
from bootmedia.errors import BootmediaError

log = logging.getLogger("bootmedia.disks")

UDEV_CONTROL = Path("/run/udev/control")  # exists while systemd-udevd is running


@dataclass(frozen=True)
class DiskEvent:
    action: str  # "add", "remove" or "change"
    name: str  # kernel name of the whole disk
    disk: Disk | None  # the disk as it is now; None after "remove"


def _fingerprint(name: str) -> tuple[Any, ...]:
    """What changes when a disk arrives, gets a new medium or a new partition table."""
    sysdir = system.SYS_BLOCK / name

    def read(rel: str) -> str:
        try:
            return (sysdir / rel).read_text().strip()
        except OSError:
            return ""

    parts = sorted(
        (p.name, (p / "size").read_text().strip())
        for p in sysdir.iterdir()
        if p.name.startswith(name) and (p / "partition").exists()
    )
    return (read("size"), read("ro"), read("loop/backing_file"), tuple(parts))


def _candidates(include_loop: bool) -> dict[str, tuple[Any, ...]]:
    found = {}
    for entry in system.SYS_BLOCK.iterdir():
        name = entry.name
        if (entry / "partition").exists() or not discover._wanted(name, include_loop):
            continue
        try:
            fp = _fingerprint(name)
        except OSError:
            continue  # vanished while we looked
        if fp[0] not in ("", "0"):
            found[name] = fp
    return found


class DiskMonitor:
    """Iterate over DiskEvents. Use poll() from a loop you own, or events() in a worker thread.

    `use_udev` forces the source (None: udev when udevd runs, else sysfs polling). `netlink`
    "kernel" listens to the kernel's uevents instead of udev's (tests, hosts without udevd).
    """

    def __init__(
        self,
        include_loop: bool = False,
        interval: float = 1.0,
        use_udev: bool | None = None,
        netlink: str = "udev",
    ) -> None:
        self.include_loop = include_loop
        self.interval = interval
        self.use_udev = UDEV_CONTROL.exists() if use_udev is None else use_udev
        self._known = _candidates(include_loop)
        self._monitor: Any = None
        if self.use_udev:
            import pyudev

            self._monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source=netlink)
            self._monitor.filter_by("block")
            self._monitor.start()
        log.info("disk monitor: %s", "udev" if self.use_udev else "sysfs polling")

    def _event(self, action: str, name: str) -> DiskEvent | None:
        if action == "remove":
            return DiskEvent("remove", name, None)
        try:
            disk = discover.find_disk(f"/dev/{name}")
        except BootmediaError:
            return None  # gone again, or no medium
        return DiskEvent(action, name, disk)

    def _diff(self) -> list[DiskEvent]:
        now = _candidates(self.include_loop)
        changes: list[tuple[str, str]] = [("remove", n) for n in self._known if n not in now]
        for name, fp in now.items():
            if name not in self._known:
                changes.append(("add", name))
            elif self._known[name] != fp:
                changes.append(("change", name))
        self._known = now
        events = [self._event(action, name) for action, name in changes]
        return [e for e in events if e is not None]

    def poll(self, timeout: float = 0.0) -> list[DiskEvent]:
        """Events since the last call, waiting up to timeout seconds for the first one."""
        deadline = time.monotonic() + timeout
        while True:
            if self._monitor is not None:
                # Any block uevent may touch a disk we show; the sysfs diff says which.
                wait = max(0.0, deadline - time.monotonic())
                ready, _, _ = select.select([self._monitor], [], [], wait)
                while ready and self._monitor.poll(timeout=0) is not None:
                    pass
            events = self._diff()
            if events or time.monotonic() >= deadline:
                return events
            if self._monitor is None:
                time.sleep(min(self.interval, max(0.0, deadline - time.monotonic())))

    def events(self, stop: threading.Event | None = None) -> Iterator[DiskEvent]:
        """Yield events until stop is set (checked at least every `interval` seconds)."""
        stop = stop or threading.Event()
        while not stop.is_set():
            yield from self.poll(timeout=self.interval)

    def close(self) -> None:
        self._monitor = None

    def __enter__(self) -> DiskMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
