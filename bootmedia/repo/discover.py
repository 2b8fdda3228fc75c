"""Find repositories the way the TUI offers them, and delete an image the way both do it.

find_repositories(extra=[Path("/mnt/x")])   # the stick's data partition first, then every
                                            # mounted filesystem, then the paths given
delete_image(repo, "golden")                # unlist, then collect what no other image uses
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

from bootmedia.errors import BootmediaError
from bootmedia.net.url import REMOTE_FILE
from bootmedia.progress import human_bytes
from bootmedia.repo.gc import GcResult, collect
from bootmedia.repo.store import REPO_FILE, Repository
from bootmedia.stick.data import DATA_DIR

log = logging.getLogger("bootmedia.repo")

# Where a repository may sit on a mounted filesystem: its root or one of these folders.
REPO_SUBDIRS = ("", "bootmedia", "images", "bootmedia/images")
_NOT_DATA = ("/proc", "/sys", "/dev", "/run/user")


def is_repository(path: Path) -> bool:
    """Cheap: the repository's identity file is there (opening takes locks and an index), or
    the placeholder of a connected http(s) share naming its URL (bootmedia.net)."""
    try:
        return (path / REPO_FILE).is_file() or (path / REMOTE_FILE).is_file()
    except OSError:  # a damaged filesystem among the mounts (EBADMSG, EIO): not a repository
        return False


def mountpoints() -> list[str]:
    """Mounted filesystems that may hold data, the stick's data partition first."""
    points = [p.mountpoint for p in psutil.disk_partitions(all=False)]
    points.sort(key=lambda m: (m != str(DATA_DIR), "bootmedia" not in m.lower(), m))
    return [m for m in points if not m.startswith(_NOT_DATA)]


def find_repositories(extra: Iterable[Path] = (), *, mounted: bool = True) -> list[Path]:
    """Every repository we can see: on mounted filesystems (unless mounted=False), then the
    paths given, each once."""
    candidates = [Path(m) / sub for m in mountpoints() for sub in REPO_SUBDIRS] if mounted else []
    found: list[Path] = []
    for path in [*candidates, *extra]:
        if path not in found and is_repository(path):
            found.append(path)
    return found


@dataclass(frozen=True)
class Deleted:
    name: str
    gc: GcResult | None  # None when collection had to wait (a reader holds the repository)
    note: str = ""

    def lines(self) -> list[str]:
        if self.gc is None:
            return [f"deleted {self.name}", f"note: {self.note}"]
        gc = self.gc
        return [
            f"deleted {self.name}",
            f"reclaimed {human_bytes(gc.bytes_freed)} ({gc.packs_deleted} packs removed, "
            f"{gc.packs_rewritten} rewritten)",
        ]


def delete_image(repo_path: str | Path, image: str) -> Deleted:
    """Unlist IMAGE (a name or a number), then collect chunks no other image uses. When a
    restore or verify is reading, the image is still unlisted and the space comes back at the
    next delete or `repair --gc`."""
    with Repository.open(repo_path, write=True) as repo:
        name = repo.image(image).name
        repo.delete_image(name)
        try:
            gc = collect(repo)
        except BootmediaError as exc:
            log.info("%s: collection postponed: %s", repo_path, exc)
            return Deleted(name, None, str(exc))
    return Deleted(name, gc)


def collect_garbage(repo_path: str | Path) -> GcResult:
    """Collect chunks no image uses (what `repair --gc` and delete do)."""
    with Repository.open(repo_path, write=True) as repo:
        return collect(repo)


__all__ = [
    "REPO_SUBDIRS",
    "Deleted",
    "collect_garbage",
    "delete_image",
    "find_repositories",
    "is_repository",
    "mountpoints",
]
