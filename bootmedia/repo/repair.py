"""Repair (formats 1 and 2): read every pack whole, rewrite each .idx from what is really there, and
say what is lost (format 1 rebuilds its index.sqlite the same way).

A damaged record costs only itself: the scan resynchronises on the next record magic whose
header, block table and frame check. Each damaged stretch is named, with the images whose
blocks are now missing, and the result is a failure. A pack with damage gets a
`pack-<uuid>.damaged` note (JSON: the stretches), and collection never deletes or rewrites such
a pack: a scan that failed to read a record is no proof that nothing there is needed.
"""

from __future__ import annotations

import errno
import json
import logging
from dataclasses import dataclass, field

from bootmedia.repo.idx import encode_idx, write_idx
from bootmedia.repo.packs import Damage
from bootmedia.repo.store import Repository, _pack_uuid

log = logging.getLogger("bootmedia.repo")


@dataclass
class RepairReport:
    packs: int = 0
    blocks: int = 0
    damaged: list[tuple[str, Damage]] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # packs that could not be scanned
    losses: dict[str, int] = field(default_factory=dict)  # image -> blocks it cannot restore
    lost_bytes: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.unreadable and not self.losses

    def lines(self) -> list[str]:
        out = [f"index rebuilt: {self.blocks} blocks in {self.packs} packs"]
        for pack, d in self.damaged:
            out.append(
                f"DAMAGED {pack}: bytes {d.offset}-{d.offset + d.length - 1} ({d.length} bytes): "
                f"{d.why}"
            )
        out += [f"UNREADABLE {u}" for u in self.unreadable]
        out += self.notes
        for image, n in sorted(self.losses.items()):
            out.append(
                f"image {image} loses data: {n} blocks ({self.lost_bytes[image]} bytes) are not "
                "in any readable record"
            )
        return out


def repair_v2(repo: Repository) -> RepairReport:
    assert repo.version == 2 and repo.write
    report = RepairReport()
    packs = repo.path / "packs"
    for path in sorted(packs.glob("pack-*.bmp")):
        report.packs += 1
        try:
            orphan = not path.with_suffix(".idx").exists()
            entries, damage, _ = repo.scan_pack_v2(path.name, torn_tail_ok=orphan)
        except Exception as exc:
            report.unreadable.append(f"{path.name}: {exc}")
            continue
        report.blocks += len(entries)
        note = path.with_suffix(".damaged")
        idx = path.with_suffix(".idx")
        try:
            if damage:
                report.damaged += [(path.name, d) for d in damage]
                note.write_text(
                    json.dumps(
                        [{"offset": d.offset, "length": d.length, "why": d.why} for d in damage]
                    )
                    + "\n"
                )
            else:
                note.unlink(missing_ok=True)
            pack_id = _pack_uuid(path.name)
            have = idx.read_bytes() if idx.exists() else b""
            if have != encode_idx(pack_id, entries):
                write_idx(idx, pack_id, entries)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            report.notes.append(
                f"{path.name}: no room to write its index (the disk is full); "
                "collection can still remove it"
            )
    for idx in packs.glob("pack-*.idx"):
        if not idx.with_suffix(".bmp").exists():
            idx.unlink()
    repo.cache.rebuild()  # a fresh cache from the rewritten .idx files
    _count_losses(repo, report)
    return report


def repair_v1(repo: Repository) -> RepairReport:
    """Format 1: the same promise. The index is rebuilt from a scan that resynchronises after
    damage; a pack with damage gets the same `.damaged` note, so collection keeps it whole."""
    assert repo.version == 1 and repo.write
    report = RepairReport()
    damaged, torn = repo.reindex_v1()
    report.damaged += damaged
    report.notes += [
        f"{pack}: {d.length} bytes at the end are torn (an interrupted write); ignored"
        for pack, d in torn
    ]
    by_pack: dict[str, list[Damage]] = {}
    for pack, d in damaged:
        by_pack.setdefault(pack, []).append(d)
    for path in sorted((repo.path / "packs").glob("pack-*.bmp")):
        report.packs += 1
        note = path.with_suffix(".damaged")
        if path.name in by_pack:
            note.write_text(
                json.dumps(
                    [
                        {"offset": d.offset, "length": d.length, "why": d.why}
                        for d in by_pack[path.name]
                    ]
                )
                + "\n"
            )
        else:
            note.unlink(missing_ok=True)
    report.blocks = repo.chunk_count()
    _count_losses(repo, report)
    return report


def _count_losses(repo: Repository, report: RepairReport) -> None:
    """Every image block that no readable record holds, by image."""
    images, unreadable = repo.scan_images()
    report.unreadable += unreadable
    for m in images:
        for a in m.areas:
            if not a.map:
                continue
            for e in repo.extents(m, a.name):
                if not e.is_zero and not repo.has(e.hash):
                    report.losses[m.name] = report.losses.get(m.name, 0) + 1
                    report.lost_bytes[m.name] = report.lost_bytes.get(m.name, 0) + e.length
