"""The demo lab: virtual disks and a sample repository, so anyone can try bootmedia safely.

`bootmedia tui --demo` builds it (or reuses the last one) under ~/.cache/bootmedia/demo-lab:

    disks/reference.img   a sample "golden" PC: GPT with ESP, ext4, NTFS and swap, real files
    disks/newpc-1.img     blank disks: restore, wipe or partition them
    disks/newpc-2.img
    disks/stick.img       the bootmedia stick: ext4 labelled BOOTMEDIA holding the repository
    stick/images/         (mounted) the repository, with image "golden" captured from reference

As root the files are attached as loop devices, so every job runs exactly as on real disks, and
the stick is mounted, so the safety rules refuse it like the real stick. Without root the files
themselves are the disks (bootmedia.disks.files): no stick, the repository is the plain folder
repository/, and every job works on byte ranges of the files. In demo mode the UI shows only
these disks, never the machine's.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import shutil
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from bootmedia import lab
from bootmedia.disks.discover import LAB_SERIALS
from bootmedia.disks.files import file_disk
from bootmedia.disks.model import Disk
from bootmedia.errors import BootmediaError
from bootmedia.run import run, run_cleanup

log = logging.getLogger("bootmedia.demo")

DISK_SIZE = 160 << 20  # the sample layout needs 114 MiB plus its ext4 root
BLANK_SIZE = 1 << 30  # room for every partition layout, and for restore --grow (sparse files)
STICK_SIZE = 256 << 20
FILL = 0.2  # of each sample filesystem: ~25 MiB of real files
BLANKS = ("newpc-1", "newpc-2")
SAMPLE_IMAGE = "golden"


def default_root() -> Path:
    env = os.environ.get("BOOTMEDIA_DEMO_DIR")
    return Path(env) if env else Path.home() / ".cache" / "bootmedia" / "demo-lab"


LOOP_GET_STATUS64 = 0x4C05
# struct loop_info64 starts with lo_device (the backing file's st_dev) and lo_inode (its inode).
LOOP_INFO64 = struct.Struct("=QQQQQIIII64s64s32sQQ")


def loop_backing(dev: str) -> tuple[str, int, int] | None:
    """(backing file, its st_dev, its inode) of a loop device as the kernel has it, or None
    when the device is not attached. The path is /sys/block/loopN/loop/backing_file; st_dev
    and the inode come from LOOP_GET_STATUS64 (what `losetup -J` shows as back-maj:min and
    back-ino), so a file renamed or recreated at the same path does not look the same."""
    name = Path(dev).name
    try:
        backing = Path(f"/sys/block/{name}/loop/backing_file").read_text().rstrip("\n")
        fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        buf = fcntl.ioctl(fd, LOOP_GET_STATUS64, bytes(LOOP_INFO64.size))
    except OSError:
        return None
    finally:
        os.close(fd)
    lo_device, lo_inode = LOOP_INFO64.unpack(buf)[:2]
    return backing, lo_device, lo_inode


@dataclass(frozen=True)
class Attached:
    """A lab file attached as a loop device, and the identity of the file when attached. The
    lab keeps the file open (fd) while it is attached, so its inode cannot be freed and given
    to another file: (st_dev, st_ino) stays this file's, whatever happens to its path."""

    dev: str
    st_dev: int
    st_ino: int
    fd: int = -1

    def serves_it(self) -> bool:
        """The device still serves this very file, even if the file was renamed or its
        directory moved (pytest does that to a test's tmp_path; a technician may mv the lab)."""
        kernel = loop_backing(self.dev)
        return kernel is not None and kernel[1:] == (self.st_dev, self.st_ino)


@dataclass
class DemoLab:
    root: Path
    loops: dict[str, str] = field(default_factory=dict)  # backing file name -> /dev/loopN
    attached: dict[str, Attached] = field(default_factory=dict)  # name -> device + file identity
    serials: dict[str, str] = field(default_factory=dict)  # name -> the virtual disk's serial
    mounted: bool = False
    use_loops: bool = False
    lock_fd: int = -1  # flock on ROOT/lab.lock: one bootmedia per lab
    file_cache: dict[str, tuple[tuple[int, int], Disk]] = field(default_factory=dict)

    @property
    def disk_dir(self) -> Path:
        return self.root / "disks"

    @property
    def stick_dir(self) -> Path:
        return self.root / "stick"

    @property
    def repo_path(self) -> Path:
        return self.stick_dir / "images" if self.use_loops else self.root / "repository"

    def disks(self) -> list[Disk]:
        """The lab's disks as the engine sees them (loop devices, or the image files). A loop
        device that no longer serves the lab's own file (detached, and its number given to
        another file by someone's `losetup -f`) is not listed: it is unplugged."""
        from bootmedia.disks import find_disk

        found = []
        for image in sorted(self.disk_dir.glob("*.img")):
            if not self.use_loops:
                if image.name != "stick.img":  # a stick only stands in for one with loops
                    found.append(self._file_disk(image))
                continue
            dev = self.owned(image.name)
            if dev is None:
                continue
            try:
                disk = find_disk(dev)
            except BootmediaError as exc:
                log.warning("%s: %s", dev, exc)
                continue
            if self.owned(image.name) == dev:  # still ours after the (slow) look at it
                found.append(disk)
        return found

    def owned(self, name: str) -> str | None:
        """The loop device serving the lab's file `name`, checked now: the kernel's backing
        file and its inode must be the lab's file as it is on disk and as it was attached."""
        entry = self.attached.get(name)
        if entry is None:
            return None
        path = self.disk_dir / name
        try:
            st = path.stat()
        except OSError:
            return None
        kernel = loop_backing(entry.dev)
        if kernel is None:
            return None
        backing, lo_device, lo_inode = kernel
        same = (
            backing == str(path.resolve())
            and lo_inode == st.st_ino == entry.st_ino
            and lo_device == st.st_dev == entry.st_dev
        )
        return entry.dev if same else None

    def serial_for(self, disk: Disk) -> str:
        """The lab's disks carry serials like real ones, so the UI confirms a write the way it
        does on real hardware (the last 4 characters of the serial), never by a loop number.
        The engine reads the same serials for the lab's loop devices (disks.discover's
        lab_serial), so the command line the TUI shows confirms by serial too; image files
        (the lab without root) have them only here."""
        if disk.serial or not disk.backing_file:
            return disk.serial
        ours = any(e.dev == disk.path for e in self.attached.values())
        if self.use_loops and disk.transport == "loop" and not ours:
            return ""
        return self.serials.get(Path(disk.backing_file).name, "")

    def write_refusal(self, path: str) -> str | None:
        """Checked again right before a job writes: is `path` still one of the lab's disks?"""
        if not self.use_loops:
            return None
        for name, entry in self.attached.items():
            if entry.dev == path:
                if self.owned(name) == path:
                    return None
                return f"{path}: no longer serves the lab's {name} (unplugged)"
        return f"{path}: is not one of the lab's disks"

    def _file_disk(self, image: Path) -> Disk:
        """file_disk, remembered until the file changes: the Disks screen polls twice a second,
        and reading a file's table and filesystems runs sfdisk and blkid."""
        st = image.stat()
        key = (st.st_size, st.st_mtime_ns)
        cached = self.file_cache.get(image.name)
        if cached is None or cached[0] != key:
            cached = self.file_cache[image.name] = (key, file_disk(image))
        return cached[1]

    def refusal(self, disk: Disk) -> str | None:
        """The lab's stick stands in for the boot stick. The engine's rules refuse it already
        (mounted, holds the repository); this says so even between unmount and remount."""
        if self.use_loops and disk.backing_file.endswith("/stick.img"):
            return f"{disk.ident}: is the bootmedia stick (holds the image repository)"
        if self.use_loops and disk.transport == "loop":
            return self.write_refusal(disk.path)
        return None

    def attach(self, image: Path) -> str:
        fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
        try:
            dev = lab.attach(image)
        except BaseException:
            os.close(fd)
            raise
        st = os.fstat(fd)
        self.loops[image.name] = dev
        self.attached[image.name] = Attached(dev, st.st_dev, st.st_ino, fd)
        return dev

    def add_disk(self) -> Disk:
        """Plug in another blank virtual disk (the Disks screen's hotplug demonstration)."""
        n = 1 + sum(1 for _ in self.disk_dir.glob("usb-*.img"))
        image = lab.make_file(self.disk_dir / f"usb-{n}.img", BLANK_SIZE)
        self.serials[image.name] = _new_serial(self.root, image.name)
        if not self.use_loops:
            return file_disk(image)
        dev = self.attach(image)
        from bootmedia.disks import find_disk

        return find_disk(dev)

    def sample_iso(self) -> Path | None:
        """A small hybrid ISO to try Make stick with, built once with grub-mkrescue (the tool
        build_iso.sh uses, so the layout is the real one); None where grub-mkrescue is missing."""
        iso = self.root / "iso" / "sample-live.iso"
        if iso.exists():
            return iso
        if not shutil.which("grub-mkrescue") or not Path("/usr/lib/grub/x86_64-efi").is_dir():
            return None
        tree = self.root / "iso" / "tree"
        (tree / "boot" / "grub").mkdir(parents=True, exist_ok=True)
        (tree / "boot" / "grub" / "grub.cfg").write_text("echo bootmedia demo stick\n")
        (tree / "live").mkdir(exist_ok=True)
        (tree / "live" / "README.txt").write_text("The demo lab's stand-in for the live system.\n")
        tmp = iso.with_suffix(".tmp")
        run(["grub-mkrescue", "-o", str(tmp), str(tree), "--", "-volid", "BOOTMEDIA_LIVE"])
        tmp.rename(iso)
        return iso

    def monitor(self) -> LabMonitor:
        return LabMonitor(self)

    def close(self) -> None:
        self._unmount_and_detach()
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1

    def _unmount_and_detach(self) -> None:
        stick = self.attached.get("stick.img")
        if self.mounted:
            if os.path.ismount(self.stick_dir) or stick is None or not stick.serves_it():
                where = str(self.stick_dir)
            else:  # the lab was moved: the stick is mounted where the kernel says, not here
                where = stick.dev
            # A plain umount first: it writes the filesystem back before it returns. A lazy
            # one returns at once and writes later, so a copy of stick.img made right after
            # (the TUI tests copy a template lab) held a repository with a live write lease.
            if not run_cleanup(["umount", where]):
                run_cleanup(["umount", "-l", where])
            self.mounted = False
        for name, entry in self.attached.items():
            # Only a device still serving the lab's own file (by inode, which the open fd
            # keeps ours): a number freed and taken by another file is someone else's disk.
            if entry.serves_it():
                lab.detach(entry.dev)
            else:
                log.warning("%s no longer serves the lab's %s: left alone", entry.dev, name)
            if entry.fd >= 0:
                os.close(entry.fd)
        self.loops.clear()
        self.attached.clear()


class LabMonitor:
    """Hotplug events for the lab: a disk file appeared or vanished."""

    def __init__(self, lab_: DemoLab, interval: float = 0.5) -> None:
        self.lab = lab_
        self.interval = interval
        self.known = self._snapshot()

    def _snapshot(self) -> dict[str, Disk]:
        return {d.path: d for d in self.lab.disks()}

    def poll(self, timeout: float = 0.0) -> list[object]:
        from bootmedia.disks import DiskEvent

        deadline = time.monotonic() + timeout
        while True:
            now = self._snapshot()
            events = [
                DiskEvent("remove", d.name, None) for p, d in self.known.items() if p not in now
            ]
            events += [DiskEvent("add", d.name, d) for p, d in now.items() if p not in self.known]
            self.known = now
            if events or time.monotonic() >= deadline:
                return list(events)
            time.sleep(min(self.interval, max(0.0, deadline - time.monotonic())))

    def close(self) -> None:
        pass


def create_lab(
    root: Path | None = None,
    *,
    fresh: bool = False,
    say: object = print,
    files: bool | None = None,
) -> DemoLab:
    """Build the lab (or reuse the one at root), attach it, and make sure the sample image is in
    the repository. Takes seconds: the disks are small and sparse. Loop devices where they can
    be attached (root), else plain image files; files=True/False forces one or the other."""
    use_loops = lab.can_use_loop()[0] if files is None else not files
    root = root or default_root()
    root.mkdir(parents=True, exist_ok=True)
    the_lab = DemoLab(root, use_loops=use_loops, lock_fd=_lock(root))
    if not use_loops:
        try:
            _build_file_lab(the_lab, fresh, say)
        except BaseException:
            the_lab.close()
            raise
        return the_lab
    disk_dir = the_lab.disk_dir
    try:
        _detach_stale(disk_dir)  # safe: we hold the lab's lock, so no other bootmedia uses them
        if fresh:
            shutil.rmtree(disk_dir, ignore_errors=True)
            shutil.rmtree(the_lab.stick_dir, ignore_errors=True)
        disk_dir.mkdir(parents=True, exist_ok=True)
        for extra in disk_dir.glob("usb-*.img"):
            extra.unlink()  # disks "plugged in" during the last run are unplugged
        reference = disk_dir / "reference.img"
        if not reference.exists():
            _say(say, "demo lab: building a sample PC disk (ESP, ext4, NTFS, swap)...")
            lab.make_file(disk_dir / "reference.tmp", DISK_SIZE)
            with lab.loop_disk(disk_dir / "reference.tmp") as dev:
                lab.populate_sample_disk(dev, fill=FILL)
            (disk_dir / "reference.tmp").rename(reference)
        for name in BLANKS:
            if not (disk_dir / f"{name}.img").exists():
                lab.make_file(disk_dir / f"{name}.img", BLANK_SIZE)
        stick = disk_dir / "stick.img"
        if not stick.exists():
            lab.make_file(disk_dir / "stick.tmp", STICK_SIZE)
            run(["mkfs.ext4", "-q", "-F", "-L", "BOOTMEDIA", str(disk_dir / "stick.tmp")])
            (disk_dir / "stick.tmp").rename(stick)
        the_lab.serials = _serials(root, [i.name for i in disk_dir.glob("*.img")])
        for image in sorted(disk_dir.glob("*.img")):
            the_lab.attach(image)
        the_lab.stick_dir.mkdir(exist_ok=True)
        run(["mount", the_lab.loops[stick.name], str(the_lab.stick_dir)])
        the_lab.mounted = True
        _ensure_sample_image(the_lab, say)
    except BaseException:
        the_lab.close()
        raise
    return the_lab


def _build_file_lab(the_lab: DemoLab, fresh: bool, say: object) -> None:
    """The lab without root: the same disks as plain files, built without attaching or mounting
    anything, and the repository in a folder of the lab."""
    disk_dir = the_lab.disk_dir
    if fresh:
        shutil.rmtree(disk_dir, ignore_errors=True)
        shutil.rmtree(the_lab.repo_path, ignore_errors=True)
    disk_dir.mkdir(parents=True, exist_ok=True)
    for extra in disk_dir.glob("usb-*.img"):
        extra.unlink()
    reference = disk_dir / "reference.img"
    if not reference.exists():
        _say(say, "demo lab (image files): building a sample PC disk (ESP, ext4, NTFS, swap)...")
        lab.make_file(disk_dir / "reference.tmp", DISK_SIZE)
        lab.populate_sample_file(disk_dir / "reference.tmp", fill=FILL)
        (disk_dir / "reference.tmp").rename(reference)
    for name in BLANKS:
        if not (disk_dir / f"{name}.img").exists():
            lab.make_file(disk_dir / f"{name}.img", BLANK_SIZE)
    the_lab.serials = _serials(the_lab.root, [i.name for i in disk_dir.glob("*.img")])
    _ensure_sample_image(the_lab, say, str(reference))


def _ensure_sample_image(the_lab: DemoLab, say: object, source: str | None = None) -> None:
    from bootmedia.capture import capture_image, plan_capture
    from bootmedia.repo.store import Repository

    repo = Repository.init(the_lab.repo_path)
    try:
        names = [m.name for m in repo.images()]
    finally:
        repo.close()
    if SAMPLE_IMAGE in names:
        return
    _say(say, "demo lab: capturing the sample image 'golden' from the reference disk...")
    plan = plan_capture(
        source or the_lab.loops["reference.img"],
        the_lab.repo_path,
        SAMPLE_IMAGE,
        description="Sample PC: EFI system partition, Linux ext4, Windows NTFS, swap",
    )
    capture_image(plan)


SERIALS = LAB_SERIALS  # in the lab's root: file name -> serial, kept across runs


def _serials(root: Path, names: list[str]) -> dict[str, str]:
    """The lab disks' serials, made once per disk file and kept in ROOT/serials.json."""
    path = root / SERIALS
    try:
        known = json.loads(path.read_text())
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    serials = {n: str(known[n]) for n in names if isinstance(known.get(n), str)}
    for n in names:
        serials.setdefault(n, f"LB{secrets.token_hex(3).upper()}")
    if serials != known:
        path.write_text(json.dumps(serials, indent=1, sort_keys=True) + "\n")
    return serials


def _new_serial(root: Path, name: str) -> str:
    path = root / SERIALS
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    known = known if isinstance(known, dict) else {}
    known[name] = f"LB{secrets.token_hex(3).upper()}"
    path.write_text(json.dumps(known, indent=1, sort_keys=True) + "\n")
    return str(known[name])


def _lock(root: Path) -> int:
    fd = os.open(root / "lab.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BootmediaError(f"the demo lab at {root} is in use by another bootmedia") from None
    return fd


def _detach_stale(disk_dir: Path) -> None:
    """Loop devices left attached to lab files by a run that was killed."""
    if not lab.can_use_loop()[0] or not disk_dir.exists():
        return
    stick_dir = disk_dir.parent / "stick"
    if os.path.ismount(stick_dir):
        run_cleanup(["umount", "-l", str(stick_dir)])
    for image in disk_dir.glob("*.img"):
        out = run(["losetup", "-j", str(image)], check=False).stdout.decode()
        for line in out.splitlines():
            lab.detach(line.split(":", 1)[0])


def _say(say: object, text: str) -> None:
    log.info("%s", text)
    if callable(say):
        say(text)
