"""Mount a restored filesystem on a private temporary mountpoint, read-only unless editing.

Paths inside it are opened relative to the mounted root without following symlinks, so a
hostile image whose /etc/hostname points at /etc/shadow cannot make us touch the live system.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator

from bootmedia.errors import BootmediaError
from bootmedia.run import run

LINUX_FS = ("ext4", "ext3", "ext2", "btrfs", "xfs")


def _options(fstype: str, write: bool, subvol: str) -> list[str]:
    opts = ["rw" if write else "ro", "nosuid", "nodev", "noexec"]
    if fstype == "xfs":
        opts.append("nouuid")  # the image's source may be mounted here with the same UUID
    if fstype == "btrfs" and subvol:
        opts.append(f"subvol={subvol}")
    if fstype == "btrfs" and not subvol:
        opts.append("subvolid=5")
    return opts


@contextlib.contextmanager
def mounted(device: str, fstype: str, *, write: bool = False, subvol: str = "") -> Iterator[str]:
    """Mount `device` at a fresh 0700 directory; unmount (and say so if that fails) after."""
    mnt = tempfile.mkdtemp(prefix="bootmedia-custom-")
    kind = "ntfs-3g" if fstype == "ntfs" else fstype
    argv = ["mount", "-t", kind, "-o", ",".join(_options(fstype, write, subvol)), device, mnt]
    try:
        run(argv)
    except BaseException:
        os.rmdir(mnt)
        raise
    try:
        yield mnt
    finally:
        os.sync()
        run(["umount", mnt])
        os.rmdir(mnt)


def open_dir(root: str, rel: str) -> int:
    """A symlink-refusing walk from root to directory rel; returns a dir fd."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in [p for p in rel.split("/") if p]:
            if part == "..":
                raise BootmediaError(f"refusing '..' in {rel}")
            try:
                nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                raise FileNotFoundError(
                    exc.errno, f"/{rel} is missing or is a symlink in the restored system"
                ) from None
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_at(dfd: int, name: str) -> bytes | None:
    """A regular file's bytes, None when absent; refuses symlinks and special files."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if os.path.islink(f"/proc/self/fd/{dfd}/{name}"):
            raise BootmediaError(
                f"{name} is a symlink in the restored system: not following it"
            ) from None
        raise BootmediaError(f"cannot read {name}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BootmediaError(f"{name} is not a regular file in the restored system")
        chunks = []
        while True:
            b = os.read(fd, 1 << 16)
            if not b:
                break
            chunks.append(b)
            if sum(map(len, chunks)) > 1 << 20:
                raise BootmediaError(f"{name} is larger than 1 MiB: refusing to edit it")
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_at(dfd: int, name: str, data: bytes, mode: int = 0o644) -> None:
    """Replace a file atomically (temp file, fsync, rename), keeping its mode and owner."""
    st = None
    with contextlib.suppress(FileNotFoundError):
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    if st is not None and os.path.islink(f"/proc/self/fd/{dfd}/{name}"):
        raise BootmediaError(f"{name} is a symlink in the restored system: not following it")
    tmp = f".{name}.bootmedia-new"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dfd)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode, dir_fd=dfd)
    try:
        os.write(fd, data)
        if st is not None:
            os.fchmod(fd, st.st_mode & 0o7777)
            os.fchown(fd, st.st_uid, st.st_gid)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    os.fsync(dfd)
