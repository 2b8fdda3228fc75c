"""The app's one door into the engine. Screens call these from thread workers, never widgets.

Everything the engine offers is imported lazily, so the app starts (and says what is missing)
even on a tree where one engine module is broken.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.session import Session
from bootmedia.errors import BootmediaError
from bootmedia.progress import human_size
from bootmedia.stick.data import DATA_DIR
from bootmedia.text import printable

if TYPE_CHECKING:
    from bootmedia.disks.model import Disk

log = logging.getLogger("bootmedia.tui")


@dataclass(frozen=True)
class DiskRow:
    """A disk as the pickers show it: the engine's Disk plus why it may not be written."""

    disk: Disk
    refusal: str | None = None
    contents: str = ""  # bootmedia.disks.contents: "empty" only when the samples read as zeros
    lab_serial: str = ""  # the demo lab's serial for a virtual disk (the engine sees none)

    @property
    def serial(self) -> str:
        return self.disk.serial or self.lab_serial

    @property
    def confirm_disk(self) -> Disk:
        """The disk as the confirmation rule sees it: with the lab's serial, if any."""
        import dataclasses

        d = self.disk
        return dataclasses.replace(d, serial=self.serial) if self.serial != d.serial else d

    @property
    def key(self) -> str:
        return self.disk.path

    @property
    def short_refusal(self) -> str:
        """The reason without the "sdb (SERIAL): " the engine puts in front of it."""
        reason = self.refusal or ""
        prefix = f"{self.disk.ident}: "
        return reason[len(prefix) :] if reason.startswith(prefix) else reason

    @property
    def title(self) -> str:
        """Short enough for a table column: a lab disk is named by its backing file."""
        d = self.disk
        if d.transport == "loop" and d.backing_file:
            return Path(d.backing_file).name  # the Bus column says "loop"
        if d.transport == "file":
            return "image file"
        return d.title

    def label(self) -> str:
        """Disk.label() with the row's serial (the lab's, for a virtual disk) and short title."""
        d = self.disk
        if not self.lab_serial:
            return d.label()
        return " · ".join([self.title, self.serial, human_size(d.size), self.bus, d.name])

    @property
    def bus(self) -> str:
        return "image file" if self.disk.transport == "file" else (self.disk.transport or "?")

    @property
    def confirm_code(self) -> str:
        return confirm_code(self.confirm_disk)

    @property
    def confirm_prompt(self) -> str:
        if self.serial.strip():
            serial = printable(self.serial, 64).replace("[", "\\[")  # no markup either
            return f"Type the [b]last 4 characters of the serial[/b] {serial} and press Enter:"
        if self.disk.transport == "file":
            return f"An image file. Type its name [b]{self.disk.name}[/b] and press Enter:"
        return f"This disk has no serial. Type its name [b]{self.disk.name}[/b] and press Enter:"

    def partitions_text(self) -> str:
        if self.contents:
            return self.contents
        from bootmedia.disks.contents import contents_summary

        return contents_summary(self.disk)


@dataclass(frozen=True)
class ImageRow:
    repo: Path
    manifest: Any  # bootmedia.repo.manifest.Manifest

    @property
    def name(self) -> str:
        return str(self.manifest.name)

    @property
    def key(self) -> str:
        return f"{self.repo}::{self.name}"


def confirm_code(disk: Disk) -> str:
    """What the technician types to confirm a write: the serial's last 4 characters, or the
    kernel name when the disk has no serial (loop devices, some USB bridges)."""
    serial = "".join(disk.serial.split())
    return serial[-4:] if serial else disk.name


def confirm_matches(disk: Disk | DiskRow, typed: str) -> bool:
    from bootmedia.disks import confirm_matches as engine_rule

    return bool(engine_rule(disk.confirm_disk if isinstance(disk, DiskRow) else disk, typed))


# ---------------------------------------------------------------- disks


def list_disks(
    session: Session, *, for_write: bool = True, check: Callable[[Disk], str | None] | None = None
) -> list[DiskRow]:
    """The disks to offer. In demo mode only the lab's, never the machine's. `check` adds a
    refusal of the step's own (too small for the image, mounted read-write for a capture), so
    the picker greys the disk out with the reason instead of refusing it three steps later."""
    if session.lab is not None:
        disks = session.lab.disks()
    else:
        from bootmedia.disks import find_disks

        disks = list(find_disks())
    from bootmedia.disks.contents import contents_summary

    repos = find_repositories(session) if for_write else []
    lab = session.lab
    return [
        DiskRow(
            d,
            (refusal_for(session, d, repos) if for_write else None) or (check and check(d)),
            contents_summary(d),
            lab.serial_for(d) if lab is not None else "",
        )
        for d in disks
    ]


def restore_refusal(image: ImageRow) -> Callable[[Disk], str | None]:
    """Why a disk cannot take this image at all: smaller than the layout planner can fit the
    image into (shrinking what can shrink), or than the image needs when it has no table."""
    from bootmedia.layout.plan import FIT, PartInfo, plan_layout
    from bootmedia.progress import human_size as size

    m = image.manifest

    def check(disk: Disk) -> str | None:
        if m.table is None:
            if disk.size < m.required_size:
                return f"too small: {size(disk.size)}, the image needs {size(m.required_size)}"
            return None
        if disk.size >= m.required_size:
            return None
        infos = {a.number: PartInfo.from_area(a) for a in m.areas if a.number}
        try:
            plan_layout(m.table, infos, disk.size, disk.logical_sector_size, FIT)
        except BootmediaError as exc:
            return f"too small for {m.name} ({size(disk.size)}): {exc}"
        return None

    return check


def capture_refusal(disk: Disk) -> str | None:
    """A source mounted read-write changes while it is read: the image would be inconsistent."""
    from bootmedia.mounts import mounts_of

    nodes = [disk.path, *(p.path for p in disk.partitions)]
    try:
        rw = [m for m in mounts_of(nodes) if not m.read_only]
    except OSError:
        return None
    if rw:
        return f"mounted read-write at {rw[0].mountpoint}: unmount it or remount it read-only"
    return None


def refusal_for(session: Session, disk: Disk, repos: list[Path]) -> str | None:
    """Why this disk must not be written, or None. The engine's safety rules decide (the disk
    holding a repository we show is refused too); the lab adds one rule of its own."""
    if session.lab is not None:
        reason = session.lab.refusal(disk)
        if reason:
            return reason
    if disk.transport == "file":
        from bootmedia.disks.files import file_refusal

        return file_refusal(disk.path)  # a plain image file: refused only while a loop uses it
    from bootmedia.disks.safety import snapshot_refusal

    for repo in [*repos, None]:
        reason = snapshot_refusal(disk, repo_path=repo)
        if reason:
            return reason
    return None


def disk_monitor(session: Session) -> Any:
    """A hotplug event source (bootmedia.disks.DiskMonitor); the lab's own in demo mode."""
    if session.lab is not None:
        return session.lab.monitor()
    from bootmedia.disks import DiskMonitor

    return DiskMonitor()


# ---------------------------------------------------------------- repositories and images


def find_repositories(session: Session) -> list[Path]:
    """Every repository we can see: the lab's (demo), the stick's data partition and any other
    mounted filesystem holding one, and the paths the technician typed in."""
    from bootmedia.repo.discover import find_repositories as find

    if session.lab is not None:  # demo: the lab's repository, never the machine's
        return find([session.lab.repo_path, *session.extra_repos], mounted=False)
    return find(session.extra_repos)


def is_repository(path: Path) -> bool:
    from bootmedia.repo.discover import is_repository as check

    return check(path)


def open_repository(path: Path, write: bool = False) -> Any:
    from bootmedia.repo.store import Repository

    if write and not is_repository(path):
        return Repository.init(path)  # a new repository at a path the technician typed
    return Repository.open(path, write=write)


def list_images(repos: list[Path]) -> list[ImageRow]:
    rows: list[ImageRow] = []
    for path in repos:
        try:
            with open_repository(path) as repo:
                rows += [ImageRow(path, m) for m in repo.images()]
        except BootmediaError as exc:
            log.warning("%s: %s", path, exc)
    return rows


def image_names(repo: Path) -> list[str]:
    """The image names in one repository (for the capture form's duplicate check)."""
    if not is_repository(repo):
        return []
    return [row.name for row in list_images([repo])]


def delete_command(row: ImageRow) -> str:
    """What `Images -> Delete` does, as the CLI command."""
    import shlex

    return shlex.join(["bootmedia", "delete", str(row.repo), row.name])


def delete_image(row: ImageRow) -> str:
    """Unlist the image, then collect chunks no other image uses. Returns what was done."""
    from bootmedia.progress import human_bytes
    from bootmedia.repo.discover import delete_image as delete

    done = delete(row.repo, row.name)
    if done.gc is None:  # a restore is reading: space comes back next time
        return f"Deleted {done.name} ({done.note})"
    return f"Deleted {done.name}; reclaimed {human_bytes(done.gc.bytes_freed)}"


# ---------------------------------------------------------------- the stick


def find_isos(session: Session) -> list[Path]:
    """Live ISOs to offer for Make stick: the lab's sample (demo), build_iso.sh's output, and
    *.iso on the stick's data partition, in the working directory and the home directory."""
    found: list[Path] = []
    if session.lab is not None:
        sample = session.lab.sample_iso()
        if sample is not None:
            found.append(sample)
    here = Path(__file__).resolve().parents[1]
    for folder in (here / "out", DATA_DIR, Path.cwd(), Path.home()):
        try:
            found += sorted(p for p in folder.glob("*.iso") if p.is_file())
        except OSError:
            continue
    unique: list[Path] = []
    for path in found:
        if path.resolve() not in [u.resolve() for u in unique]:
            unique.append(path)
    return unique
