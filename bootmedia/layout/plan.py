"""The target's partition table, computed from the image's table, the target's size and a policy.

Pure: no device is opened and no tool is run, so every rule here is unit-tested on tables that
sfdisk wrote on real loop devices (tests/test_layout_plan.py).

Rules (issue 10):
- `keep`: the image's table as it is (translated to the target's sector size);
- `fit`: system partitions keep their size (ESP, MSR, bios_grub, Windows recovery, swap up to
  SWAP_LIMIT); the partitions holding a filesystem we can resize take the rest, in proportion
  to their old sizes, never below what their filesystem needs; partitions after the last of
  them (the Windows recovery partition) end up at the end of the disk;
- `--size N=SIZE` fixes one partition's size; `--size N=rest` gives one partition all the room
  left, and every other partition keeps its size.
Gaps between partitions are kept as they were, and starts stay 1 MiB-aligned where they were.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from bootmedia.errors import UsageError
from bootmedia.progress import human_bytes
from bootmedia.repo.manifest import RAW, SKIP, SWAP, USED, Area, Table, TablePartition
from bootmedia.table import translate

MiB = 1 << 20
KEEP, FIT = "keep", "fit"
POLICIES = (KEEP, FIT)
REST = -1  # --size N=rest
SWAP_LIMIT = 8 << 30  # swap up to this keeps its size; a larger one is cut to it on a smaller disk

ESP = {"c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "ef"}
MSR = {"e3c9e316-0b5c-4db8-817d-f92df00215ae"}
BIOS_GRUB = {"21686148-6449-6e6f-744e-656564454649"}
WIN_RECOVERY = {"de94bba4-06d1-4d40-a16a-bfd50179d6ac", "27"}
SWAP_TYPES = {"0657fd6d-a4ab-43c4-84e5-0933c84b4f4f", "82"}
EXTENDED = {"5", "f", "85"}

# Filesystems whose own tool can make them smaller / larger (see bootmedia/fs.py).
# XFS has no shrinker: onto a smaller partition it is restored by files (bootmedia.layout.refile).
SHRINKS = {"ext2", "ext3", "ext4", "ntfs", "vfat", "btrfs", "xfs"}
GROWS = SHRINKS
# What a filesystem needs beyond its tool's minimum: room for the journal to breathe and for
# the shrinker's own rounding (resize2fs -P and ntfsresize --info are tight lower bounds).
SLACK = 0.03
SLACK_MIN = 16 * MiB
BTRFS_OVERHEAD = 320 * MiB  # btrfs keeps whole metadata/system chunks; capture has no minimum
# A new XFS sets aside per-AG reservations (finobt, reflink: several percent of a small one) and
# a log of its own beside what the files use; the restore measures it exactly before writing.
XFS_SHARE = 16
XFS_OVERHEAD = 64 * MiB
XFS_MIN = 300 * MiB  # mkfs.xfs (xfsprogs 5.19 on) makes none smaller: "must be larger than 300MB"


@dataclass(frozen=True)
class PartInfo:
    """What the planner needs to know about one partition of the image."""

    number: int
    fstype: str = ""
    mode: str = RAW  # the area's capture mode (USED, RAW, SWAP, SKIP)
    used: int | None = None
    min_size: int | None = None

    @classmethod
    def from_area(cls, area: Area) -> PartInfo:
        return cls(area.number, area.fstype, area.mode, area.used, area.min_size)


@dataclass(frozen=True)
class Change:
    """One partition, before and after. Offsets and sizes in bytes."""

    number: int
    role: str  # esp, msr, bios_grub, recovery, swap, extended, data, fixed
    fstype: str
    old_start: int
    old_size: int
    new_start: int
    new_size: int
    action: str  # same, move, grow, shrink, resize (swap), container
    minimum: int = 0

    @property
    def moved(self) -> bool:
        return self.new_start != self.old_start

    def describe(self) -> str:
        what = {
            "same": "unchanged",
            "move": "moves",
            "grow": f"{self.fstype} grows",
            "shrink": f"{self.fstype} shrinks",
            "resize": "swap recreated at the new size",
            "container": "extended container",
        }[self.action]
        if self.moved and self.action not in ("same", "move"):
            what += ", moves"
        return what


@dataclass(frozen=True)
class LayoutPlan:
    policy: str
    source: Table
    table: Table  # what will be written, in the target's sector size
    target_size: int
    changes: tuple[Change, ...]
    sizes: tuple[tuple[int, int], ...] = ()  # the --size arguments (REST for "rest")

    @property
    def identical(self) -> bool:
        return all(c.action == "same" and not c.moved for c in self.changes)

    def change(self, number: int) -> Change:
        return next(c for c in self.changes if c.number == number)

    def summary(self) -> list[str]:
        lines = [
            f"Layout: {self.policy}, {len(self.changes)} partitions onto "
            f"{human_bytes(self.target_size)}"
        ]
        lines.append("   #  role       fs       old start     old size   new start     new size")
        for c in self.changes:
            lines.append(
                f"  {c.number:>2}  {c.role:<9}  {c.fstype or '-':<7}"
                f"{human_bytes(c.old_start):>11}{human_bytes(c.old_size):>13}"
                f"{human_bytes(c.new_start):>12}{human_bytes(c.new_size):>13}  {c.describe()}"
            )
        return lines

    def command(self) -> list[str]:
        """The options that ask for this layout (apply and clone put them in their argv)."""
        args = ["--layout", self.policy]
        for n, size in self.sizes:
            args += ["--size", f"{n}={'rest' if size == REST else size}"]
        return args

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "target_size": self.target_size,
            "table": asdict(self.table),
            "changes": [asdict(c) for c in self.changes],
        }


def role(p: TablePartition, label: str) -> str:
    t = p.type.lower()
    if label == "dos" and t in EXTENDED:
        return "extended"
    for name, types in (
        ("esp", ESP),
        ("msr", MSR),
        ("bios_grub", BIOS_GRUB),
        ("recovery", WIN_RECOVERY),
        ("swap", SWAP_TYPES),
    ):
        if t in types:
            return name
    return "data"


def minimum(info: PartInfo, size: int) -> int:
    """The smallest partition this partition's contents fit in (its size when it cannot shrink)."""
    if info.mode != USED or info.fstype not in SHRINKS:
        return size
    if info.min_size:
        need = info.min_size
    elif info.used is not None:
        need = info.used + (BTRFS_OVERHEAD if info.fstype == "btrfs" else 0)
        if info.fstype == "xfs":
            need += info.used // XFS_SHARE + XFS_OVERHEAD
    else:
        return size
    need = max(int(need * (1 + SLACK)), need + SLACK_MIN)
    if info.fstype == "xfs":  # restored by files into a new XFS, which mkfs.xfs must make
        need = max(need, XFS_MIN)
    return min(size, _up(need, MiB))


def parse_size(text: str) -> tuple[int, int]:
    """`N=SIZE` or `N=rest` (SIZE: bytes, or with K/M/G/T, powers of 1024)."""
    num, sep, value = text.partition("=")
    if not sep or not num.strip().isdigit():
        raise UsageError(f"--size {text}: expected N=SIZE or N=rest, e.g. 3=40G")
    value = value.strip().lower()
    if value == "rest":
        return int(num), REST
    units = {"": 1, "b": 1, "k": 1 << 10, "m": MiB, "g": 1 << 30, "t": 1 << 40}
    digits = value.rstrip("kmgtbi")
    unit = value[len(digits) :].replace("ib", "").replace("b", "") or ""
    try:
        size = int(float(digits) * units[unit])
    except (ValueError, KeyError, OverflowError):  # OverflowError: inf, 1e400
        raise UsageError(f"--size {text}: cannot read size {value!r}") from None
    if size <= 0:
        raise UsageError(f"--size {text}: size must be positive")
    return int(num), size


def _up(x: int, a: int) -> int:
    return -(-x // a) * a


def _down(x: int, a: int) -> int:
    return x // a * a


def usable(label: str, size: int, sector: int) -> tuple[int, int]:
    """First and end (exclusive) usable byte of a disk for partitions."""
    if label == "gpt":
        entries = _up(128 * 128, sector)
        return sector * 2 + entries, size - sector - entries
    return sector, size


def plan_layout(
    source: Table,
    parts: dict[int, PartInfo],
    target_size: int,
    target_sector: int,
    policy: str = FIT,
    sizes: dict[int, int] | None = None,
) -> LayoutPlan:
    """Plan the target's table. Raises UsageError, with the numbers, when it cannot fit."""
    if policy not in POLICIES:
        raise UsageError(f"--layout {policy}: expected one of {', '.join(POLICIES)}")
    sizes = dict(sizes or {})
    ss = source.sector_size
    plist = sorted(source.partitions, key=lambda p: (p.start, p.number))
    by_num = {p.number: p for p in plist}
    for n in sizes:
        if n not in by_num:
            raise UsageError(f"--size {n}=...: the image has no partition {n}")
        if role(by_num[n], source.label) == "extended":
            raise UsageError(f"--size {n}=...: partition {n} is the extended container")
    rests = [n for n, s in sizes.items() if s == REST]
    if len(rests) > 1:
        raise UsageError("--size ...=rest: only one partition can take the rest")

    info = {p.number: parts.get(p.number, PartInfo(p.number)) for p in plist}
    roles = {p.number: role(p, source.label) for p in plist}
    old = {p.number: (p.start * ss, p.size * ss) for p in plist}
    smaller = target_size < _source_end(source)

    # Each partition's size: fixed (bytes) or elastic (weight).
    fixed: dict[int, int] = {}
    weight: dict[int, int] = {}
    for p in plist:
        n, r, size = p.number, roles[p.number], old[p.number][1]
        if r == "extended":
            continue
        inf = info[n]
        if n in sizes and sizes[n] != REST:
            fixed[n] = _up(sizes[n], MiB) if sizes[n] % target_sector else sizes[n]
        elif n in sizes:
            weight[n] = 1
        elif rests or policy == KEEP:
            fixed[n] = size
        elif r == "swap" or inf.mode == SWAP:
            fixed[n] = min(size, SWAP_LIMIT) if smaller else size
        elif r == "data" and _elastic(inf, smaller):
            weight[n] = size
        else:
            fixed[n] = size
        if n in fixed:
            fixed[n] = _up(fixed[n], target_sector)
    mins = {n: minimum(info[n], old[n][1]) for n in old if roles[n] != "extended"}
    for n, size in fixed.items():
        if size < mins[n]:
            why = (
                f"its {info[n].fstype} needs at least {human_bytes(mins[n])}"
                if mins[n] < old[n][1]
                else f"its {info[n].fstype or 'contents'} cannot be shrunk"
            )
            if n in sizes:
                raise UsageError(f"--size {n}={human_bytes(size)} is too small: {why}")
            raise UsageError(f"partition {n} cannot be made smaller: {why}")

    first, end = usable(source.label, target_size, target_sector)
    if policy == KEEP and not sizes:
        return _keep(source, info, roles, old, target_size, target_sector, end)
    base = _place(plist, roles, old, {**fixed, **dict.fromkeys(weight, 0)}, first, target_sector)
    base_end = max(s + z for s, z in base.values())
    room = _down(end - base_end, MiB) if weight else 0
    stuck = _unshrinkable(plist, roles, info) if smaller else ""
    if weight:
        alloc = _share(room, weight, mins)
        if alloc is None:
            need = base_end + sum(mins[n] for n in weight) - end
            raise UsageError(_too_small(target_size, need, weight, mins, info, fixed) + stuck)
    else:
        alloc = {}
        if base_end > end:
            raise UsageError(
                f"target too small: this layout needs {human_bytes(base_end + (target_size - end))}"
                f" ({base_end + target_size - end} bytes), the target has "
                f"{human_bytes(target_size)} ({target_size} bytes); short by "
                f"{human_bytes(base_end - end)} ({base_end - end} bytes)"
                + (stuck or " (use --layout fit or --size N=SIZE)")
            )
    placed = _place(plist, roles, old, {**fixed, **alloc}, first, target_sector)

    changes = []
    tparts = []
    for p in plist:
        n = p.number
        new_start, new_size = placed[n]
        o_start, o_size = old[n]
        r = roles[n]
        if r == "extended":
            action = "container"
        elif info[n].mode == SWAP and new_size != o_size:
            action = "resize"
        elif new_size > o_size and info[n].mode == USED and info[n].fstype in GROWS:
            action = "grow"
        elif new_size < o_size and info[n].mode == USED:
            action = "shrink"
        elif new_start != o_start:
            action = "move"
        else:
            action = "same"
        changes.append(
            Change(
                n, r, info[n].fstype, o_start, o_size, new_start, new_size, action, mins.get(n, 0)
            )
        )
        tparts.append(replace(p, start=new_start // target_sector, size=new_size // target_sector))
    table = replace(
        source,
        sector_size=target_sector,
        first_lba=0 if target_sector != ss or source.label != "gpt" else source.first_lba,
        last_lba=0,
        partitions=tuple(sorted(tparts, key=lambda p: p.number)),
    )
    return LayoutPlan(
        policy,
        source,
        table,
        target_size,
        tuple(sorted(changes, key=lambda c: c.number)),
        tuple(sorted(sizes.items())),
    )


def _keep(
    source: Table,
    info: dict[int, PartInfo],
    roles: dict[int, str],
    old: dict[int, tuple[int, int]],
    target_size: int,
    sector: int,
    end: int,
) -> LayoutPlan:
    """The image's own table, every partition where it was."""
    last = max((s + z for s, z in old.values()), default=0)
    if last > end:
        raise UsageError(
            f"target too small: the image's table needs {human_bytes(last + target_size - end)}"
            f" ({last + target_size - end} bytes), the target has {human_bytes(target_size)} "
            f"({target_size} bytes); short by {human_bytes(last - end)} ({last - end} bytes); "
            "--layout fit shrinks what can be shrunk"
        )
    table = translate(source, sector)
    changes = tuple(
        Change(
            n,
            roles[n],
            info[n].fstype,
            *old[n],
            *old[n],
            "container" if roles[n] == "extended" else "same",
            old[n][1],
        )
        for n in sorted(old)
    )
    return LayoutPlan(KEEP, source, table, target_size, changes)


WHY_NOT = {
    "exfat": "no tool here shrinks exFAT",
    "f2fs": "no tool here shrinks F2FS",
    "hfsplus": "no tool here shrinks HFS+",
}


def _unshrinkable(
    plist: list[TablePartition], roles: dict[int, str], info: dict[int, PartInfo]
) -> str:
    """Why the data partitions that keep their size do: one clause each."""
    why = []
    for p in plist:
        inf = info[p.number]
        if roles[p.number] != "data" or (inf.fstype in SHRINKS and inf.mode == USED):
            continue
        if inf.fstype in WHY_NOT:
            why.append(f"partition {p.number} keeps its size: {WHY_NOT[inf.fstype]}")
        elif inf.mode != SKIP:
            what = inf.fstype or "no filesystem bootmedia can read"
            why.append(f"partition {p.number} ({what}) was captured whole and keeps its size")
    return "; " + "; ".join(why) if why else ""


def _elastic(inf: PartInfo, smaller: bool) -> bool:
    if inf.mode != USED:
        return False
    return inf.fstype in (SHRINKS if smaller else GROWS)


def _source_end(t: Table) -> int:
    end = max((p.start + p.size for p in t.partitions), default=0) * t.sector_size
    return end + (usable(t.label, 0, t.sector_size)[0] if t.label == "gpt" else 0)


def _place(
    plist: list[TablePartition],
    roles: dict[int, str],
    old: dict[int, tuple[int, int]],
    size: dict[int, int],
    first: int,
    sector: int,
) -> dict[int, tuple[int, int]]:
    """Lay partitions out in their old order, each after the one before it with the same gap
    it had; a start that was 1 MiB-aligned stays so. An extended container encloses its
    logical partitions with the gap it had after the last of them."""
    placed: dict[int, tuple[int, int]] = {}
    prev_old = prev_new = 0
    ext: int | None = None
    for p in plist:
        n = p.number
        o_start, o_size = old[n]
        if ext is not None and o_start >= sum(old[ext]):
            prev_old, prev_new = _close(placed, old, ext, prev_old, prev_new)
            ext = None
        # Gaps up to 1 MiB (alignment, an EBR) are kept; larger ones were unused space.
        gap = min(o_start - prev_old, MiB) if prev_old else o_start
        start = max(prev_new + gap, first) if prev_old else max(o_start, first)
        start = _up(start, MiB if o_start % MiB == 0 else sector)
        if roles[n] == "extended":
            placed[n] = (start, 0)
            ext = n
            prev_old, prev_new = o_start, start
            continue
        placed[n] = (start, size[n])
        prev_old, prev_new = o_start + o_size, start + size[n]
    if ext is not None:
        _close(placed, old, ext, prev_old, prev_new)
    return placed


def _close(
    placed: dict[int, tuple[int, int]],
    old: dict[int, tuple[int, int]],
    ext: int,
    prev_old: int,
    prev_new: int,
) -> tuple[int, int]:
    o_start, o_size = old[ext]
    tail = min(max(0, o_start + o_size - prev_old), MiB)
    start = placed[ext][0]
    placed[ext] = (start, prev_new + tail - start)
    return o_start + o_size, prev_new + tail


def _share(room: int, weight: dict[int, int], mins: dict[int, int]) -> dict[int, int] | None:
    """Split room between elastic partitions by weight, none below its minimum; None if the
    minimums alone do not fit. Sizes are whole MiB."""
    if sum(mins[n] for n in weight) > room:
        return None
    alloc: dict[int, int] = {}
    free = dict(weight)
    left = room
    while True:
        total = sum(free.values())
        share = {n: _down(left * w // total, MiB) for n, w in free.items()}
        short = [n for n in free if share[n] < mins[n]]
        if not short:
            break
        for n in short:  # pinned at its minimum; the others share what is left
            alloc[n] = mins[n]
            left -= mins[n]
            del free[n]
    alloc.update(share)
    # The rounding remainder goes to the largest elastic partition.
    spare = _down(room - sum(alloc.values()), MiB)
    if spare and free:
        biggest = max(free, key=lambda n: free[n])
        alloc[biggest] += spare
    return alloc


def _too_small(
    target: int,
    need: int,
    weight: dict[int, int],
    mins: dict[int, int],
    info: dict[int, PartInfo],
    fixed: dict[int, int],
) -> str:
    data = ", ".join(
        f"partition {n} ({info[n].fstype or 'raw'}) needs {human_bytes(mins[n])}" for n in weight
    )
    return (
        f"target too small: {human_bytes(target)} ({target} bytes) is short by "
        f"{human_bytes(need)} ({need} bytes): {data}; the system partitions keep "
        f"{human_bytes(sum(fixed.values()))}"
    )
