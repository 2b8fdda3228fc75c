"""Where apply may write: never onto the repository it reads, whatever path leads there.

A target (a disk, a partition or an image file) is refused when it holds the repository or
lies inside it. Paths are compared by identity, not by name: symlinks are resolved, a bind
mount of the repository is the same directory (same st_dev and st_ino), and a loop device is
followed to its backing file (/sys/block/loopN/loop/backing_file), down every level.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from bootmedia.disks import system
from bootmedia.errors import Refused

SYS_BLOCK = Path("/sys/class/block")


@dataclass
class _Chain:
    """Everything the repository's bytes live on: block devices and loop backing files."""

    devices: set[str] = field(default_factory=set)  # kernel names: loop5p1, loop5, sdb1, sdb
    files: set[tuple[int, int]] = field(default_factory=set)  # (st_dev, st_ino) of backing files


def _device_of(path: str | Path) -> str | None:
    """The block device (kernel name) a file or directory lives on."""
    st = os.stat(path)
    name = system.name_of_devnum(f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    if name is not None:
        return name
    # An anonymous device (btrfs, overlay): the mount the path lives under names its source.
    real = os.path.realpath(path)
    best = None
    for mount in system.read_mounts():
        mp = mount.mountpoint
        if (real == mp or real.startswith(mp.rstrip("/") + "/")) and (
            best is None or len(mp) > len(best.mountpoint)
        ):
            best = mount
    return system.mount_device_name(best) if best else None


def _follow(name: str, chain: _Chain) -> None:
    if name in chain.devices:
        return
    chain.devices.add(name)
    sysdir = SYS_BLOCK / name
    if (sysdir / "partition").exists():
        _follow(sysdir.resolve().parent.name, chain)
    for slave in system.slaves_of(name):
        _follow(slave, chain)
    backing = system.backing_file_of(name)
    if backing:
        _add_file(backing, chain)


def _add_file(path: str | Path, chain: _Chain) -> None:
    try:
        st = os.stat(path)
    except OSError:
        return  # a deleted backing file: nothing can reach it by path any more
    chain.files.add((st.st_dev, st.st_ino))
    device = _device_of(path)
    if device:
        _follow(device, chain)


def repository_chain(repo: Path) -> _Chain:
    chain = _Chain()
    _add_file(repo, chain)
    return chain


def _inside(path: str | Path, directory: os.stat_result) -> bool:
    """Whether path lies inside directory (by identity: bind mounts and symlinks included)."""
    here = Path(os.path.realpath(path))
    for parent in (here, *here.parents):
        try:
            st = os.stat(parent)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (directory.st_dev, directory.st_ino):
            return True
    return False


def _same_file_inside(fst: os.stat_result, repo: Path) -> bool:
    """Whether a file with fst's identity is in the repository: a hard link to a pack, or a
    pack bind-mounted onto another path. Only a file on the repository's filesystem can be."""
    todo = [repo]
    while todo:
        try:
            entries = list(os.scandir(todo.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                est = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if (est.st_dev, est.st_ino) == (fst.st_dev, fst.st_ino):
                return True
            if stat.S_ISDIR(est.st_mode):
                todo.append(Path(entry.path))
    return False


def _target_files(target: str) -> list[str]:
    """The files whose bytes a write to target changes: the file itself, or the backing file
    of a loop device (or of the loop device a partition belongs to), down every level."""
    st = os.stat(target)
    if stat.S_ISREG(st.st_mode):
        return [os.path.realpath(target)]
    if not stat.S_ISBLK(st.st_mode):
        return []
    files: list[str] = []
    name = system.name_of_devnum(f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}") or ""
    seen: set[str] = set()
    while name and name not in seen:
        seen.add(name)
        sysdir = SYS_BLOCK / name
        if (sysdir / "partition").exists():
            name = sysdir.resolve().parent.name
            continue
        backing = system.backing_file_of(name)
        if not backing:
            break
        files.append(backing)
        try:
            name = _device_of(backing) or ""
        except OSError:
            break
    return files


def repository_refusal(target: str, repo: str | Path) -> str | None:
    """Why writing target would overwrite the repository it reads (or what holds it), or None."""
    repo = Path(repo)
    try:
        repo_st = os.stat(repo)
    except OSError:
        return None  # no repository there: nothing to protect (the plan fails to open it)
    chain = repository_chain(repo)
    st = os.stat(target)
    if stat.S_ISBLK(st.st_mode):
        name = system.name_of_devnum(f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
        if name and name in chain.devices:
            return f"{target}: holds the image repository {repo}"
    for path in _target_files(target):
        try:
            fst = os.stat(path)
        except OSError:
            continue
        if _inside(path, repo_st) or (
            fst.st_dev == repo_st.st_dev and _same_file_inside(fst, repo)
        ):
            via = "" if path == os.path.realpath(target) else f" (through {path})"
            return f"{target}: lies inside the image repository {repo}{via}"
        if (fst.st_dev, fst.st_ino) in chain.files:
            via = "" if path == os.path.realpath(target) else f" (through {path})"
            return f"{target}: holds the image repository {repo}{via}"
    return None


def check_not_repository(target: str, repo: str | Path) -> None:
    reason = repository_refusal(target, repo)
    if reason:
        raise Refused(reason)
