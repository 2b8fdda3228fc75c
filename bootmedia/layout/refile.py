"""Restore by files: a filesystem that cannot be made smaller in place (XFS has no shrinker) is
made anew on the target partition and the image's files are copied into it.

    with ExitStack() as stack:
        r = prepare_refile(stack, source, area, new_size, workdir, sector)  # before any write
        ...
        write_refile(r, target_fd, base, reporter)                          # the writes

Before the first write: the image's partition is served as a block file (bootmedia.image.view),
loop-attached and mounted read-only (a dirty log is replayed into the view's bounded overlay,
never into the image); the space its files take is summed, and a filesystem made exactly as the
target's will be (same options, the new size, the target's sector size) in a sparse file of the
work directory says how much room the target will have. When the files do not fit, the job
stops there, target untouched.

The writes: a loop device over the target's partition range (the table is written later, as
for every other partition), `mkfs.xfs` with the image's UUID, label, block and inode sizes and
feature flags (crc, finobt, reflink, rmapbt, bigtime, sparse inodes, ...), then `xfsdump | xfsrestore`
from the image's mount into it: XFS's own pair, which keeps ownership, modes, times, extended
attributes (and so ACLs and SELinux labels), hard links, holes and device nodes. Then the new
filesystem is unmounted and mounted again (the loop device uses direct I/O, so what is read
comes from the target), every file is compared with the image's (kind, mode, owner, size, mtime,
symlink target, device number, xattrs, chattr flags, hard links, bytes, holes kept), and
`xfs_repair -n` must find nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bootmedia import blockdev
from bootmedia.errors import BootmediaError, ImageError, ToolError
from bootmedia.image.view import DeviceArea, ImageArea, MountedView, mounted_view
from bootmedia.progress import Reporter, human_bytes
from bootmedia.repo.manifest import Area
from bootmedia.run import require_tools, run, run_cleanup, run_pipe, run_text
from bootmedia.scratch import new_scratch
from bootmedia.targetloops import record_target_loop

MiB = 1 << 20
TOOLS = {
    "xfs": ("losetup", "mount", "umount", "mkfs.xfs", "xfs_info", "xfsdump", "xfsrestore", "xfs_repair"),
    "ext4": ("losetup", "mount", "umount", "mkfs.ext4", "dumpe2fs", "tar", "e2fsck"),
}  # fmt: skip
EXT_BLOCK = 4096  # an ext4 restored by files gets 4 KiB blocks (its old ones were too small)
VIEW_CAPACITY = 128 * MiB  # a dirty log replayed at mount; nothing else writes to the view
# Room the files need beyond their own blocks and inodes: directories' and extents' btrees grow
# as they are rebuilt, and the copy must not end at the last block.
SLACK = 0.02
SLACK_MIN = 16 * MiB
# xfs_info's feature flags and where mkfs.xfs takes them (only flags xfs_info prints are passed,
# so an xfsprogs without a feature is never asked for it).
XFS_FLAGS = {
    "crc": "-m", "finobt": "-m", "rmapbt": "-m", "reflink": "-m", "bigtime": "-m",
    "inobtcount": "-m", "sparse": "-i", "nrext64": "-i", "exchange": "-i", "ftype": "-n",
}  # fmt: skip


@dataclass
class Refile:
    area: Area
    new_size: int
    view: MountedView
    mount: Path  # the image's filesystem, mounted read-only
    mkfs: list[str]  # mkfs.xfs and its options, without the device
    need: int  # bytes the files take, with slack
    room: int  # free bytes of a new filesystem of new_size
    started: float

    @property
    def used(self) -> int:
        return self.need


def xfs_geometry(mnt: Path) -> dict[str, str]:
    """xfs_info's key=value pairs, sections prefixed where keys repeat: isize, sectsz,
    crc, ..., data.bsize, log.blocks, naming.bsize."""
    out: dict[str, str] = {}
    section = ""
    for line in run_text(["xfs_info", str(mnt)]).splitlines():
        head = line.split("=", 1)[0].strip()
        if head and not line.startswith(" "):
            section = head
        for key, value in re.findall(r"([a-z0-9-]+)=([^\s,]+)", line):
            if key in ("bsize", "blocks", "sectsz", "sunit", "version"):
                out.setdefault(f"{section}.{key}", value)
            out.setdefault(key, value)
    return out


def mkfs_argv(geo: dict[str, str], area: Area, uuid: str, sector: int) -> list[str]:
    """mkfs.xfs making the image's filesystem again: same UUID, label, block, inode and sector
    sizes (the target's sector size when larger) and feature flags."""
    opts: dict[str, list[str]] = {"-m": [f"uuid={uuid}"], "-i": [], "-n": []}
    for key, flag in XFS_FLAGS.items():
        if key in geo and geo[key].isdigit():
            opts[flag].append(f"{key}={geo[key]}")
    if geo.get("isize", "").isdigit():
        opts["-i"].append(f"size={geo['isize']}")
    argv = ["mkfs.xfs", "-f", "-K"]  # -K: a fresh partition need not be discarded first
    bsize = max(int(geo.get("data.bsize", "4096")), sector)
    sectsz = max(int(geo.get("meta-data.sectsz", geo.get("sectsz", "512"))), sector)
    argv += ["-b", f"size={bsize}", "-s", f"size={sectsz}"]
    for flag, values in opts.items():
        if values:
            argv += [flag, ",".join(values)]
    if area.label:
        argv += ["-L", area.label[:12]]
    return argv


def ext4_mkfs_argv(device: str, area: Area, uuid: str, sector: int) -> list[str]:
    """mkfs.ext4 making the image's ext4 again with blocks of at least the target's sectors:
    same UUID, label, inode size, inode count and feature list (-O none,... so mke2fs's own
    defaults do not add features the image lacked)."""
    head = run_text(["dumpe2fs", "-h", device])

    def field(name: str) -> str:
        m = re.search(rf"^{name}:\s*(.*)$", head, re.M)
        return m.group(1).strip() if m else ""

    features = [f for f in field("Filesystem features").split() if f != "needs_recovery"]
    argv = ["mkfs.ext4", "-F", "-q", "-E", "nodiscard", "-b", str(max(EXT_BLOCK, sector))]
    argv += ["-U", uuid, "-O", ",".join(["none", *features])]
    if field("Inode size").isdigit():
        argv += ["-I", field("Inode size")]
    if field("Inode count").isdigit():
        argv += ["-N", field("Inode count")]
    label = field("Filesystem volume name")
    if label and label != "<none>":
        argv += ["-L", label]
    return argv


def files_need(root: Path, inode_size: int, block: int) -> tuple[int, int]:
    """Bytes the tree's files take in a filesystem of `block`-byte blocks (every distinct
    inode's blocks, rounded up to whole new blocks: 1 KiB blocks become 4 KiB ones, and its
    inode) and the number of inodes."""
    seen: set[int] = set()
    total = 0
    for dirpath, dirs, files in os.walk(root):
        for name in [".", *dirs, *files] if dirpath == str(root) else [*dirs, *files]:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_ino in seen:
                continue
            seen.add(st.st_ino)
            total += -(-st.st_blocks * 512 // block) * block + inode_size
    return total, len(seen)


def open_view(
    stack: contextlib.ExitStack,
    source: ImageArea | DeviceArea,
    workdir: Path,
    capacity: int,
    overlay_dir: Path | None = None,
) -> MountedView:
    """The area's view for a shrink, a FAT rebuild or a restore by files, mounted until the
    stack closes: its overlay in overlay_dir (RAM or the stick; default: the work directory),
    and the job's work directory removed with it if the job is killed."""
    return stack.enter_context(
        mounted_view(source, overlay_dir or workdir, capacity, scratch=workdir)
    )


def prepare_refile(
    stack: contextlib.ExitStack,
    source: ImageArea | DeviceArea,
    area: Area,
    new_size: int,
    workdir: Path,
    sector: int,
) -> Refile:
    """Mount the image's filesystem from a view and check that its files fit a new filesystem
    of new_size; the view stays mounted until the stack closes. Nothing is written anywhere
    but the work directory."""
    if area.fstype not in TOOLS:
        raise BootmediaError(f"{area.name}: cannot restore a {area.fstype} by files")
    require_tools(*TOOLS[area.fstype])
    started = time.monotonic()
    view = open_view(stack, source, workdir, VIEW_CAPACITY)
    device = stack.enter_context(view.loop())
    mnt = workdir / f"image-{area.name}"
    uuid = area.uuid or run_text(["blkid", "-p", "-s", "UUID", "-o", "value", device]).strip()
    if area.fstype == "xfs":
        # nouuid: the new filesystem gets the same UUID and is mounted beside this one.
        stack.enter_context(_mounted(device, mnt, ["ro", "nouuid"]))
        geo = xfs_geometry(mnt)
        argv = mkfs_argv(geo, area, uuid, sector)
        block = max(int(geo.get("data.bsize", "4096")), sector)
        used, inodes = files_need(mnt, int(geo.get("isize", "512")), block)
    else:  # ext4: inodes live in tables mkfs makes; their number is kept (-N)
        argv = ext4_mkfs_argv(device, area, uuid, sector)
        # ro,noload would skip a dirty journal; a plain ro mount replays it into the overlay
        stack.enter_context(_mounted(device, mnt, ["ro"]))
        used, inodes = files_need(mnt, 0, max(EXT_BLOCK, sector))
    need = max(int(used * (1 + SLACK)), used + SLACK_MIN)
    room = _room(argv, new_size, sector, workdir, area.fstype)
    if need > room:
        raise BootmediaError(
            f"{area.name}: its files do not fit a new {area.fstype} of {human_bytes(new_size)}: "
            f"they need {human_bytes(need)} ({inodes} files and directories, "
            f"{human_bytes(used)} with slack {human_bytes(need - used)}), a new {area.fstype} "
            f"of that size has {human_bytes(room)} free; give partition {area.number} more room "
            f"(--size {area.number}=...) or use a larger disk"
        )
    return Refile(area, new_size, view, mnt, argv, need, room, started)


def _room(argv: list[str], size: int, sector: int, workdir: Path, fstype: str) -> int:
    """Free bytes of the filesystem argv makes on `size` bytes, measured on a sparse file: mkfs
    writes only its metadata and log there, and the mounted result's statvfs is exact (per-AG
    reservations for reflink and finobt are several percent of a small XFS)."""
    trial = workdir / "trial.img"
    with open(trial, "wb") as f:
        f.truncate(size)
    try:
        if fstype == "xfs":
            dry = run_text([*argv, "-N", str(trial)])
            m = re.search(r"^log\s+=internal.*?bsize=(\d+)\s+blocks=(\d+)", dry, re.M)
            log_bytes = int(m.group(1)) * int(m.group(2)) if m else 0
        else:
            log_bytes = min(size // 64, 1 << 30)  # mke2fs's journal: at most 1 GiB
        st = os.statvfs(workdir)
        if log_bytes + 64 * MiB > st.f_bavail * st.f_frsize:
            raise BootmediaError(
                f"{workdir}: {human_bytes(log_bytes + 64 * MiB)} free needed to measure the new "
                f"filesystem (its log), {human_bytes(st.f_bavail * st.f_frsize)} there"
            )
        run([*argv, str(trial)])
        loop = run_text(["losetup", "--find", "--show", "--sector-size", str(sector), str(trial)])
        try:
            opts = ["nouuid"] if fstype == "xfs" else ["ro"]
            with _mounted(loop.strip(), workdir / "trial", opts) as mnt:
                st = os.statvfs(mnt)
                # f_bfree: ext4's blocks reserved for root are free to a copy made as root
                return st.f_bfree * st.f_frsize
        finally:
            run_cleanup(["losetup", "-d", loop.strip()])
    finally:
        trial.unlink(missing_ok=True)


def write_refile(r: Refile, fd: int, base: int, reporter: Reporter, verify: bool = True) -> int:
    """Make the new filesystem on the target's byte range base..base+new_size, copy the files
    in, read them back and compare, and check it. Returns the bytes the files took."""
    blockdev.flush(fd)
    target = os.readlink(f"/proc/self/fd/{fd}")  # the disk or image file the job holds open
    sector = blockdev.sector_sizes(fd)[0]
    what = r.area.name
    nouuid = ["nouuid"] if r.area.fstype == "xfs" else []  # XFS refuses a second same UUID
    loop = run_text([
        "losetup", "--find", "--show", "--offset", str(base), "--sizelimit", str(r.new_size),
        "--sector-size", str(sector), "--direct-io=on", target,
    ]).strip()  # fmt: skip
    record = record_target_loop(loop, target, base)  # a SIGKILL leaves it: the next job cleans
    try:
        run([*r.mkfs, loop])
        # A scratch: a failed umount leaves the mount point (and the new filesystem's files)
        # alone, where a TemporaryDirectory's cleanup deleted through the mount.
        with new_scratch("new") as dst:
            with _mounted(loop, dst, nouuid):
                reporter.check_cancel()
                _copy_files(r.area.fstype, r.mount, dst, what)
                restore_times(r.mount, dst)
                st = os.statvfs(dst)
                used = (st.f_blocks - st.f_bfree) * st.f_frsize
            reporter.advance(r.need)
            if verify:
                # A fresh mount: nothing of the copy is cached, and the loop device reads the
                # target with direct I/O.
                with _mounted(loop, dst, ["ro", *nouuid], tries=60):
                    diff = compare_trees(r.mount, dst, reporter.check_cancel)
                if diff:
                    raise ImageError(
                        f"verification failed: {what}'s files do not read back from the new "
                        f"{r.area.fstype} as they are in the image: {diff}"
                    )
                reporter.advance(r.need)
        if r.area.fstype == "xfs":
            run(["xfs_repair", "-n", loop])
        else:
            run(["e2fsck", "-f", "-n", loop])
    finally:
        if run_cleanup(["losetup", "-d", loop]):
            record.unlink(missing_ok=True)
    return used


def _copy_files(fstype: str, src: Path, dst: Path, what: str) -> None:
    if fstype == "xfs":
        # -J: no inventory in /var/lib/xfsdump; -F: never prompt; -l 0: everything
        run_pipe(
            ["xfsdump", "-J", "-F", "-l", "0", "-L", what, "-M", what, "-", str(src)],
            ["xfsrestore", "-J", "-F", "-", str(dst)],
        )
        return
    # GNU tar in POSIX format: owners by number, modes, hard links, holes (--sparse), device
    # nodes, every xattr (ACLs and SELinux labels among them).
    keep = ["--xattrs", "--xattrs-include=*", "--acls", "--numeric-owner"]
    run_pipe(
        ["tar", "-C", str(src), "--format=posix", "--sparse", *keep, "-cf", "-", "."],
        ["tar", "-C", str(dst), *keep, "--preserve-permissions", "-xf", "-"],
    )  # fmt: skip
    _copy_sockets(src, dst)


def _copy_sockets(src: Path, dst: Path) -> None:
    """tar leaves sockets out ("socket ignored", exit 0): each is made again by mknod, with
    its mode, owner and xattrs (its times come with everyone's, in restore_times)."""
    for dirpath, dirs, files in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        for name in [*dirs, *files]:
            x = os.path.join(dirpath, name)
            st = os.lstat(x)
            if not stat.S_ISSOCK(st.st_mode):
                continue
            y = os.path.normpath(os.path.join(dst, rel, name))
            os.mknod(y, stat.S_IFSOCK | stat.S_IMODE(st.st_mode))
            os.chown(y, st.st_uid, st.st_gid, follow_symlinks=False)
            os.chmod(y, stat.S_IMODE(st.st_mode))  # after chown, which clears setuid bits
            for key, value in _xattrs(x).items():
                os.setxattr(y, key, value, follow_symlinks=False)


# chattr's flags that a copy must keep (lsattr's i, a, d, A, S); the others (extents, inline
# data, ...) are the filesystem's own business and differ between XFS and ext4.
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_IMMUTABLE_FL, FS_APPEND_FL = 0x10, 0x20
KEPT_FLAGS = 0x08 | FS_IMMUTABLE_FL | FS_APPEND_FL | 0x40 | 0x80  # sync, i, a, nodump, noatime


def _flags_fd(path: str) -> int:
    """path opened for the flags ioctls (regular files and directories only), or -1."""
    try:
        st = os.lstat(path)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            return -1
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return -1


def get_flags(path: str) -> int:
    """The entry's chattr flags among KEPT_FLAGS (0 for what has none: symlinks, devices)."""
    fd = _flags_fd(path)
    if fd < 0:
        return 0
    try:
        got = fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("i", 0))
        return int(struct.unpack("i", got)[0]) & KEPT_FLAGS
    except OSError:
        return 0
    finally:
        os.close(fd)


def _set_flags(path: str, keep: int) -> None:
    """Set the KEPT_FLAGS of path to keep (the others as they are)."""
    fd = _flags_fd(path)
    if fd < 0:
        return
    try:
        got = fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("i", 0))
        now = int(struct.unpack("i", got)[0])
        want = (now & ~KEPT_FLAGS) | keep
        if want != now:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", want))
    finally:
        os.close(fd)


def restore_times(a: Path, b: Path) -> None:
    """Give every entry of b the access and modification times, to the nanosecond, of its
    namesake in a (xfsdump's format keeps whole seconds only), then a's chattr flags (tar
    keeps none; an immutable or append-only entry refuses even root new times, so those come
    first). Setting an entry's times or flags does not change its directory's."""
    for dirpath, dirs, files in os.walk(a):
        rel = os.path.relpath(dirpath, a)
        for name in [".", *dirs, *files] if rel == "." else [*dirs, *files]:
            src = os.path.join(dirpath, name)
            dst = os.path.join(b, rel, name)
            st = os.lstat(src)
            flags = get_flags(src)
            try:
                if get_flags(dst) & (FS_IMMUTABLE_FL | FS_APPEND_FL):
                    _set_flags(dst, 0)
                os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
                if flags:
                    _set_flags(dst, flags)
            except OSError as exc:
                where = os.path.normpath(os.path.join(rel, name))
                raise ImageError(
                    f"{where!r} was not copied whole into the new filesystem: its times or "
                    f"flags cannot be set there ({exc.strerror})"
                ) from None


def compare_trees(a: Path, b: Path, check_cancel: object = None) -> str:
    """The first difference between two mounted trees, or "": every name, its kind, mode,
    owner, size, mtime (to the nanosecond), symlink target, device number, xattrs, bytes, hard links, and holes
    (a file may not take more than 1 MiB more than it did)."""
    links: dict[int, int] = {}  # a's inode -> b's inode
    for dirpath, dirs, files in os.walk(a):
        dirs.sort()
        rel = os.path.relpath(dirpath, a)
        other = os.path.join(b, rel)
        try:
            theirs = set(os.listdir(other))
        except OSError as exc:
            return f"{rel}: cannot be listed on the target ({exc.strerror})"
        mine = set(dirs) | set(files)
        for name in sorted(mine ^ theirs):
            return f"{os.path.normpath(os.path.join(rel, name))} is {'missing' if name in mine else 'new'}"
        for name in [".", *sorted(mine)] if rel == "." else sorted(mine):
            if callable(check_cancel):
                check_cancel()
            x, y = os.path.join(dirpath, name), os.path.join(other, name)
            diff = _compare_one(x, y, links)
            if diff:
                return f"{os.path.normpath(os.path.join(rel, name))}: {diff}"
    return ""


def _compare_one(x: str, y: str, links: dict[int, int]) -> str:
    sx, sy = os.lstat(x), os.lstat(y)
    if stat.S_IFMT(sx.st_mode) != stat.S_IFMT(sy.st_mode):
        return "is of another kind"
    for field in ("st_mode", "st_uid", "st_gid", "st_nlink"):
        if getattr(sx, field) != getattr(sy, field):
            return f"{field[3:]} {getattr(sy, field)}, not {getattr(sx, field)}"
    hard = sx.st_nlink > 1 and not stat.S_ISDIR(sx.st_mode)
    if hard and links.setdefault(sx.st_ino, sy.st_ino) != sy.st_ino:
        return "is no longer a hard link of the same file"
    if stat.S_ISLNK(sx.st_mode):
        return "" if os.readlink(x) == os.readlink(y) else "points elsewhere"
    if sx.st_mtime_ns != sy.st_mtime_ns:
        return "has another modification time"
    device = stat.S_ISCHR(sx.st_mode) or stat.S_ISBLK(sx.st_mode)
    if device and sx.st_rdev != sy.st_rdev:
        return "is another device"
    if _xattrs(x) != _xattrs(y):
        return "has other extended attributes"
    if get_flags(x) != get_flags(y):
        return f"has chattr flags {get_flags(y):#x}, not {get_flags(x):#x}"
    if stat.S_ISREG(sx.st_mode):
        if sx.st_size != sy.st_size:
            return f"has {sy.st_size} bytes, not {sx.st_size}"
        if sy.st_blocks * 512 > sx.st_blocks * 512 + MiB:
            return f"takes {sy.st_blocks * 512} bytes, not {sx.st_blocks * 512} (holes filled)"
        if not _same_bytes(x, y):
            return "differs"
    return ""


def _xattrs(path: str) -> dict[str, bytes]:
    names = os.listxattr(path, follow_symlinks=False)
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in names}


def _same_bytes(x: str, y: str) -> bool:
    with open(x, "rb") as f, open(y, "rb") as g:
        while True:
            a, b = f.read(MiB), g.read(MiB)
            if a != b:
                return False
            if not a:
                return True


@contextlib.contextmanager
def _mounted(device: str, where: Path, options: list[str], tries: int = 1) -> Iterator[Path]:
    """tries: a mount right after an umount can find the old superblock still alive for a
    moment (held by a mount namespace another process made meanwhile: "already mounted",
    the kernel's "would change RO state"); the read-back mount waits for it, up to 30 s."""
    where.mkdir(parents=True, exist_ok=True)
    for attempt in range(tries):
        try:
            run(["mount", "-o", ",".join(options), device, str(where)])
            break
        except ToolError as exc:
            if attempt == tries - 1 or "already mounted" not in exc.stderr:
                raise
            time.sleep(30 / tries)
    try:
        yield where
    finally:
        run(["umount", str(where)])
