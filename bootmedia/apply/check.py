"""Before the first write: everything the image needs is there and makes sense.

check_layout: every area's mode is known, every area lies on its own disk and on the target and
  matches its partition, every partition of the table lies on the target without overlapping
  another, with a sector size and names the target's table can hold.
check_image: every map intact (the head's too, which is written last), every extent inside its
  area, every chunk indexed, every pack long enough.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from bootmedia.disks.model import INCOMPLETE_MARKER
from bootmedia.errors import ImageError
from bootmedia.repo.manifest import MODES, SKIP, Area, Manifest, Table
from bootmedia.repo.reader import PackReader
from bootmedia.repo.store import Repository
from bootmedia.table import check_names, is_extended

if TYPE_CHECKING:
    from bootmedia.apply.plan import ApplyPlan

SECTOR_SIZES = (512, 4096)


def check_layout(
    m: Manifest,
    table: Table | None,
    target_size: int,
    whole: bool,
    areas: tuple[Area, ...],
    placed: dict[str, tuple[int, int]] | None = None,
) -> None:
    """table is the one to be written (in the target's sector size); areas are the ones to be
    written; whole is False in partition mode (areas then go to the start of the target);
    placed gives an area's (start, size) on the target when a layout moves or resizes it."""
    where = f"image {m.name}"
    for a in m.areas:
        if a.mode not in MODES:
            raise ImageError(
                f"{where}: area {a.name} has mode {a.mode!r}, which this bootmedia does not "
                f"know (it knows {', '.join(MODES)}): refusing to restore"
            )
        if a.offset + a.size > m.source.size:
            raise ImageError(
                f"{where}: area {a.name} ends at byte {a.offset + a.size}, beyond its own "
                f"disk ({m.source.size} bytes)"
            )
    for a in areas:
        start, size = (placed or {}).get(a.name, (a.offset if whole else 0, a.size))
        end = start + size
        if a.mode != SKIP and end > target_size:
            raise ImageError(
                f"{where}: area {a.name} ends at byte {end}, beyond the target "
                f"({target_size} bytes)"
            )
    if m.table is not None:
        _check_areas_match(m, m.table)
    if whole and table is not None:
        check_table(table, target_size, where)


def _check_areas_match(m: Manifest, table: Table) -> None:
    """Each partition's area is exactly that partition (the captured table's own units)."""
    parts = {p.number: p for p in table.partitions}
    ss = table.sector_size
    for a in m.areas:
        if not a.number:
            continue
        p = parts.get(a.number)
        if p is None:
            raise ImageError(f"image {m.name}: area {a.name} has no partition {a.number}")
        if (a.offset, a.size) != (p.start * ss, p.size * ss):
            raise ImageError(
                f"image {m.name}: area {a.name} (bytes {a.offset}+{a.size}) is not partition "
                f"{p.number} (sectors {p.start}+{p.size} of {ss} bytes)"
            )


def check_table(table: Table, target_size: int, where: str = "image") -> None:
    """Sector size, every partition on the target, no two overlapping, numbers and names the
    table can hold: what sfdisk would otherwise find only after all the data is written."""
    ss = table.sector_size
    if ss not in SECTOR_SIZES:
        raise ImageError(f"{where}: partition table with {ss}-byte sectors")
    if table.label not in ("gpt", "dos"):
        raise ImageError(f"{where}: unknown partition table type {table.label!r}")
    sectors = target_size // ss
    limit = 128 if table.label == "gpt" else 256
    numbers = [p.number for p in table.partitions]
    if len(set(numbers)) != len(numbers) or any(not 1 <= n <= limit for n in numbers):
        raise ImageError(f"{where}: partition numbers {sorted(numbers)} are not valid")
    first = table.first_lba if table.label == "gpt" and table.first_lba else 1
    # A GPT keeps its backup entries (128 of 128 bytes) and header in the last sectors.
    backup = -(-16384 // ss) + 1 if table.label == "gpt" else 0
    last = sectors - backup - 1
    spans = []
    for p in sorted(table.partitions, key=lambda p: p.start):
        if p.size < 1 or p.start < first or p.start + p.size - 1 > last:
            raise ImageError(
                f"{where}: partition {p.number} (sectors {p.start}+{p.size}) does not fit "
                f"the target (usable sectors {first}..{last})"
            )
        if not is_extended(p, table):
            spans.append(p)
    logical = [p for p in spans if table.label == "dos" and p.number > 4]
    for group in ([p for p in spans if p not in logical], logical):
        for a, b in itertools.pairwise(group):
            if b.start < a.start + a.size:
                raise ImageError(f"{where}: partitions {a.number} and {b.number} overlap")
    if table.label == "gpt":
        check_names(table)


def check_plan(plan: ApplyPlan) -> None:
    placed = None
    if plan.layout is not None and plan.partition is None:
        placed = {
            a.name: (plan.offset_of(a), plan.layout.change(a.number).new_size)
            for a in plan.areas
            if a.number
        }
    check_layout(
        plan.image, plan.table, plan.target_size, plan.partition is None, plan.check_areas, placed
    )


def check_image(repo: Repository, m: Manifest, areas: tuple[Area, ...]) -> None:
    """Before the first write: every map intact, every extent inside its area, every chunk
    indexed, every pack long enough."""
    ends: dict[str, int] = {}
    for a in areas:
        if not a.map:
            continue
        repo.check_map(m, a.name)
        after = 0
        for e in repo.extents(m, a.name):
            if e.length == 0 or e.offset < after or e.offset + e.length > a.size:
                raise ImageError(
                    f"image {m.name}: {a.name}: extent at {e.offset}+{e.length} lies outside "
                    f"its area ({a.size} bytes) or overlaps the one before"
                )
            after = e.offset + e.length
        # Every chunk indexed: looked up a batch at a time (ImageError names a missing one).
        for pack, end in repo.stored_ends(m, a.name).items():
            ends[pack] = max(ends.get(pack, 0), end)
    for pack, end in ends.items():
        rel = f"packs/{pack}"
        have = repo.storage.size(rel) if repo.storage.exists(rel) else -1
        if have < end:
            what = "missing" if have < 0 else f"truncated ({have} of at least {end} bytes)"
            raise ImageError(f"image {m.name}: pack {pack} is {what}")
    if m.table is not None and any(a.name == "head" for a in areas):
        _check_boot_code(repo, m)


def _check_boot_code(repo: Repository, m: Manifest) -> None:
    """The boot code a whole-disk restore writes last is not the incomplete marker: an image
    of a disk whose restore was interrupted would otherwise fail only after every other write
    (the marker still there at the end)."""
    for e, loc in repo.located(m, "head"):
        if e.offset != 0 or loc is None:
            return  # the first bytes are zeros (or not mapped): no marker
        with PackReader(repo) as packs:
            code = packs.chunk(e.hash, loc)
        if code.startswith(INCOMPLETE_MARKER):
            raise ImageError(
                f"image {m.name}: its boot code is the {INCOMPLETE_MARKER.decode()} marker: it "
                "was captured from a disk whose restore never finished, so it holds no whole "
                "disk; refusing to restore it"
            )
        return
